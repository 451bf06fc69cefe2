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

SPEC = json.dumps({"layers": [[3, 2, "none"]]})  # a valid task: the refusals below come before any work


class _NoData:
    def load(self) -> LocalData:  # pragma: no cover - a declined task never reads the data
        raise AssertionError("a declined task must not touch local data")


def test_on_battery_the_train_task_is_declined_not_eligible_with_reasons() -> None:
    on_battery = SignalSnapshot(
        power=PowerState(external_online=False, has_battery=True, battery_percent=80.0, battery_status="discharging")
    )
    gate = ParticipationGate(policy=EligibilityPolicy(), signals=StaticSignals(on_battery), clock=ManualClock())
    executor = TaskExecutor(data=_NoData(), gate=gate)
    content = {"arrays": ArrayRecord({"w": np.zeros(3, np.float32)}), "config": ConfigRecord({"model-spec": SPEC})}
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


def test_privacy_table_sets_the_budget_and_rejects_bad_values(tmp_path: Path) -> None:
    from flclient import DeviceConfigError

    base = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "s", "data": "d.npz"}}
    assert DeviceConfig.from_mapping(base, base_dir=tmp_path).privacy_budget is None
    cfg = DeviceConfig.from_mapping({**base, "privacy": {"epsilon": 8, "delta": 1e-5}}, base_dir=tmp_path)
    assert cfg.privacy_budget is not None and (cfg.privacy_budget.epsilon, cfg.privacy_budget.delta) == (8.0, 1e-5)
    assert cfg.privacy_ledger_path == tmp_path / "s" / "privacy.sqlite"
    for bad, match in (
        ({"epsilon": 8}, "privacy.delta is required"),
        ({"epsilon": "8", "delta": 1e-5}, "privacy.epsilon"),
        ({"epsilon": -1, "delta": 1e-5}, "epsilon must be a positive"),
        ({"epsilon": 8, "delta": 1.5}, "delta must be in"),
        ({"epsilon": 8, "delta": 1e-5, "sigma": 1}, "unknown key"),
    ):
        with pytest.raises(DeviceConfigError, match=match):
            DeviceConfig.from_mapping({**base, "privacy": bad}, base_dir=tmp_path)


def test_a_dp_round_past_the_budget_is_declined_before_any_work(tmp_path: Path) -> None:
    from flclient.update import PrivacyBudget, PrivacyLedger

    with PrivacyLedger(tmp_path / "p.sqlite", budget=PrivacyBudget(epsilon=1.0, delta=1e-5)) as ledger:
        executor = TaskExecutor(data=_NoData(), ledger=ledger)
        config = {"model-spec": SPEC, "update-codec": "fp16", "clip-norm": 1.0, "dp-noise-multiplier": 1.0}
        content = {"arrays": ArrayRecord({"w": np.zeros(3, np.float32)}), "config": ConfigRecord(config)}
        with pytest.raises(TaskDeclined) as info:
            executor.run("train", content, message_id="m1")
        assert info.value.reason == "not-eligible"
        assert json.loads(info.value.detail)["reasons"] == ["privacy_budget"]
        assert ledger.entries() == []  # nothing charged for a refused round


def test_mark_uploaded_round_marks_only_that_rounds_unmarked_entries(tmp_path: Path) -> None:
    from flclient.update import PrivacyBudget, PrivacyLedger

    with PrivacyLedger(tmp_path / "p.sqlite", budget=PrivacyBudget(epsilon=50.0, delta=1e-5)) as ledger:
        for rid in ("a", "b", "a"):
            ledger.charge(round_id=rid, mechanism="gaussian-local", noise_multiplier=2.0, clip_norm=1.0)
        assert ledger.mark_uploaded_round("a") == 2
        assert ledger.mark_uploaded_round("a") == 0  # already marked: idempotent
        assert [(e.round_id, e.uploaded_at is not None) for e in ledger.entries()] == [
            ("a", True),
            ("b", False),
            ("a", True),
        ]
