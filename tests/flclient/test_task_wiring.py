"""The participation gate in the train path, and the [gate] table of device.toml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flclient import DeviceConfig, TaskDeclined
from flclient._task import LocalData, TaskExecutor
from flclient.fleet._objects import ArrayRecord, ConfigRecord
from flclient.gate import EligibilityPolicy, ManualClock, ParticipationGate, PowerState, SignalSnapshot, StaticSignals


class _NoData:
    def load(self) -> LocalData:  # pragma: no cover - a declined task never reads the data
        raise AssertionError("a declined task must not touch local data")


def test_on_battery_the_train_task_is_declined_not_eligible_with_reasons() -> None:
    on_battery = SignalSnapshot(
        power=PowerState(external_online=False, has_battery=True, battery_percent=80.0, battery_status="discharging")
    )
    gate = ParticipationGate(policy=EligibilityPolicy(), signals=StaticSignals(on_battery), clock=ManualClock())
    executor = TaskExecutor(data=_NoData(), gate=gate)
    content = {"arrays": ArrayRecord({"w": np.zeros(3, np.float32)}), "config": ConfigRecord({})}
    with pytest.raises(TaskDeclined) as info:
        executor.run("train", content)
    assert info.value.reason == "not-eligible"
    reply = json.loads(info.value.detail)
    assert reply["status"] == "not_eligible" and "power" in reply["reasons"] and not reply["abandoned"]


def test_gate_table_builds_a_policy_and_its_absence_means_no_gate(tmp_path: Path) -> None:
    base = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "s", "data": "d.npz"}}
    assert DeviceConfig.from_mapping(base, base_dir=tmp_path).gate_policy is None
    (tmp_path / "gate.toml").write_text("[may_start]\nrequire_external_power = false\n")
    cfg = DeviceConfig.from_mapping({**base, "gate": {"policy": "gate.toml"}}, base_dir=tmp_path)
    assert cfg.gate_policy is not None and not cfg.gate_policy.may_start.require_external_power
    from flclient import DeviceConfigError

    with pytest.raises(DeviceConfigError, match="gate"):
        DeviceConfig.from_mapping({**base, "gate": {"policy": "missing.toml"}}, base_dir=tmp_path)
