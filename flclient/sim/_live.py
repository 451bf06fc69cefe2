"""The live fleet simulator: N virtual devices against a real local SuperLink and the flclient ServerApp.

:func:`run_live_fleet` starts (or reuses) a :class:`~flclient.server.LocalSuperLink`, one thread per
:class:`~flclient.sim.VirtualDevice` (each with its own Fleet API connection; they sleep most of the time, so a
few hundred fit in one process), submits the ServerApp with over-selection, a round deadline and partial
aggregation (:mod:`flclient.server._rounds`), follows its per-round metrics and returns a
:class:`~flclient.sim.FleetReport` (the same report, summary and plots as the virtual-time simulator)
plus the wall-clock figures of the run.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import GateError
from ..gate import DeviceProfile, EligibilityPolicy
from ._device import DeviceEvent, EventLog, SimClock, VirtualDevice
from ._fleet import _FEATURES, FleetConfig, FleetReport, RoundReport, build_devices

__all__ = ["LiveFleetConfig", "LiveFleetResult", "run_live_fleet"]

_MODEL_SPEC = json.dumps({"layers": [[_FEATURES, 1, "none"]], "loss": "mse"})


@dataclass(frozen=True, kw_only=True)
class LiveFleetConfig:
    """A live simulation: the fleet (``fleet``: devices, rounds, mix, goal, over-selection, deadline and the
    modelled sizes/speeds, deadlines in virtual seconds) and how it maps onto wall time.

    ``time_scale`` virtual seconds pass per wall second (60: a virtual day in 24 minutes). Devices poll
    ``pull-messages`` every ``poll_s`` wall seconds (jittered) and heartbeat every ``heartbeat_s / 3``.
    The ServerApp waits up to ``node_wait_s`` for ``min_nodes`` (default: ``goal``) devices, and the whole run
    must end within ``timeout_s`` wall seconds.
    """

    fleet: FleetConfig
    time_scale: float = 60.0
    poll_s: float = 5.0
    heartbeat_s: float = 60.0
    min_nodes: int | None = None
    node_wait_s: float = 120.0
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        for name in ("time_scale", "poll_s", "node_wait_s", "timeout_s"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, got {v}")
        if not 10.0 <= self.heartbeat_s <= 1800.0:
            raise ValueError(f"heartbeat_s must be within SuperLink's [10, 1800] s, got {self.heartbeat_s}")
        if self.min_nodes is not None and not 1 <= self.min_nodes <= self.fleet.devices:
            raise ValueError(f"min_nodes must be within 1..devices, got {self.min_nodes}")

    def run_config(self, out_dir: Path) -> dict[str, Any]:
        """The ServerApp's run config for this simulation."""
        f = self.fleet
        deadline_wall = f.deadline_s / self.time_scale if f.deadline_s is not None else self.timeout_s
        return {
            "num-server-rounds": f.rounds,
            "min-nodes": self.min_nodes or min(f.goal, f.devices),
            "node-wait-s": self.node_wait_s,
            "round-timeout-s": deadline_wall,
            "round-deadline-s": deadline_wall,
            "target": f.goal,
            "over-selection": f.over_selection,
            "min-replies": max(1, math.ceil(f.min_fraction * f.goal - 1e-9)),
            "round-poll-s": 0.2,
            "eval-target": f.goal,
            "seed": f.seed,
            "init-seed": f.seed,
            "model-spec": _MODEL_SPEC,
            "metrics-path": str(out_dir / "metrics.jsonl"),
            "history-dir": str(out_dir / "models"),
        }


@dataclass(frozen=True)
class LiveFleetResult:
    """The report (rounds in virtual seconds) and the run's wall-clock figures."""

    report: FleetReport
    wall_s: float
    records: tuple[dict[str, Any], ...]
    events: tuple[DeviceEvent, ...] = field(repr=False)
    time_scale: float = 1.0

    def summary(self) -> dict[str, Any]:
        """The report's summary plus wall time, rounds per wall minute, late replies and straggler index."""
        s = self.report.summary()
        rounds = [r for r in self.records if r.get("event") == "round"]
        times = [e.virtual_s for e in self.events if e.outcome == "replied"]
        s.update(
            mode="superlink",
            devices=self.report.config.devices,
            wall_s=self.wall_s,
            rounds_per_min=len(rounds) / self.wall_s * 60 if self.wall_s > 0 else None,
            time_scale=self.time_scale,
            late_replies=sum(int(r.get("late", 0)) for r in rounds),
            device_time_p50_s=float(np.percentile(times, 50)) if times else None,
            device_time_p99_s=float(np.percentile(times, 99)) if times else None,
            errors=sum(e.outcome == "error" for e in self.events),
        )
        return s


def run_live_fleet(
    config: LiveFleetConfig,
    profiles: Mapping[str, DeviceProfile],
    out_dir: Path,
    *,
    superlink: Any | None = None,
    policy: EligibilityPolicy | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> LiveFleetResult:
    """Run the simulation against ``superlink`` (a started :class:`~flclient.server.LocalSuperLink`; default:
    start one under ``out_dir``); ``progress`` receives every ServerApp metrics record as it appears."""
    from ..server._local import LocalSuperLink, write_flower_app  # the [server] extra: flwr

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    states, fleet_by_class, rng = build_devices(config.fleet, profiles, policy)
    true_w = rng.normal(0.0, 1.0, _FEATURES)
    own_link = superlink is None
    link = LocalSuperLink(out_dir / "flwr") if superlink is None else superlink
    stop = threading.Event()
    threads: list[threading.Thread] = []
    events = EventLog()
    run_dir = out_dir / f"run-{time.time_ns()}"
    run_config = config.run_config(run_dir)
    metrics_path = Path(run_config["metrics-path"])
    records: list[dict[str, Any]] = []
    try:
        if own_link:
            link.start()
        clock = SimClock(config.time_scale, start_hour=config.fleet.start_hour)
        for s in states:
            dev = VirtualDevice(
                s,
                url=link.url,
                clock=clock,
                config=config.fleet,
                true_w=true_w,
                events=events,
                poll_s=config.poll_s,
                heartbeat_s=config.heartbeat_s,
                seed=config.fleet.seed * 100_003 + s.index,
            )
            t = threading.Thread(target=dev.run, args=(stop,), name=f"sim-device-{s.index}", daemon=True)
            threads.append(t)
            t.start()
        run_id = link.submit(write_flower_app(run_dir / "app", run_config))
        deadline = time.monotonic() + config.timeout_s
        started: float | None = None
        ended: float | None = None
        hours: dict[int, float] = {}
        seen = 0
        next_status = time.monotonic() + 15.0  # `flwr ls` runs a subprocess: ask rarely
        while ended is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulation did not finish in {config.timeout_s} s; see {run_dir}")
            if metrics_path.exists():
                lines = metrics_path.read_text(encoding="utf-8").splitlines()
                for line in lines[seen:]:
                    rec = json.loads(line)
                    if rec.get("event") == "start":
                        started = time.monotonic()
                    if rec.get("event") == "round" and "started_at" in rec:
                        hours[int(rec["round"])] = clock.at_wall(float(rec["started_at"])) / 3600.0
                    if rec.get("event") == "done":
                        ended = time.monotonic()
                    records.append(rec)
                    if progress is not None:
                        progress(rec)
                seen = len(lines)
            if ended is None and time.monotonic() > next_status:
                next_status = time.monotonic() + 15.0
                status = link.status(run_id)
                if status.startswith("finished"):
                    time.sleep(0.5)
                    if '"done"' not in (metrics_path.read_text() if metrics_path.exists() else ""):
                        raise GateError(f"the ServerApp ended early ({status}):\n" + link.logs(run_id)[-3000:])
            time.sleep(0.1)
        wall = ended - (started if started is not None else ended)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if own_link:
            link.stop()
    all_events = events.events()
    report = _report(config.fleet, records, all_events, fleet_by_class, hours, config.time_scale)
    return LiveFleetResult(report, wall, tuple(records), tuple(all_events), config.time_scale)


def _report(
    config: FleetConfig,
    records: list[dict[str, Any]],
    events: list[DeviceEvent],
    fleet_by_class: dict[str, int],
    hours: dict[int, float],
    time_scale: float,
) -> FleetReport:
    rounds: list[RoundReport] = []
    abandon: dict[str, int] = {}
    for e in events:
        if e.outcome == "dropped":
            for reason in e.reasons:
                abandon[reason] = abandon.get(reason, 0) + 1
    for rec in records:
        if rec.get("event") != "round":
            continue
        rnd = int(rec["round"])
        mine = [e for e in events if e.round == str(rnd)]
        dropped = sum(e.outcome == "dropped" for e in mine)
        times = sorted(e.virtual_s for e in mine if e.outcome == "replied")
        failures = sum(int(v) for v in dict(rec.get("failures", {})).values())
        reported = int(rec.get("replies", 0)) - failures
        aggregated = bool(rec.get("aggregated", reported > 0))
        by_class = {str(k): int(v.get("devices", 0)) for k, v in dict(rec.get("by_class", {})).items()}
        selected = int(rec.get("selected", rec.get("nodes", 0)))
        loss = rec.get("eval_loss")
        rounds.append(
            RoundReport(
                round=rnd,
                hour=hours.get(rnd, 0.0) % 24.0,
                eligible=int(rec.get("nodes", 0)),
                selected=selected,
                dropped=dropped,
                reported=reported,
                accepted=reported if aggregated else 0,
                aggregated=aggregated,
                drop_rate=dropped / selected if selected else 0.0,
                device_time_p50_s=float(np.percentile(times, 50)) if times else 0.0,
                device_time_p99_s=float(np.percentile(times, 99)) if times else 0.0,
                duration_s=float(rec.get("close_s", rec.get("round_s", 0.0))) * time_scale,
                loss=float(loss) if loss is not None else math.nan,
                accepted_by_class=by_class if aggregated else {},
            )
        )
    return FleetReport(config=config, rounds=tuple(rounds), fleet_by_class=fleet_by_class, abandon_reasons=abandon)
