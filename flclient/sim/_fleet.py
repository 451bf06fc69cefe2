"""A heterogeneous fleet simulator: many virtual devices, each following its profile, through many rounds.

Each virtual device runs the real :class:`ParticipationGate` (its profile's policy, a :class:`ManualClock`, signals
from a :class:`StaticSignals` that the simulator sets from the profile's availability model) and trains a tiny linear
model on its own non-IID data with numpy. The coordinator side is :class:`RoundPlanner`: over-selection, a round
deadline and partial aggregation once enough devices reported, the same rules as the ServerApp's
(:mod:`flclient.server._rounds`). ``flclient simulate`` runs this model with ``--virtual``; by default it runs
virtual devices against a real SuperLink (:mod:`flclient.sim._live`).

Time is virtual (discrete events), so a day of fleet behaviour runs in seconds and every run with the same seed is
the same. Mid-round dropouts are real gate events: the simulator unplugs a battery device or overheats a mains one,
the device's :class:`RoundMonitor` abandons the round at its next checkpoint, nothing is uploaded, and it backs off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._errors import GateError
from ..gate import (
    DeviceProfile,
    EligibilityPolicy,
    ManualClock,
    Metered,
    NetworkKind,
    ParticipationGate,
    PowerState,
    RoundOutcome,
    SignalSnapshot,
    StaticSignals,
    ThrottleState,
)

__all__ = ["FleetConfig", "FleetReport", "RoundPlanner", "RoundReport", "parse_mix", "simulate_fleet"]

_MIB = 1024 * 1024
_FEATURES = 16


def parse_mix(text: str, known: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """``"all"`` (equal shares of ``known``) or ``"rpi4b:3,rpi5:1"`` / ``"rpi4b,rpi5"`` -> normalised shares."""
    text = text.strip()
    if text == "all":
        return tuple((k, 1.0 / len(known)) for k in known)
    items: list[tuple[str, float]] = []
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in known:
            raise GateError(f"unknown profile {name!r} in --profiles; known: {', '.join(known)}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError as exc:
            raise GateError(f"weight of {name!r} must be a number, got {weight!r}") from exc
        if not (w > 0 and math.isfinite(w)):
            raise GateError(f"weight of {name!r} must be positive, got {weight!r}")
        items.append((name, w))
    if len({n for n, _ in items}) != len(items):
        raise GateError("a profile appears twice in --profiles")
    total = sum(w for _, w in items)
    return tuple((n, w / total) for n, w in items)


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """A simulation. ``goal`` updates are wanted per round; ``ceil(goal * (1 + over_selection))`` devices are
    asked; a round closes at ``deadline_s`` (None: wait for every selected device) and aggregates when at least
    ``min_fraction`` x goal reported. Rounds start every ``round_interval_s`` of virtual time."""

    devices: int
    rounds: int
    mix: tuple[tuple[str, float], ...]
    seed: int = 0
    goal: int = 20
    over_selection: float = 0.3
    deadline_s: float | None = 900.0
    min_fraction: float = 0.8
    round_interval_s: float = 1800.0
    start_hour: float = 0.0
    base_compute_s: float = 120.0  # the round's training time on the reference device (a Raspberry Pi 4B)
    model_bytes: int = 2 * _MIB
    update_bytes: int = 256 * 1024
    steps: int = 10
    examples_per_device: int = 32

    def __post_init__(self) -> None:
        if self.devices < 1 or self.rounds < 1 or self.goal < 1 or self.steps < 1 or self.examples_per_device < 1:
            raise ValueError("devices, rounds, goal, steps and examples_per_device must be positive")
        if not self.mix:
            raise ValueError("mix must name at least one profile")
        if not (self.over_selection >= 0.0 and math.isfinite(self.over_selection)):
            raise ValueError(f"over_selection must be a finite number >= 0, got {self.over_selection}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be positive or None, got {self.deadline_s}")
        if not 0.0 < self.min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in (0, 1], got {self.min_fraction}")
        if not (self.round_interval_s > 0 and self.base_compute_s > 0):
            raise ValueError("round_interval_s and base_compute_s must be positive")


@dataclass(frozen=True, kw_only=True)
class RoundPlanner:
    """The coordinator's round rules, independent of transport (the server plugin applies the same rules)."""

    goal: int
    over_selection: float = 0.3
    deadline_s: float | None = None
    min_fraction: float = 0.8

    def selection_size(self, available: int) -> int:
        """How many of ``available`` checked-in devices to ask: ``ceil(goal * (1 + over_selection))``, at most all
        of them (the same rule as the server's ``over-selection``, :mod:`flclient.server._rounds`)."""
        return min(available, math.ceil(self.goal * (1.0 + self.over_selection) - 1e-9))

    def close(self, finish_times: Mapping[int, float]) -> tuple[list[int], float, bool]:
        """Given device -> seconds after round start at which its update arrived, return the accepted devices
        (first ``goal`` within the deadline), the round's duration, and whether it aggregates."""
        ordered = sorted(finish_times.items(), key=lambda kv: (kv[1], kv[0]))
        in_time = [d for d, t in ordered if self.deadline_s is None or t <= self.deadline_s]
        accepted = in_time[: self.goal]
        if len(accepted) == self.goal:
            duration = finish_times[accepted[-1]]
        elif self.deadline_s is not None:
            duration = self.deadline_s
        else:
            duration = max(finish_times.values(), default=0.0)
        return accepted, duration, len(accepted) >= math.ceil(self.min_fraction * self.goal)


@dataclass(frozen=True, kw_only=True)
class RoundReport:
    """One round: who could, who was asked, who dropped, how long devices took, who counted, by class."""

    round: int
    hour: float
    eligible: int
    selected: int
    dropped: int
    reported: int
    accepted: int
    aggregated: bool
    drop_rate: float
    device_time_p50_s: float
    device_time_p99_s: float
    duration_s: float
    loss: float
    accepted_by_class: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class FleetReport:
    """A whole run: the per-round reports and the fleet's composition."""

    config: FleetConfig
    rounds: tuple[RoundReport, ...]
    fleet_by_class: dict[str, int]
    abandon_reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Totals: drop rate, round-time percentiles, share of accepted updates and of the fleet per class."""
        rs = self.rounds
        accepted: dict[str, int] = {k: 0 for k in self.fleet_by_class}
        for r in rs:
            for k, v in r.accepted_by_class.items():
                accepted[k] += v
        total_acc = sum(accepted.values())
        selected = sum(r.selected for r in rs)
        durations = [r.duration_s for r in rs]
        return {
            "rounds": len(rs),
            "rounds_aggregated": sum(r.aggregated for r in rs),
            "drop_rate": sum(r.dropped for r in rs) / selected if selected else 0.0,
            "p50_round_time_s": float(np.percentile(durations, 50)) if durations else 0.0,
            "p99_round_time_s": float(np.percentile(durations, 99)) if durations else 0.0,
            "final_loss": rs[-1].loss if rs else math.nan,
            "cohort_share": {k: (v / total_acc if total_acc else 0.0) for k, v in accepted.items()},
            "fleet_share": {k: v / self.config.devices for k, v in self.fleet_by_class.items()},
            "abandon_reasons": dict(self.abandon_reasons),
        }


class _VirtualDevice:
    def __init__(
        self, index: int, profile: DeviceProfile, policy: EligibilityPolicy, rng: np.random.Generator, examples: int
    ) -> None:
        self.index = index
        self.profile = profile
        self.clock = ManualClock()
        self.signals = StaticSignals()
        self.gate = ParticipationGate(policy=policy, signals=self.signals, clock=self.clock)
        a = profile.availability
        self.speed = float(a.compute_speed_median * math.exp(rng.normal(0.0, a.compute_speed_sigma)))
        self.has_battery = "battery" not in profile.gate.absent_signals
        self.mains_only = "external_power" in profile.gate.absent_signals
        nets = profile.gate.allowed_networks or policy.may_start.allowed_networks
        self.network = NetworkKind(nets[0])
        # Non-IID data: each device sees its own input shift and a slightly different target.
        self.x = rng.normal(rng.normal(0.0, 1.0, _FEATURES), 1.0, (examples, _FEATURES))
        self.shift = rng.normal(0.0, 0.1, _FEATURES)

    def snapshot(self, *, powered: bool, hot: bool = False) -> SignalSnapshot:
        p = self.profile
        return SignalSnapshot(
            power=PowerState(
                external_online=None if self.mains_only else powered,
                has_battery=self.has_battery,
                battery_percent=80.0 if self.has_battery else None,
                battery_status=("charging" if powered else "discharging") if self.has_battery else None,
            ),
            throttle=None if "throttle" in p.gate.absent_signals else ThrottleState(raw=0),
            temperature_c=p.training.thermal_ceiling_c + 5.0 if hot else p.training.thermal_resume_c - 10.0,
            network_interface="sim0",
            network_kind=self.network,
            metered=Metered.NO,
            mem_available_bytes=4 * p.training.ram_budget_mib * _MIB,
            # A mains device that is not "available" is busy with its own work rather than unplugged.
            load_per_core=0.1 if powered or not self.mains_only else 2.0,
            disk_free_bytes=10 * 1024 * _MIB,
        )


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def _device_round(
    d: _VirtualDevice,
    config: FleetConfig,
    weights: npt.NDArray[np.float64],
    true_w: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> tuple[RoundOutcome, float, npt.NDArray[np.float64] | None]:
    """One selected device's round through its real gate: download, local steps with checkpoints, upload."""
    a = d.profile.availability
    down_s = config.model_bytes * 8 / (a.downlink_mbps_median * 1e6 * math.exp(rng.normal(0, a.downlink_sigma)))
    up_s = config.update_bytes * 8 / (a.uplink_mbps_median * 1e6 * math.exp(rng.normal(0, a.uplink_sigma)))
    compute_s = config.base_compute_s / d.speed * math.exp(rng.normal(0, 0.1))
    drop_at = int(rng.integers(0, config.steps)) if rng.random() < a.dropout_probability else -1
    start_time = d.clock.monotonic()
    target = d.x @ (true_w + d.shift)
    sent: list[npt.NDArray[np.float64]] = []

    def train(checkpoint: Callable[[], None]) -> npt.NDArray[np.float64]:
        d.clock.advance(down_s)
        w: npt.NDArray[np.float64] = weights.copy()
        for step in range(config.steps):
            if step == drop_at:  # unplugged (battery devices) or overheating (mains boards)
                d.signals.snapshot = d.snapshot(powered=d.mains_only, hot=d.mains_only)
            d.clock.advance(compute_s / config.steps)
            checkpoint()
            w -= 0.05 * (d.x.T @ (d.x @ w - target)) / len(target)
        return w

    def upload(w: npt.NDArray[np.float64]) -> None:
        d.clock.advance(up_s)
        sent.append(w)

    outcome = d.gate.run_round(train=train, upload=upload)
    return outcome, d.clock.monotonic() - start_time, sent[0] if sent else None


def build_devices(
    config: FleetConfig, profiles: Mapping[str, DeviceProfile], policy: EligibilityPolicy | None
) -> tuple[list[_VirtualDevice], dict[str, int], np.random.Generator]:
    """The fleet's virtual devices (classes in the mix's shares, largest remainders rounded up), the count per
    class, and the generator the simulation goes on with (seeded by ``config.seed``)."""
    missing = [n for n, _ in config.mix if n not in profiles]
    if missing:
        raise GateError(f"no profile for {', '.join(missing)}")
    rng = np.random.default_rng(config.seed)
    names = [n for n, _ in config.mix]
    shares = np.array([s for _, s in config.mix])
    counts = np.floor(shares * config.devices).astype(int)
    for i in np.argsort(-(shares * config.devices - counts))[: config.devices - int(counts.sum())]:
        counts[i] += 1
    devices: list[_VirtualDevice] = []
    for name, count in zip(names, counts, strict=True):
        prof = profiles[name]
        pol = replace(prof.policy(policy), check_interval_s=1e-3)  # every simulated step is a check
        first = len(devices)
        devices.extend(_VirtualDevice(first + i, prof, pol, rng, config.examples_per_device) for i in range(int(count)))
    return devices, {n: int(c) for n, c in zip(names, counts, strict=True)}, rng


def simulate_fleet(
    config: FleetConfig,
    profiles: Mapping[str, DeviceProfile],
    *,
    policy: EligibilityPolicy | None = None,
) -> FleetReport:
    """Run the simulation; deterministic for a given ``config.seed``."""
    devices, fleet_by_class, rng = build_devices(config, profiles, policy)
    planner = RoundPlanner(
        goal=config.goal,
        over_selection=config.over_selection,
        deadline_s=config.deadline_s,
        min_fraction=config.min_fraction,
    )
    true_w = rng.normal(0.0, 1.0, _FEATURES)
    weights = np.zeros(_FEATURES)
    abandon_reasons: dict[str, int] = {}
    reports: list[RoundReport] = []
    for r in range(config.rounds):
        t0 = config.start_hour * 3600.0 + r * config.round_interval_s
        hour = (t0 / 3600.0) % 24.0
        eligible: list[_VirtualDevice] = []
        for d in devices:
            d.clock.advance(max(0.0, t0 - d.clock.monotonic()))
            powered = bool(rng.random() < d.profile.availability.on_power_by_hour[int(hour)])
            d.signals.snapshot = d.snapshot(powered=powered)
            if d.gate.may_start().eligible:
                eligible.append(d)
        n_sel = planner.selection_size(len(eligible))
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=n_sel, replace=False))] if n_sel else []
        finish: dict[int, float] = {}
        updates: dict[int, npt.NDArray[np.float64]] = {}
        dropped = 0
        for d in chosen:
            outcome, elapsed, update = _device_round(d, config, weights, true_w, rng)
            if update is not None:
                finish[d.index] = elapsed
                updates[d.index] = update
            else:
                dropped += 1
                for reason in outcome.reasons:
                    abandon_reasons[reason] = abandon_reasons.get(reason, 0) + 1
        accepted, duration, aggregate = planner.close(finish)
        if aggregate:
            weights = np.mean([updates[i] for i in accepted], axis=0)
        by_class: dict[str, int] = {}
        for i in accepted:
            by_class[devices[i].profile.id] = by_class.get(devices[i].profile.id, 0) + 1
        xs = np.concatenate([d.x for d in devices[:: max(1, len(devices) // 20)]])
        loss = float(np.mean((xs @ weights - xs @ true_w) ** 2))
        times = list(finish.values())
        reports.append(
            RoundReport(
                round=r,
                hour=hour,
                eligible=len(eligible),
                selected=len(chosen),
                dropped=dropped,
                reported=len(finish),
                accepted=len(accepted),
                aggregated=aggregate,
                drop_rate=dropped / len(chosen) if chosen else 0.0,
                device_time_p50_s=_percentile(times, 50),
                device_time_p99_s=_percentile(times, 99),
                duration_s=duration,
                loss=loss,
                accepted_by_class=by_class,
            )
        )
    return FleetReport(
        config=config, rounds=tuple(reports), fleet_by_class=fleet_by_class, abandon_reasons=abandon_reasons
    )
