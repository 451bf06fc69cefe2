"""The eligibility policy: separate may-start and may-continue rules over a :class:`SignalSnapshot`.

Defaults follow production practice (Gboard, AOSP FederatedCompute, ChromeOS, Brave): train only on external power,
on an unmetered Wi-Fi or Ethernet link, cool and idle. The start rules are stricter than the continue rules, which is
the hysteresis: a device that stopped at the thermal ceiling starts again only below the (lower) resume temperature.
A signal that cannot be read fails its check, unless the device has no such hardware (the snapshot lists it as
absent: mains and no battery, no Pi firmware, no thermal zone) or the policy lists it in ``absent_signals`` (a Pi
has no power-supply node at all, so its profile says so). Decisions carry coarse reason codes only; the detail
stays on the device.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import PolicyError
from ._config import from_table, load_toml
from ._signals import NetworkKind, SignalSnapshot

__all__ = ["SIGNAL_NAMES", "CheckStatus", "Decision", "EligibilityPolicy", "GateRules", "Reason", "SignalCheck"]

SIGNAL_NAMES = (
    "external_power",
    "battery",
    "network",
    "metered",
    "temperature",
    "throttle",
    "power_mode",
    "memory",
    "load",
    "disk",
)
_NETWORK_KINDS = frozenset(k.value for k in NetworkKind) - {"none"}
_MIB = 1024 * 1024


class Reason(str, enum.Enum):
    """Coarse reason codes: what a coordinator may learn about why a device declined."""

    POWER = "power"
    BATTERY = "battery"
    NETWORK = "network"
    METERED = "metered"
    THERMAL = "thermal"
    THROTTLED = "throttled"
    UNDER_VOLTAGE = "under_voltage"
    POWER_MODE = "power_mode"
    MEMORY = "memory"
    LOAD = "load"
    DISK = "disk"
    BACKOFF = "backoff"
    APP_VERSION = "app_version"
    RUNTIME_VERSION = "runtime_version"
    MODEL_FORMAT = "model_format"
    FEATURE_ABI = "feature_abi"
    FEATURE_MODULE = "feature_module"
    BACKEND = "backend"
    PRIVACY_BUDGET = "privacy_budget"


class CheckStatus(str, enum.Enum):
    """How one signal fared: ``unknown`` fails (closed), ``absent`` passes (the profile says it does not exist)."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"
    ABSENT = "absent"
    OFF = "off"


@dataclass(frozen=True, kw_only=True)
class SignalCheck:
    """One signal's check: its name, the value read (as text), the status and, when it failed, the reason."""

    signal: str
    value: str
    status: CheckStatus
    reason: Reason | None = None

    @property
    def passed(self) -> bool:
        """True unless the check failed or the signal was unknown."""
        return self.status not in (CheckStatus.FAILED, CheckStatus.UNKNOWN)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The gate's answer. ``reasons`` are unique, in check order; ``checks`` holds every signal's detail."""

    eligible: bool
    phase: str  # "start" or "continue"
    reasons: tuple[Reason, ...] = ()
    checks: tuple[SignalCheck, ...] = ()

    def to_reply(self) -> dict[str, Any]:
        """What the coordinator is told: ``not_eligible`` with coarse reasons, never a failure."""
        return {
            "status": "eligible" if self.eligible else "not_eligible",
            "reasons": [r.value for r in self.reasons],
        }

    def to_json(self) -> dict[str, Any]:
        """The decision with every signal, for ``flclient check --json`` and local logs."""
        return {
            "eligible": self.eligible,
            "phase": self.phase,
            "reasons": [r.value for r in self.reasons],
            "checks": [
                {"signal": c.signal, "value": c.value, "status": c.status.value, "reason": c.reason and c.reason.value}
                for c in self.checks
            ],
        }


def _check_finite_nonneg(name: str, value: float, *, allow_inf: bool = False) -> None:
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a non-negative number{' (inf: no limit)' if allow_inf else ''}, got {value}")


@dataclass(frozen=True, kw_only=True)
class GateRules:
    """One rule set (may-start or may-continue). Thresholds of 0 (minimums) or inf (maximums) switch a check off."""

    require_external_power: bool = True
    min_battery_percent: float = 20.0
    allowed_networks: tuple[str, ...] = ("ethernet", "wifi")
    require_unmetered: bool = True
    max_temperature_c: float = 65.0
    reject_under_voltage: bool = True
    reject_throttled: bool = True
    allowed_power_modes: tuple[str, ...] = ()  # empty: any mode
    min_mem_available_mib: float = 256.0
    max_load_per_core: float = 0.5
    min_disk_free_mib: float = 256.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_battery_percent <= 100.0:
            raise ValueError(f"min_battery_percent must be within 0..100, got {self.min_battery_percent}")
        bad = sorted(set(self.allowed_networks) - _NETWORK_KINDS)
        if bad:
            raise ValueError(f"allowed_networks has unknown kinds {bad}; use some of {sorted(_NETWORK_KINDS)}")
        if not self.allowed_networks:
            raise ValueError("allowed_networks must name at least one network kind")
        if math.isnan(self.max_temperature_c) or self.max_temperature_c <= -40.0:
            raise ValueError(f"max_temperature_c must be above -40, got {self.max_temperature_c}")
        _check_finite_nonneg("min_mem_available_mib", self.min_mem_available_mib)
        _check_finite_nonneg("max_load_per_core", self.max_load_per_core, allow_inf=True)
        _check_finite_nonneg("min_disk_free_mib", self.min_disk_free_mib)
        if self.max_load_per_core == 0.0:
            raise ValueError("max_load_per_core must be positive (inf switches the check off)")


_DEFAULT_START = GateRules()
_DEFAULT_CONTINUE = GateRules(
    min_battery_percent=15.0,
    max_temperature_c=75.0,
    # Training itself loads the CPU: the continue rules watch power, heat and memory, not load.
    max_load_per_core=math.inf,
    min_mem_available_mib=128.0,
    min_disk_free_mib=64.0,
)


@dataclass(frozen=True, kw_only=True)
class EligibilityPolicy:
    """When a device may start a round, when it must stop, how often it checks and how it backs off.

    Load one with :meth:`from_toml`; a file states only what differs from these defaults::

        [may_start]
        max_temperature_c = 60.0
        [may_continue]
        max_temperature_c = 70.0
    """

    name: str = "default"
    may_start: GateRules = field(default_factory=lambda: _DEFAULT_START)
    may_continue: GateRules = field(default_factory=lambda: _DEFAULT_CONTINUE)
    absent_signals: tuple[str, ...] = ()
    check_interval_s: float = 30.0
    backoff_initial_s: float = 900.0
    backoff_max_s: float = 6 * 3600.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        bad = sorted(set(self.absent_signals) - set(SIGNAL_NAMES))
        if bad:
            raise ValueError(f"absent_signals has unknown signals {bad}; use some of {list(SIGNAL_NAMES)}")
        s, c = self.may_start, self.may_continue
        if s.max_temperature_c > c.max_temperature_c:
            raise ValueError(
                f"may_start.max_temperature_c ({s.max_temperature_c}) must not exceed may_continue's "
                f"({c.max_temperature_c}): a device would start and stop at once"
            )
        if s.min_battery_percent < c.min_battery_percent:
            raise ValueError(
                f"may_start.min_battery_percent ({s.min_battery_percent}) must be at least may_continue's "
                f"({c.min_battery_percent})"
            )
        if not (self.check_interval_s > 0 and math.isfinite(self.check_interval_s)):
            raise ValueError(f"check_interval_s must be a positive number, got {self.check_interval_s}")
        if not (0 < self.backoff_initial_s <= self.backoff_max_s and math.isfinite(self.backoff_max_s)):
            raise ValueError("backoff_initial_s must be positive and at most backoff_max_s (finite)")
        if not (self.backoff_multiplier >= 1.0 and math.isfinite(self.backoff_multiplier)):
            raise ValueError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}")

    @classmethod
    def from_mapping(
        cls, table: Mapping[str, Any], *, source: str = "<policy>", base: EligibilityPolicy | None = None
    ) -> EligibilityPolicy:
        """Build a policy from a parsed TOML table, overlaying ``base`` (default: the default policy)."""
        try:
            return from_table(cls, table, base=base if base is not None else cls())
        except ValueError as exc:
            raise PolicyError(source, str(exc)) from exc

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, base: EligibilityPolicy | None = None) -> EligibilityPolicy:
        """Load a policy file; errors raise :class:`PolicyError` naming the file and the key."""
        p = Path(path)
        return cls.from_mapping(load_toml(p), source=str(p), base=base)

    def evaluate(self, snapshot: SignalSnapshot, *, phase: str = "start") -> Decision:
        """Decide from one snapshot. ``phase`` is ``"start"`` or ``"continue"``."""
        if phase == "start":
            rules = self.may_start
        elif phase == "continue":
            rules = self.may_continue
        else:
            raise ValueError(f"phase must be 'start' or 'continue', got {phase!r}")
        checks = _evaluate(rules, snapshot, frozenset(self.absent_signals) | snapshot.absent)
        reasons: list[Reason] = []
        for c in checks:
            if not c.passed and c.reason is not None and c.reason not in reasons:
                reasons.append(c.reason)
        return Decision(eligible=not reasons, phase=phase, reasons=tuple(reasons), checks=checks)


def _fmt(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _evaluate(rules: GateRules, snap: SignalSnapshot, absent: frozenset[str]) -> tuple[SignalCheck, ...]:
    out: list[SignalCheck] = []

    def add(signal: str, value: object, enabled: bool, ok: bool | None, reason: Reason) -> None:
        if not enabled:
            status = CheckStatus.OFF
        elif value is None:
            status = CheckStatus.ABSENT if signal in absent else CheckStatus.UNKNOWN
        else:
            status = CheckStatus.OK if ok else CheckStatus.FAILED
        failed = status in (CheckStatus.FAILED, CheckStatus.UNKNOWN)
        shown = "none" if status is CheckStatus.ABSENT else _fmt(value)  # no such hardware: nothing to read
        out.append(SignalCheck(signal=signal, value=shown, status=status, reason=reason if failed else None))

    p = snap.power
    add("external_power", p.external_online, rules.require_external_power, p.external_online is True, Reason.POWER)
    battery: float | None = p.battery_percent
    if not p.has_battery and "battery" in absent:
        battery = None
    add(
        "battery",
        battery,
        rules.min_battery_percent > 0,
        battery is not None and battery >= rules.min_battery_percent,
        Reason.BATTERY,
    )
    kind = snap.network_kind
    add("network", kind, True, kind is not None and kind.value in rules.allowed_networks, Reason.NETWORK)
    metered = snap.metered
    add("metered", metered, rules.require_unmetered, metered is not None and not metered.is_metered, Reason.METERED)
    t = snap.temperature_c
    add("temperature", t, True, t is not None and t <= rules.max_temperature_c, Reason.THERMAL)
    thr = snap.throttle
    thr_value = None if thr is None else f"0x{thr.raw:x}"
    uv_ok = thr is None or not (rules.reject_under_voltage and thr.under_voltage)
    th_ok = thr is None or not (rules.reject_throttled and (thr.throttled or thr.frequency_capped))
    add(
        "throttle",
        thr_value,
        rules.reject_under_voltage or rules.reject_throttled,
        uv_ok and th_ok,
        Reason.UNDER_VOLTAGE if not uv_ok else Reason.THROTTLED,
    )
    mode = snap.power_mode
    add(
        "power_mode",
        mode,
        bool(rules.allowed_power_modes),
        mode is not None and mode in rules.allowed_power_modes,
        Reason.POWER_MODE,
    )
    mem = snap.mem_available_bytes
    add(
        "memory",
        None if mem is None else f"{mem / _MIB:.0f} MiB",
        rules.min_mem_available_mib > 0,
        mem is not None and mem >= rules.min_mem_available_mib * _MIB,
        Reason.MEMORY,
    )
    load = snap.load_per_core
    add(
        "load",
        load,
        math.isfinite(rules.max_load_per_core),
        load is not None and load <= rules.max_load_per_core,
        Reason.LOAD,
    )
    disk = snap.disk_free_bytes
    add(
        "disk",
        None if disk is None else f"{disk / _MIB:.0f} MiB",
        rules.min_disk_free_mib > 0,
        disk is not None and disk >= rules.min_disk_free_mib * _MIB,
        Reason.DISK,
    )
    return tuple(out)
