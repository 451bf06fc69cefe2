from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flclient import RoundAbandoned
from flclient.gate import (
    DeviceCapabilities,
    DeviceSignals,
    EligibilityPolicy,
    FeaturePin,
    InterfaceKindMetered,
    ManualClock,
    ParticipationGate,
    Reason,
    RoundMonitor,
    TaskRequirements,
)

from .fakefs import healthy_laptop_like

ONLINE = "/sys/class/power_supply/AC/online"


def make_gate(tmp_path: Path, clock: ManualClock, **caps: object) -> ParticipationGate:
    healthy_laptop_like(tmp_path)
    signals = DeviceSignals(root=tmp_path, metered=InterfaceKindMetered())
    # Wi-Fi without NetworkManager is "unknown" metered: this device's policy trusts its Wi-Fi.
    policy = EligibilityPolicy.from_mapping(
        {
            "absent_signals": ["throttle"],
            "may_start": {"require_unmetered": False},
            "may_continue": {"require_unmetered": False},
        }
    )
    capabilities = DeviceCapabilities(app_version="2.1.0", runtime_version="0.1.0", **caps) if caps else None  # type: ignore[arg-type]
    return ParticipationGate(policy=policy, signals=signals, clock=clock, capabilities=capabilities)


def test_mid_round_unplug_abandons_without_upload(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    uploads: list[list[float]] = []
    steps_done: list[int] = []
    state = {"weights": [0.0]}

    def train(checkpoint):  # type: ignore[no-untyped-def]
        w = list(state["weights"])
        for step in range(10):
            if step == 4:
                (tmp_path / ONLINE.lstrip("/")).write_text("0\n")  # the charger is pulled
            clock.advance(40.0)  # > check_interval_s (30 s)
            checkpoint()
            w[0] += 1.0
            steps_done.append(step)
        return w

    outcome = gate.run_round(train=train, upload=uploads.append)
    assert outcome.status == "abandoned" and outcome.reasons == ("power",)
    assert not outcome.uploaded and uploads == []
    assert steps_done == [0, 1, 2, 3]
    assert state["weights"] == [0.0]  # the global state was never touched by the partial round
    assert outcome.to_reply() == {"status": "not_eligible", "reasons": ["power"], "abandoned": True}
    # it backs off: even plugged in again, it declines until the backoff has passed
    (tmp_path / ONLINE.lstrip("/")).write_text("1\n")
    assert gate.may_start().reasons == (Reason.BACKOFF,)
    clock.advance(gate.policy.backoff_initial_s)
    assert gate.may_start().eligible
    outcome = gate.run_round(train=lambda checkpoint: [1.0], upload=uploads.append)
    assert outcome.status == "completed" and uploads == [[1.0]]


def test_backoff_grows_and_resets(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    p = gate.policy
    delays = [gate.record_abandoned() for _ in range(12)]
    assert delays[0] == p.backoff_initial_s and delays[1] == p.backoff_initial_s * p.backoff_multiplier
    assert max(delays) == p.backoff_max_s
    gate.record_completed()
    assert gate.backoff_until == float("-inf") and gate.may_start().eligible


def test_unplug_after_training_blocks_upload(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    uploads: list[str] = []

    def train(checkpoint):  # type: ignore[no-untyped-def]
        (tmp_path / ONLINE.lstrip("/")).write_text("0\n")
        return "update"

    assert gate.run_round(train=train, upload=uploads.append).status == "abandoned"
    assert uploads == []


def test_checkpoint_respects_interval_and_keeps_raising(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    monitor = RoundMonitor(gate)
    monitor.checkpoint()
    assert monitor.checks == 0  # not due yet
    clock.advance(30.0)
    monitor.checkpoint()
    assert monitor.checks == 1
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("90000\n")
    with pytest.raises(RoundAbandoned) as info:
        monitor.check_now()
    assert info.value.reasons == ("thermal",)
    with pytest.raises(RoundAbandoned):
        monitor.checkpoint()  # a loop that swallowed it once sees it again
    assert gate.backoff_until > clock.monotonic()


def test_not_eligible_at_start_does_not_train(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    (tmp_path / "proc/loadavg").write_text("7.9 1 1 1/1 1\n")

    def train(checkpoint):  # type: ignore[no-untyped-def]
        raise AssertionError("must not train")

    outcome = gate.run_round(train=train, upload=lambda u: None)
    assert outcome.status == "not_eligible" and outcome.reasons == ("load",)
    assert gate.backoff_until == float("-inf")  # declining is not a failure: no backoff


def test_async_watch_flags_the_next_checkpoint(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = make_gate(tmp_path, clock)
    monitor = gate.monitor()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sleeps) == 3:
            (tmp_path / ONLINE.lstrip("/")).write_text("0\n")

    decision = asyncio.run(monitor.watch(sleep))
    assert decision.reasons == (Reason.POWER,) and sleeps == [30.0, 30.0, 30.0]
    with pytest.raises(RoundAbandoned):
        monitor.checkpoint()


def test_compatibility_refusals_are_not_eligible(tmp_path: Path) -> None:
    sha = "ab" * 32

    class Ledger:
        def remaining_epsilon(self) -> float | None:
            return 0.5

    clock = ManualClock()
    gate = make_gate(
        tmp_path,
        clock,
        model_formats=("dense-v1",),
        feature_abis=(1,),
        feature_modules={"device_context": {"1.0.0": sha}},
        backends=("numpy",),
        privacy_budget=Ledger(),
    )
    ok = TaskRequirements(
        min_app_version="2.0",
        min_runtime_version="0.1.0",
        max_runtime_major=0,
        model_format="dense-v1",
        feature_abi=1,
        feature_pins=(FeaturePin(name="device_context", version="1.0.0", sha256=sha),),
        required_backends=("numpy",),
        privacy_epsilon_cost=0.5,
    )
    assert gate.may_start(ok).eligible
    bad = TaskRequirements(
        min_app_version="2.2",
        min_runtime_version="0.2",
        model_format="onnx-ir9",
        feature_abi=2,
        feature_pins=(FeaturePin(name="device_context", version="1.0.1", sha256=sha),),
        required_backends=("onnx",),
        privacy_epsilon_cost=1.0,
    )
    d = gate.may_start(bad)
    assert not d.eligible
    assert d.reasons == (
        Reason.APP_VERSION,
        Reason.RUNTIME_VERSION,
        Reason.MODEL_FORMAT,
        Reason.FEATURE_ABI,
        Reason.FEATURE_MODULE,
        Reason.BACKEND,
        Reason.PRIVACY_BUDGET,
    )
    assert d.to_reply()["status"] == "not_eligible"
    outcome = gate.run_round(train=lambda c: None, upload=lambda u: None, task=bad)
    assert outcome.to_reply()["status"] == "not_eligible" and outcome.reasons[0] == "app_version"
    other_bytes = TaskRequirements(feature_pins=(FeaturePin(name="device_context", version="1.0.0", sha256="cd" * 32),))
    assert gate.may_start(other_bytes).reasons == (Reason.FEATURE_MODULE,)


def test_task_without_capabilities_is_misuse(tmp_path: Path) -> None:
    gate = make_gate(tmp_path, ManualClock())
    with pytest.raises(ValueError, match="capabilities"):
        gate.may_start(TaskRequirements())


def test_manual_clock_cannot_go_back() -> None:
    with pytest.raises(ValueError):
        ManualClock().advance(-1)
