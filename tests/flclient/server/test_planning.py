"""The server plans from what devices declare: a task whose model needs a backend goes only to the devices that
said they have it (asked once with a ``capabilities`` query), and the others are never sent it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")

from flclient._task import device_capabilities
from flclient.server.app import run_federation

from .test_quality_rounds import _cfg, _grid, _records


@pytest.mark.usefixtures("flower_run")
def test_a_task_needing_a_backend_goes_only_to_devices_that_declared_it(tmp_path: Path) -> None:
    grid, sha, _ = _grid(tmp_path)
    without = replace(device_capabilities(), backends=("numpy",))  # node 12 has no ONNX Runtime installed
    grid.executors[12] = replace(grid.executors[12], capabilities=without)
    cfg = _cfg(tmp_path, sha, **{"backend": "numpy,onnx", "num-server-rounds": 2, "min-nodes": 3})
    run_federation(grid, cfg)  # type: ignore[arg-type]
    sent_to_12 = [kind for kind, nid, _ in grid.sent_to if nid == 12]
    assert sent_to_12 == ["query"], sent_to_12  # asked what it has, then left out of every round
    rounds = [r for r in _records(tmp_path) if r["event"] == "round"]
    assert len(rounds) == 2 and all(r["replies"] == 2 and not r["failures"] for r in rounds), rounds
