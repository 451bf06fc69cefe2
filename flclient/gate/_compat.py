"""The compatibility matrix: can this device run this task at all, whatever its power and network?

A task names what it needs (app and SDK versions, model format, feature ABI and pinned modules, backends, privacy
cost); the device states what it has. Each mismatch is a specific reason code; the refusal is "not eligible".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ._policy import Reason

__all__ = [
    "DeviceCapabilities",
    "FeaturePin",
    "PrivacyBudget",
    "TaskRequirements",
    "check_compatibility",
    "parse_version",
]

_VERSION = re.compile(r"(0|[1-9]\d{0,8})(?:\.(0|[1-9]\d{0,8}))?(?:\.(0|[1-9]\d{0,8}))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"``, ``"1.2"`` or ``"1"`` -> (1, 2, 3); a pre-release/build suffix is not accepted."""
    m = _VERSION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a version (MAJOR[.MINOR[.PATCH]]): {text!r}")
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))


@runtime_checkable
class PrivacyBudget(Protocol):
    """The hook for the device's DP ledger: how much epsilon this device may still spend (None: no ledger)."""

    def remaining_epsilon(self) -> float | None:
        """Epsilon left to spend, or None when no budget is tracked."""
        ...


@dataclass(frozen=True, kw_only=True)
class FeaturePin:
    """A feature module a task pins: exact name, version and sha256."""

    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256 of {self.name} must be 64 lower-case hex digits")
        parse_version(self.version)


@dataclass(frozen=True, kw_only=True)
class TaskRequirements:
    """What a round's task needs from a device. Versions are inclusive minimums / exact model format."""

    min_app_version: str | None = None
    min_runtime_version: str | None = None
    max_runtime_major: int | None = None
    model_format: str | None = None  # e.g. "dense-v1", "onnx-ir9", "tflite-train-v1"
    feature_abi: int | None = None
    feature_pins: tuple[FeaturePin, ...] = ()
    required_backends: tuple[str, ...] = ()
    privacy_epsilon_cost: float = 0.0

    def __post_init__(self) -> None:
        for v in (self.min_app_version, self.min_runtime_version):
            if v is not None:
                parse_version(v)
        if not self.privacy_epsilon_cost >= 0.0:
            raise ValueError(f"privacy_epsilon_cost must be >= 0, got {self.privacy_epsilon_cost}")


@dataclass(frozen=True, kw_only=True)
class DeviceCapabilities:
    """What the device has. ``feature_modules`` maps name -> {version: sha256} of modules it can load."""

    app_version: str
    runtime_version: str
    model_formats: tuple[str, ...] = ()
    feature_abis: tuple[int, ...] = ()
    feature_modules: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    backends: tuple[str, ...] = ()
    privacy_budget: PrivacyBudget | None = None

    def __post_init__(self) -> None:
        parse_version(self.app_version)
        parse_version(self.runtime_version)


def check_compatibility(task: TaskRequirements, device: DeviceCapabilities) -> tuple[Reason, ...]:
    """The reasons this device cannot run this task; empty when it can."""
    reasons: list[Reason] = []
    if task.min_app_version is not None and parse_version(device.app_version) < parse_version(task.min_app_version):
        reasons.append(Reason.APP_VERSION)
    runtime = parse_version(device.runtime_version)
    too_old = task.min_runtime_version is not None and runtime < parse_version(task.min_runtime_version)
    too_new = task.max_runtime_major is not None and runtime[0] > task.max_runtime_major
    if too_old or too_new:
        reasons.append(Reason.RUNTIME_VERSION)
    if task.model_format is not None and task.model_format not in device.model_formats:
        reasons.append(Reason.MODEL_FORMAT)
    if task.feature_abi is not None and task.feature_abi not in device.feature_abis:
        reasons.append(Reason.FEATURE_ABI)
    for pin in task.feature_pins:
        # An exact pin: another version or other bytes are a refusal, never a substitution.
        if device.feature_modules.get(pin.name, {}).get(pin.version) != pin.sha256:
            reasons.append(Reason.FEATURE_MODULE)
            break
    if any(b not in device.backends for b in task.required_backends):
        reasons.append(Reason.BACKEND)
    if task.privacy_epsilon_cost > 0.0:
        left = device.privacy_budget.remaining_epsilon() if device.privacy_budget is not None else None
        if left is not None and left < task.privacy_epsilon_cost:
            reasons.append(Reason.PRIVACY_BUDGET)
    return tuple(reasons)
