"""Device profiles: one TOML file per device class, with sources for every figure and estimates marked.

A profile describes the hardware, the runtimes available, the training limits (RAM and wall-time budgets, thermal
ceiling and resume temperature) and an availability model for the fleet simulator. It sets the defaults of the
device's gate (:meth:`DeviceProfile.policy`) and its training budget (:meth:`DeviceProfile.training_budget`).
The schema is these dataclasses; ``device_profiles/README.md`` documents it.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtimes import TrainingBudget

from .._errors import PolicyError
from ._config import from_table, load_toml
from ._policy import SIGNAL_NAMES, EligibilityPolicy
from ._signals import Board, read_board

__all__ = [
    "Availability",
    "DeviceProfile",
    "Hardware",
    "ProfileMatch",
    "Recognition",
    "TrainingLimits",
    "default_profiles_dir",
    "list_profiles",
    "load_profile",
    "match_profiles",
]

_RUNTIMES = frozenset({"numpy", "onnx", "litert"})
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """What the device is made of."""

    soc: str
    cpu: str
    cpu_cores: int
    arch: str
    ram_mib: int
    accelerator: str = "none"
    accelerator_trains: bool = False

    def __post_init__(self) -> None:
        if self.cpu_cores < 1:
            raise ValueError(f"hardware.cpu_cores must be >= 1, got {self.cpu_cores}")
        if self.ram_mib < 256:
            raise ValueError(f"hardware.ram_mib must be >= 256, got {self.ram_mib}")
        if self.arch not in ("aarch64", "armv7l", "x86_64"):
            raise ValueError(f"hardware.arch must be aarch64, armv7l or x86_64, got {self.arch!r}")


@dataclass(frozen=True, kw_only=True)
class TrainingLimits:
    """Budgets for one round of local training, and the thermal band the gate enforces (hysteresis)."""

    ram_budget_mib: int
    wall_time_budget_s: float
    thermal_ceiling_c: float
    thermal_resume_c: float

    def __post_init__(self) -> None:
        if self.ram_budget_mib < 16:
            raise ValueError(f"training.ram_budget_mib must be >= 16, got {self.ram_budget_mib}")
        if not (self.wall_time_budget_s > 0 and math.isfinite(self.wall_time_budget_s)):
            raise ValueError(f"training.wall_time_budget_s must be positive, got {self.wall_time_budget_s}")
        if not (0 < self.thermal_resume_c < self.thermal_ceiling_c <= 110):
            raise ValueError(
                "training.thermal_resume_c must be positive and below thermal_ceiling_c (<= 110), got "
                f"{self.thermal_resume_c} / {self.thermal_ceiling_c}"
            )


@dataclass(frozen=True, kw_only=True)
class Availability:
    """The fleet simulator's model of the device.

    ``on_power_by_hour``: probability that the device is eligible (powered, idle, on its usual network) in each
    local hour 0..23. ``dropout_probability``: chance that a selected device vanishes mid-round. Speeds are
    log-normal: a median and a sigma (of the natural log). ``compute_speed`` is relative to a Raspberry Pi 4B (1.0).
    """

    on_power_by_hour: tuple[float, ...]
    dropout_probability: float
    uplink_mbps_median: float
    uplink_sigma: float
    downlink_mbps_median: float
    downlink_sigma: float
    compute_speed_median: float
    compute_speed_sigma: float

    def __post_init__(self) -> None:
        if len(self.on_power_by_hour) != 24 or not all(0.0 <= p <= 1.0 for p in self.on_power_by_hour):
            raise ValueError("availability.on_power_by_hour must hold 24 probabilities in 0..1")
        if not 0.0 <= self.dropout_probability < 1.0:
            raise ValueError(f"availability.dropout_probability must be in [0, 1), got {self.dropout_probability}")
        for name in ("uplink_mbps_median", "downlink_mbps_median", "compute_speed_median"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"availability.{name} must be positive, got {v}")
        for name in ("uplink_sigma", "downlink_sigma", "compute_speed_sigma"):
            v = getattr(self, name)
            if not (0.0 <= v <= 3.0):
                raise ValueError(f"availability.{name} must be within 0..3, got {v}")


@dataclass(frozen=True, kw_only=True)
class GateDefaults:
    """How the profile changes the default policy: signals this device class does not have, networks, modes."""

    absent_signals: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ()  # empty: keep the policy's
    allowed_power_modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = sorted(set(self.absent_signals) - set(SIGNAL_NAMES))
        if bad:
            raise ValueError(f"gate.absent_signals has unknown signals {bad}")


@dataclass(frozen=True, kw_only=True)
class Recognition:
    """How ``flclient check`` recognises a device of this class. Each criterion given must match; an empty
    table recognises nothing (the class has no reliable marker, e.g. a phone).

    ``device_tree_model``: any of these is a substring of ``/proc/device-tree/model``. ``cpu_model``: any of these
    is a substring of the CPU model in ``/proc/cpuinfo``. ``files``: every one of these paths exists (an
    accelerator's device node, say). ``architecture_fallback``: offered for a device of the profile's architecture
    that no profile recognises (the generic class of that architecture, such as the x86 gateway for a VM).
    """

    device_tree_model: tuple[str, ...] = ()
    cpu_model: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    architecture_fallback: bool = False

    def __post_init__(self) -> None:
        for name in ("device_tree_model", "cpu_model", "files"):
            if any(not v.strip() for v in getattr(self, name)):
                raise ValueError(f"recognise.{name} must not hold empty strings")
        if any(not f.startswith("/") for f in self.files):
            raise ValueError("recognise.files must be absolute paths")

    def score(self, board: Board, root: Path) -> int:
        """How many criteria matched (0 when any failed or none are given): more specific profiles win."""
        matched = 0
        for wanted, seen in ((self.device_tree_model, board.model), (self.cpu_model, board.cpu)):
            if wanted:
                if seen is None or not any(w in seen for w in wanted):
                    return 0
                matched += 1
        for f in self.files:
            if not (root / f.lstrip("/")).exists():
                return 0
            matched += 1
        return matched


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """One device class. ``sources`` name the references for its figures; ``estimates`` lists fields that are not
    sourced (dotted names such as ``"availability"`` or ``"hardware.accelerator"``)."""

    id: str
    name: str
    hardware: Hardware
    runtimes: tuple[str, ...]
    training: TrainingLimits
    availability: Availability
    gate: GateDefaults = field(default_factory=GateDefaults)
    recognise: Recognition = field(default_factory=Recognition)
    sources: tuple[str, ...] = ()
    estimates: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"id must be lower-case letters, digits and dashes, got {self.id!r}")
        if not self.runtimes or "numpy" not in self.runtimes:
            raise ValueError("runtimes must include numpy (the always-available backend)")
        bad = sorted(set(self.runtimes) - _RUNTIMES)
        if bad:
            raise ValueError(f"runtimes has unknown backends {bad}; use some of {sorted(_RUNTIMES)}")
        if self.training.ram_budget_mib > self.hardware.ram_mib // 2:
            raise ValueError(
                f"training.ram_budget_mib ({self.training.ram_budget_mib}) must be at most half of hardware.ram_mib "
                f"({self.hardware.ram_mib}): the device has other work to do"
            )
        if not self.sources:
            raise ValueError("sources must name at least one reference (estimates are listed in estimates)")

    @classmethod
    def from_mapping(cls, table: dict[str, Any], *, source: str = "<profile>") -> DeviceProfile:
        """Build a profile from a parsed TOML table; errors raise :class:`PolicyError` naming the key."""
        try:
            return from_table(cls, table)
        except (ValueError, TypeError) as exc:
            raise PolicyError(source, str(exc)) from exc

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> DeviceProfile:
        """Load a profile file."""
        p = Path(path)
        profile = cls.from_mapping(load_toml(p), source=str(p))
        if p.stem != profile.id:
            raise PolicyError(str(p), f"file name must be the profile id ({profile.id}.toml)")
        return profile

    def policy(self, base: EligibilityPolicy | None = None) -> EligibilityPolicy:
        """``base`` (default: the default policy) with this device's thermal band, absent signals, networks,
        power modes, and its training RAM budget as the may-start memory floor."""
        base = base if base is not None else EligibilityPolicy()
        start, cont = base.may_start, base.may_continue
        g = self.gate
        start = replace(
            start,
            max_temperature_c=self.training.thermal_resume_c,
            min_mem_available_mib=float(self.training.ram_budget_mib),
            allowed_networks=g.allowed_networks or start.allowed_networks,
            allowed_power_modes=g.allowed_power_modes or start.allowed_power_modes,
        )
        cont = replace(
            cont,
            max_temperature_c=self.training.thermal_ceiling_c,
            allowed_networks=g.allowed_networks or cont.allowed_networks,
            allowed_power_modes=g.allowed_power_modes or cont.allowed_power_modes,
        )
        absent = tuple(sorted(set(base.absent_signals) | set(g.absent_signals)))
        return replace(base, name=f"{base.name}+{self.id}", may_start=start, may_continue=cont, absent_signals=absent)

    def training_budget(self) -> TrainingBudget:
        """The ``runtimes.TrainingBudget`` for one round on this device."""
        return TrainingBudget(
            ram_bytes=self.training.ram_budget_mib * 1024 * 1024, wall_time_s=self.training.wall_time_budget_s
        )


def default_profiles_dir() -> Path:
    """The bundled ``device_profiles`` directory: the package data ``flclient/gate/device_profiles`` (in a source
    checkout a symlink to the repository's ``device_profiles/``, the source of truth; in a wheel a copy of it),
    else the source checkout's directory."""
    bundled = importlib.resources.files("flclient.gate") / "device_profiles"
    if isinstance(bundled, Path) and (bundled / "profiles").is_dir():
        return bundled
    return Path(__file__).resolve().parents[2] / "device_profiles"


def list_profiles(directory: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Profile id -> file, for every ``profiles/*.toml`` below ``directory`` (default: the bundled one)."""
    base = Path(directory) if directory is not None else default_profiles_dir()
    return {p.stem: p for p in sorted((base / "profiles").glob("*.toml"))}


def load_profile(
    name_or_path: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None = None
) -> DeviceProfile:
    """Load a profile by id (``"rpi4b"``) from ``directory``, or from a path to a ``.toml`` file."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return DeviceProfile.from_toml(text)
    known = list_profiles(directory)
    if text not in known:
        raise PolicyError(text, f"no such device profile; known: {', '.join(known) or 'none'}")
    return DeviceProfile.from_toml(known[text])


@dataclass(frozen=True, kw_only=True)
class ProfileMatch:
    """A bundled profile that fits what the device says it is. ``by`` is ``"recognised"`` (its ``[recognise]``
    criteria matched) or ``"architecture"`` (nothing was recognised; only the CPU architecture fits)."""

    profile: DeviceProfile
    by: str


def match_profiles(
    root: str | os.PathLike[str] = "/", *, directory: str | os.PathLike[str] | None = None
) -> tuple[Board, tuple[ProfileMatch, ...]]:
    """What the device below ``root`` is (device-tree model, CPU) and the profiles that fit it, best first.

    Recognised profiles come first, most specific first (a Pi 5 with a Hailo device node is ``rpi5-ai-hat``
    before ``rpi5``). When none is recognised, the architecture's fallback profiles are offered instead.
    """
    base = Path(root)
    board = read_board(base)
    profiles = [DeviceProfile.from_toml(p) for p in list_profiles(directory).values()]
    scored = sorted(((p.recognise.score(board, base), p.id, p) for p in profiles), key=lambda t: (-t[0], t[1]))
    recognised = tuple(ProfileMatch(profile=p, by="recognised") for score, _, p in scored if score > 0)
    if recognised:
        return board, recognised
    if board.arch is None:
        return board, ()
    return board, tuple(
        ProfileMatch(profile=p, by="architecture")
        for _, _, p in scored
        if p.recognise.architecture_fallback and p.hardware.arch == board.arch
    )
