"""``flclient simulate``: a heterogeneous fleet through rounds, live against a local SuperLink or in virtual time."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from .._errors import GateError
from ..gate import list_profiles, load_profile
from ._fleet import FleetConfig, parse_mix, simulate_fleet
from ._live import LiveFleetConfig, run_live_fleet
from ._plots import write_fleet_plots

__all__ = ["add_sim_commands"]


def _cmd_simulate(args: argparse.Namespace) -> int:
    known = list_profiles(args.profiles_dir)
    mix = parse_mix(args.profiles, list(known))
    profiles = {name: load_profile(name, directory=args.profiles_dir) for name, _ in mix}
    try:
        config = FleetConfig(
            devices=args.devices,
            rounds=args.rounds,
            mix=mix,
            seed=args.seed,
            goal=args.goal if args.goal is not None else min(20, args.devices),
            over_selection=args.over_selection,
            deadline_s=None if args.no_deadline else args.deadline_s,
            min_fraction=args.min_fraction,
            round_interval_s=args.round_interval_s,
            start_hour=args.start_hour,
        )
    except ValueError as exc:
        raise GateError(str(exc)) from exc
    needed = math.ceil(config.min_fraction * config.goal - 1e-9)
    if needed > config.devices:
        raise GateError(
            f"no round could aggregate: {needed} updates needed (--goal {config.goal} x --min-fraction "
            f"{config.min_fraction}) but only {config.devices} devices; lower --goal or raise --devices"
        )
    started = time.perf_counter()
    summary: dict[str, Any]
    if args.virtual:
        report = simulate_fleet(config, profiles)
        summary = {"mode": "virtual", **report.summary()}
        summary["wall_s"] = time.perf_counter() - started
        summary["rounds_per_min"] = len(report.rounds) / summary["wall_s"] * 60 if summary["wall_s"] > 0 else None
    else:
        report, summary = _live(args, config, profiles)
    for r in report.rounds:
        print(
            f"round {r.round:3d} h{r.hour:05.2f} eligible {r.eligible:4d} selected {r.selected:3d} "
            f"dropped {r.dropped:2d} accepted {r.accepted:3d}{'' if r.aggregated else ' (no aggregate)'} "
            f"drop {r.drop_rate:.2f} p50 {r.device_time_p50_s:7.1f}s p99 {r.device_time_p99_s:7.1f}s "
            f"loss {r.loss:.4f}",
            file=sys.stderr,
        )
    if not args.no_plots:  # matplotlib (optional) is imported only here
        summary["plots"] = [str(p) for p in write_fleet_plots(report, Path(args.out))]
    print(json.dumps(summary))
    return 0


def _live(args: argparse.Namespace, config: FleetConfig, profiles: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The default mode: virtual devices against a real local SuperLink and the flclient ServerApp."""
    if importlib.util.find_spec("flwr") is None:
        raise GateError("the live simulator runs a Flower SuperLink: pip install 'flclient[server]' (or --virtual)")
    try:
        live = LiveFleetConfig(fleet=config, time_scale=args.time_scale, poll_s=args.poll_s, timeout_s=args.timeout_s)
    except ValueError as exc:
        raise GateError(str(exc)) from exc

    def progress(rec: dict[str, Any]) -> None:
        if rec.get("event") in ("round", "evaluate"):
            print(
                f"server {rec['event']} {rec['round']}: {rec.get('replies')} replies of {rec.get('selected')} asked "
                f"({rec.get('nodes')} available), closed by {rec.get('closed')}, late {rec.get('late')}, "
                f"{rec.get('round_s', 0.0):.1f} s wall",
                file=sys.stderr,
                flush=True,
            )

    result = run_live_fleet(live, profiles, Path(args.out), progress=progress)
    return result.report, result.summary()


def add_sim_commands(sub: Any) -> None:
    """Add ``simulate`` to the ``flclient`` sub-command parser ``sub``."""
    s = sub.add_parser(
        "simulate", help="simulate a heterogeneous fleet through rounds against a local SuperLink (or --virtual)"
    )
    s.add_argument("--devices", type=int, default=50, help="number of virtual devices")
    s.add_argument("--profiles", default="all", help="'all' or a mix such as rpi4b:3,rpi5:1,android-phone:2")
    s.add_argument("--rounds", type=int, default=10, help="number of rounds")
    s.add_argument("--seed", type=int, default=0, help="random seed (--virtual runs are reproducible)")
    s.add_argument("--goal", type=int, default=None, help="updates wanted per round (default: min(20, devices))")
    s.add_argument(
        "--over-selection", type=float, default=0.3, help="extra share of devices asked: ceil(goal * (1 + this))"
    )
    s.add_argument("--deadline-s", type=float, default=900.0, help="round deadline in virtual seconds")
    s.add_argument("--virtual", action="store_true", help="discrete-event virtual time, no SuperLink (seconds)")
    s.add_argument("--time-scale", type=float, default=60.0, help="virtual seconds per wall second (live mode)")
    s.add_argument("--poll-s", type=float, default=5.0, help="devices' pull-messages interval, wall s (live mode)")
    s.add_argument("--timeout-s", type=float, default=1800.0, help="wall-clock limit of a live run")
    s.add_argument("--start-hour", type=float, default=0.0, help="virtual local hour at which the run starts")
    s.add_argument("--no-deadline", action="store_true", help="wait for every selected device")
    s.add_argument("--min-fraction", type=float, default=0.8, help="aggregate when this share of goal reported")
    s.add_argument(
        "--round-interval-s", type=float, default=1800.0, help="virtual seconds between round starts (--virtual)"
    )
    s.add_argument("--profiles-dir", default=None, help="a device_profiles directory (default: the bundled one)")
    s.add_argument("--out", default="out/fleet", help="directory for the PNG plots")
    s.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    s.set_defaults(func=_cmd_simulate)
