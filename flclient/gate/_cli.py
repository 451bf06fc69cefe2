"""``flclient check``: the participation gate's decision on this device, from its real signals."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from ._metered import ChainedMetered, InterfaceKindMetered, NetworkManagerMetered
from ._policy import CheckStatus, Decision, EligibilityPolicy
from ._profiles import ProfileMatch, load_profile, match_profiles
from ._signals import Board, DeviceSignals, MeteredSource, SignalSnapshot

__all__ = ["EXIT_NOT_ELIGIBLE", "add_gate_commands"]

EXIT_NOT_ELIGIBLE = 3
"""Exit code of ``flclient check`` when the device may not train now (1 is an error, 2 a usage mistake)."""


def _metered_source(root: Path, use_dbus: bool) -> MeteredSource:
    fallback = InterfaceKindMetered()
    # NetworkManager describes this machine, not a fake tree given with --root.
    if use_dbus and root == Path("/") and importlib.util.find_spec("jeepney") is not None:
        return ChainedMetered(NetworkManagerMetered(), fallback)
    return fallback


# What to do about a signal that exists but could not be read (it fails closed).
_HINTS = {
    "external_power": "no power supply says whether it is online; a board without power-supply nodes (a Pi) should "
    "use its profile (--profile), or list external_power in a policy's absent_signals",
    "battery": "a battery is listed but its level cannot be read (its capacity file)",
    "network": "the default-route interface could not be classified (/proc/net/route, /sys/class/net)",
    "metered": "nothing says whether the link is metered: install 'flclient[dbus]' so NetworkManager is asked, or "
    "set require_unmetered = false in a policy file when this link is known to be unmetered",
    "temperature": "thermal zones exist but none reads a valid temperature (/sys/class/thermal/thermal_zone*/temp)",
    "throttle": "this Raspberry Pi exposes no firmware throttle node; load its firmware driver (raspberrypi-hwmon) "
    "or list throttle in a policy's absent_signals",
    "power_mode": "this Jetson has no /var/lib/nvpmodel/status; run nvpmodel -q, or clear allowed_power_modes",
    "memory": "/proc/meminfo has no MemAvailable line",
    "load": "/proc/loadavg or /sys/devices/system/cpu/online cannot be read",
    "disk": "the data directory's filesystem cannot be measured; check --data-dir",
}


def _advice(board: Board, matches: tuple[ProfileMatch, ...], chosen: str | None) -> list[str]:
    """Which profile fits, and how to use it, in sentences."""
    recognised = [m.profile.id for m in matches if m.by == "recognised"]
    if chosen is not None:
        if recognised and chosen not in recognised:
            return [f"note: this device looks like profile {recognised[0]}, not {chosen} ({board.describe()})"]
        return []
    if not matches:
        return [
            f"profile: no bundled profile fits this device ({board.describe()}); copy the closest one from "
            "'flclient check --profile ID' and pass your file with --profile FILE.toml"
        ]
    best = matches[0].profile
    how = "matches" if matches[0].by == "recognised" else f"is the generic {best.hardware.arch} class for"
    lines = [
        f"profile: {best.id} ({best.name}) {how} this device ({board.describe()}); try "
        f"'flclient check --profile {best.id}' and set profile = \"{best.id}\" under [gate] in device.toml"
    ]
    if len(matches) > 1:
        lines.append("         also possible: " + ", ".join(m.profile.id for m in matches[1:]))
    return lines


_NO_SUPPLY_BATTERY = (
    "no battery is listed, but no external supply reports online either, so a battery cannot be ruled out; a board "
    "without power-supply nodes (a Pi) should use its profile (--profile), or list battery in a policy's absent_signals"
)


def _hints(decision: Decision, snapshot: SignalSnapshot) -> dict[str, str]:
    hints = {c.signal: _HINTS[c.signal] for c in decision.checks if c.status is CheckStatus.UNKNOWN}
    if "battery" in hints and not snapshot.power.has_battery:
        hints["battery"] = _NO_SUPPLY_BATTERY
    return hints


def _cmd_check(args: argparse.Namespace) -> int:
    policy = EligibilityPolicy()
    if args.profile:
        policy = load_profile(args.profile).policy(policy)
    if args.policy:
        policy = EligibilityPolicy.from_toml(args.policy, base=policy)
    root = Path(args.root)
    metered = _metered_source(root, not args.no_dbus)
    signals = DeviceSignals(root=root, data_dir=args.data_dir, metered=metered)
    snapshot = signals.read()
    decision = policy.evaluate(snapshot, phase="continue" if args.phase == "continue" else "start")
    close = getattr(metered, "close", None)
    if close is not None:
        close()
    board, matches = match_profiles(root)
    chosen = load_profile(args.profile).id if args.profile else None
    hints = _hints(decision, snapshot)
    if args.json:
        device = {"model": board.model, "cpu": board.cpu, "arch": board.arch}
        suggested = [{"profile": m.profile.id, "by": m.by} for m in matches]
        print(
            json.dumps(
                {"policy": policy.name, **decision.to_json(), "device": device, "profiles": suggested, "hints": hints}
            )
        )
    else:
        verdict = "ELIGIBLE" if decision.eligible else "NOT ELIGIBLE: " + ", ".join(r.value for r in decision.reasons)
        print(f"{verdict}  (policy {policy.name}, may-{decision.phase})")
        for c in decision.checks:
            print(f"  {c.signal:<15} {c.value:<14} {c.status.value:<8} {c.reason.value if c.reason else ''}".rstrip())
        for signal, hint in hints.items():
            print(f"unknown {signal}: {hint}")
        for line in _advice(board, matches, chosen):
            print(line)
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
