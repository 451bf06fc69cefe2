"""A run that rides out kills: a device killed with SIGKILL and restarted, SuperLink killed with SIGKILL and
restarted on its database mid-run; the run is resumed without an operator and finishes, nothing duplicated."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from flclient.server import LocalSuperLink, write_flower_app

from .conftest import Devices, run_config

pytestmark = pytest.mark.e2e


def _rounds_done(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(json.loads(line)["event"] == "round" for line in path.read_text().splitlines() if line.strip())


def test_a_run_survives_a_device_kill_and_a_superlink_kill(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(3, superlink.url)
    for i in range(3):
        devices.start(i)
    cfg = run_config(feature_module, tmp_path, **{"num-server-rounds": 5, "min-nodes": 3, "round-timeout-s": 20})
    metrics = Path(cfg["metrics-path"])
    faults: list[str] = []

    def chaos() -> None:
        deadline = time.monotonic() + 120
        while _rounds_done(metrics) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        devices.kill9(0)  # mid-run, wherever it is in its round
        devices.start(0)
        faults.append("device")
        while _rounds_done(metrics) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        superlink.kill()
        time.sleep(1.0)
        superlink.start()
        faults.append("superlink")

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    run_ids, status = superlink.run_to_completion(write_flower_app(tmp_path / "app", cfg), timeout_s=240)
    thread.join(timeout=30)
    assert faults == ["device", "superlink"]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert status == "finished:completed" and len(run_ids) == 2, (run_ids, status)
    rounds = [r for r in records if r["event"] == "round"]
    numbers = [r["round"] for r in rounds]
    assert sorted(set(numbers)) == [1, 2, 3, 4, 5] and records[-1]["event"] == "done"
    assert all(r["duplicates"] == 0 for r in records if r["event"] in ("round", "evaluate"))
    final = next(r for r in reversed(records) if r["event"] == "evaluate")
    assert final["eval_acc"] > rounds[0]["eval_acc"]
