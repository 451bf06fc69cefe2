"""The update pipeline and SecAgg in the real round path: SuperLink, ServerApp and device processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flclient.server import LocalSuperLink, ModelHistory

from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e

N_PARAMS = 67 * 10 + 10  # the demo model


def test_rotated2_updates_are_small_and_the_federation_learns(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(2, superlink.url)
    devices.start(0)
    devices.start(1)
    cfg = run_config(feature_module, tmp_path, **{"update-codec": "rotated2", "clip-norm": 50.0})
    records = submit_and_wait(superlink, tmp_path, cfg)
    rounds = [r for r in records if r["event"] == "round"]
    assert len(rounds) == 2 and all(r["replies"] == 2 and not r["failures"] and not r["rejected"] for r in rounds)
    fp32_bytes = 2 * 4 * N_PARAMS
    assert all(0 < r["update_bytes"] < fp32_bytes / 4 for r in rounds), [r["update_bytes"] for r in rounds]
    assert rounds[-1]["new_version"] == rounds[0]["version"] + 2  # each round's decoded deltas were committed
    final = next(r for r in records if r["event"] == "evaluate")
    assert final["eval_acc"] > rounds[0]["eval_acc"], records


def test_secagg_federation_changes_the_model(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(3, superlink.url)
    for i in range(3):
        devices.start(i)
    cfg = run_config(
        feature_module, tmp_path, **{"num-server-rounds": 1, "min-nodes": 3, "secagg": "true", "secagg-clip": 4.0}
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    (rnd,) = [r for r in records if r["event"] == "round"]
    assert rnd["secagg"]["survivors"] == 3 and rnd["secagg"]["dropped"] == 0, json.dumps(records)
    history = ModelHistory(Path(cfg["history-dir"]))
    before, after = history.load(rnd["version"]), history.load(rnd["new_version"])
    assert rnd["new_version"] != rnd["version"]
    assert any(not np.allclose(before[k], after[k]) for k in before)
    final = next(r for r in records if r["event"] == "evaluate")
    assert final["replies"] == 3 and not final["failures"]
