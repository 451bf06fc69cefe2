"""The typed task contract in a real federation (SuperLink, ServerApp, devices speaking the Fleet API over HTTP):
the gate abandons a round when the device is unplugged mid-training, and a device whose runtime is outside the
task's range declines while the others train. Devices run in this process (threads) so that a test can flip a
device's fake sysfs tree at the moment it trains, and declare another runtime version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flclient import Client, DeviceConfig
from flclient._task import LocalData, NpzDataSource, device_capabilities
from flclient.gate import DeviceSignals
from flclient.server import LocalSuperLink

from ..gate.fakefs import FakeDevice
from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e

# Only the power signals exist on this fake board; the round is re-checked at every training step.
GATE_POLICY = """\
absent_signals = ["network", "metered", "temperature", "throttle", "power_mode", "memory", "load", "disk"]
check_interval_s = 0.001
backoff_initial_s = 0.01
backoff_max_s = 0.01
[may_start]
require_external_power = true
[may_continue]
require_external_power = true
"""


def _plugged(board: FakeDevice, online: bool) -> None:
    board.supply("AC", "Mains", online=1 if online else 0)
    board.supply("BAT0", "Battery", capacity=80, status="Charging" if online else "Discharging")


@dataclass
class _Unplugging:
    """The device's data, read once per task: the first train task's read unplugs the board mid-round."""

    source: NpzDataSource
    board: FakeDevice
    reads: int = 0

    def load(self) -> LocalData:
        self.reads += 1
        if self.reads == 1:
            _plugged(self.board, False)  # unplugged after may-start passed, before the first training step
        return self.source.load()


@pytest.fixture
def clients() -> Iterator[Callable[[Client], None]]:
    running: list[tuple[Client, threading.Event, threading.Thread]] = []

    def start(client: Client) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=client.run, args=(stop,), daemon=True)
        thread.start()
        running.append((client, stop, thread))

    yield start
    for client, stop, thread in running:
        stop.set()
        thread.join(30)
        client.close()


def _train_outcomes(client: Client) -> list[dict[str, Any]]:
    return [r for r in client.node._telemetry.read() if r.get("event") == "task" and r["message_type"] == "train"]  # type: ignore[union-attr]


def test_unplugged_while_training_uploads_nothing_and_trains_again_once_plugged(
    superlink: LocalSuperLink,
    devices: Devices,
    feature_module: tuple[Path, str, str],
    tmp_path: Path,
    clients: Callable[[Client], None],
) -> None:
    devices.configure(2, superlink.url)
    (devices.configs[0].parent / "gate.toml").write_text(GATE_POLICY)
    devices.add_tables(0, '[gate]\npolicy = "gate.toml"\n')
    board = FakeDevice(tmp_path / "board")
    _plugged(board, True)
    config = DeviceConfig.from_toml(devices.configs[0])
    unplugging = _Unplugging(NpzDataSource(config.data), board)
    gated = Client(config, data=unplugging, signals=DeviceSignals(root=board.root, data_dir=tmp_path / "board"))
    clients(gated)
    devices.start(1)

    def replug() -> None:  # plugged in again once the abandoned round was answered
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _train_outcomes(gated):
            time.sleep(0.01)
        _plugged(board, True)

    threading.Thread(target=replug, daemon=True).start()
    records = submit_and_wait(superlink, tmp_path, run_config(feature_module, tmp_path, **{"num-server-rounds": 3}))
    rounds = [r for r in records if r["event"] == "round"]
    outcomes = _train_outcomes(gated)
    assert outcomes[0]["outcome"] == "declined" and outcomes[0]["reason"] == "not-eligible", outcomes
    assert rounds[0]["failures"] == {"not-eligible": 1} and rounds[0]["aggregated"], rounds[0]  # the other one
    assert any(o["outcome"] == "replied" for o in outcomes[1:]), outcomes  # trains again once plugged in
    assert any(r["replies"] == 2 and not r["failures"] for r in rounds[1:]), rounds


def test_a_device_outside_the_runtime_range_declines_and_the_others_train(
    superlink: LocalSuperLink,
    devices: Devices,
    feature_module: tuple[Path, str, str],
    tmp_path: Path,
    clients: Callable[[Client], None],
) -> None:
    devices.configure(3, superlink.url)
    devices.start(0)
    devices.start(1)
    newer = device_capabilities(runtime_version="1.0.0")  # a device of a later release than the task allows
    clients(Client(DeviceConfig.from_toml(devices.configs[2]), capabilities=newer))
    cfg = run_config(
        feature_module,
        tmp_path,
        **{"num-server-rounds": 1, "min-nodes": 3, "min-runtime-version": "0.1.0", "max-runtime-major": 0},
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    (rnd,) = [r for r in records if r["event"] == "round"]
    assert rnd["failures"] == {"runtime-version": 1}, rnd
    assert rnd["replies"] == 3 and rnd["aggregated"] and rnd["new_version"] != rnd["version"], rnd
