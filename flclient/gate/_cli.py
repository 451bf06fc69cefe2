"""``flclient check``: the participation gate's decision on this device, from its real signals."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from ._metered import ChainedMetered, InterfaceKindMetered, NetworkManagerMetered
from ._policy import EligibilityPolicy
from ._profiles import load_profile
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


def add_gate_commands(sub: Any) -> None:
    """Add ``check`` to the ``flclient`` sub-command parser ``sub``."""
    c = sub.add_parser("check", help="may this device train now? (exit 0 yes, 3 no)")
    c.add_argument("--policy", help="an eligibility policy TOML file (overlays the profile's defaults)")
    c.add_argument("--profile", help="a device profile id (e.g. rpi4b) or a profile .toml file")
    c.add_argument("--root", default="/", help="read every signal below this directory (a fake sysfs/proc tree)")
    c.add_argument("--data-dir", default="/var/lib/flclient", help="the SDK's data directory (for free disk)")
    c.add_argument("--phase", choices=("start", "continue"), default="start", help="which rule set to apply")
    c.add_argument("--no-dbus", action="store_true", help="do not ask NetworkManager whether the link is metered")
    c.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    c.set_defaults(func=_cmd_check)
