"""``flclient check`` and ``flclient simulate``: the gate's decision on this device, and a simulated fleet."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from .._errors import GateError
from ._fleet import FleetConfig, parse_mix, simulate_fleet
from ._metered import ChainedMetered, InterfaceKindMetered, NetworkManagerMetered
from ._policy import EligibilityPolicy
from ._profiles import list_profiles, load_profile
from ._signals import DeviceSignals, MeteredSource

__all__ = ["EXIT_NOT_ELIGIBLE", "add_gate_commands"]

EXIT_NOT_ELIGIBLE = 3
"""Exit code of ``flclient check`` when the device may not train now (1 is an error, 2 a usage mistake)."""


def _metered_source(root: Path, use_dbus: bool) -> MeteredSource:
    fallback = InterfaceKindMetered()
    # NetworkManager describes this machine, not a fake tree given with --root.
    if use_dbus and root == Path("/") and importlib.util.find_spec("jeepney") is not None:
        return ChainedMetered(NetworkManagerMetered(), fallback)
    return fallback


def _cmd_check(args: argparse.Namespace) -> int:
    policy = EligibilityPolicy()
    if args.profile:
        policy = load_profile(args.profile).policy(policy)
    if args.policy:
        policy = EligibilityPolicy.from_toml(args.policy, base=policy)
    root = Path(args.root)
    metered = _metered_source(root, not args.no_dbus)
    signals = DeviceSignals(root=root, data_dir=args.data_dir, metered=metered)
    decision = policy.evaluate(signals.read(), phase="continue" if args.phase == "continue" else "start")
    close = getattr(metered, "close", None)
    if close is not None:
        close()
    if args.json:
        print(json.dumps({"policy": policy.name, **decision.to_json()}))
    else:
        verdict = "ELIGIBLE" if decision.eligible else "NOT ELIGIBLE: " + ", ".join(r.value for r in decision.reasons)
        print(f"{verdict}  (policy {policy.name}, may-{decision.phase})")
        for c in decision.checks:
            print(f"  {c.signal:<15} {c.value:<14} {c.status.value:<8} {c.reason.value if c.reason else ''}".rstrip())
    return 0 if decision.eligible else EXIT_NOT_ELIGIBLE


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
            goal=args.goal,
            over_selection=args.over_selection,
            deadline_s=None if args.no_deadline else args.deadline_s,
            min_fraction=args.min_fraction,
            round_interval_s=args.round_interval_s,
        )
    except ValueError as exc:
        raise GateError(str(exc)) from exc
    started = time.perf_counter()
    report = simulate_fleet(config, profiles)
    wall = time.perf_counter() - started
    for r in report.rounds:
        print(
            f"round {r.round:3d} h{r.hour:05.2f} eligible {r.eligible:4d} selected {r.selected:3d} "
            f"dropped {r.dropped:2d} accepted {r.accepted:3d}{'' if r.aggregated else ' (no aggregate)'} "
            f"drop {r.drop_rate:.2f} p50 {r.device_time_p50_s:7.1f}s p99 {r.device_time_p99_s:7.1f}s "
            f"loss {r.loss:.4f}",
            file=sys.stderr,
        )
    summary: dict[str, Any] = report.summary()
    summary["wall_s"] = wall
    summary["rounds_per_min"] = len(report.rounds) / wall * 60 if wall > 0 else None
    if not args.no_plots:
        summary["plots"] = [str(p) for p in _plots(report, Path(args.out))]
    print(json.dumps(summary))
    return 0


def _plots(report: Any, out: Path) -> list[Path]:
    from ._plots import write_fleet_plots  # matplotlib is optional: import only when plots are wanted

    return write_fleet_plots(report, out)


def add_gate_commands(sub: Any) -> None:
    """Add ``check`` and ``simulate`` to the ``flclient`` sub-command parser ``sub``."""
    c = sub.add_parser("check", help="may this device train now? (exit 0 yes, 3 no)")
    c.add_argument("--policy", help="an eligibility policy TOML file (overlays the profile's defaults)")
    c.add_argument("--profile", help="a device profile id (e.g. rpi4b) or a profile .toml file")
    c.add_argument("--root", default="/", help="read every signal below this directory (a fake sysfs/proc tree)")
    c.add_argument("--data-dir", default="/var/lib/flclient", help="the SDK's data directory (for free disk)")
    c.add_argument("--phase", choices=("start", "continue"), default="start", help="which rule set to apply")
    c.add_argument("--no-dbus", action="store_true", help="do not ask NetworkManager whether the link is metered")
    c.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    c.set_defaults(func=_cmd_check)

    s = sub.add_parser("simulate", help="simulate a heterogeneous fleet through rounds (virtual time)")
    s.add_argument("--devices", type=int, default=50, help="number of virtual devices")
    s.add_argument("--profiles", default="all", help="'all' or a mix such as rpi4b:3,rpi5:1,android-phone:2")
    s.add_argument("--rounds", type=int, default=10, help="number of rounds")
    s.add_argument("--seed", type=int, default=0, help="random seed (runs are reproducible)")
    s.add_argument("--goal", type=int, default=20, help="updates wanted per round")
    s.add_argument("--over-selection", type=float, default=1.3, help="devices asked per update wanted")
    s.add_argument("--deadline-s", type=float, default=900.0, help="round deadline in virtual seconds")
    s.add_argument("--no-deadline", action="store_true", help="wait for every selected device")
    s.add_argument("--min-fraction", type=float, default=0.8, help="aggregate when this share of goal reported")
    s.add_argument("--round-interval-s", type=float, default=1800.0, help="virtual seconds between round starts")
    s.add_argument("--profiles-dir", default=None, help="a device_profiles directory (default: the bundled one)")
    s.add_argument("--out", default="out/fleet", help="directory for the PNG plots")
    s.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    s.set_defaults(func=_cmd_simulate)
