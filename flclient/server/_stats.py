"""Federated statistics (numpy only): a global feature scaler from the devices' sums, sums of squares and counts.

No device sees the global mean and variance; each replies ``sum``, ``sumsq`` and ``count`` of its raw feature
columns (a ``feature-stats`` query), and the server combines them:
``mean = sum / n`` and ``std = sqrt(sumsq / n - mean**2)`` (float64; a constant column gets ``std = 1``).
Scalers are versioned (:class:`ScalerStore`) and the version travels with every task that uses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_write_bytes
from ..protocol import Scaler

__all__ = ["FeatureStats", "Scaler", "ScalerStore", "federated_scaler"]


@dataclass(frozen=True)
class FeatureStats:
    """One device's reply to a ``feature-stats`` query."""

    sum: np.ndarray
    sumsq: np.ndarray
    count: int


def federated_scaler(
    stats: Sequence[FeatureStats], *, version: int, module_sha256: str, min_std: float = 1e-12
) -> Scaler:
    """The scaler of the union of the devices' data from their per-device sums (pooled mean and variance)."""
    good = [s for s in stats if s.count > 0]
    if not good:
        raise ValueError("no device reported any feature statistics")
    widths = {np.shape(s.sum) for s in good} | {np.shape(s.sumsq) for s in good}
    if len(widths) != 1 or len(next(iter(widths))) != 1:
        raise ValueError(f"devices reported statistics of different widths: {sorted(widths)}")
    n = sum(s.count for s in good)
    total = np.sum([np.asarray(s.sum, np.float64) for s in good], axis=0)
    total_sq = np.sum([np.asarray(s.sumsq, np.float64) for s in good], axis=0)
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > min_std, std, 1.0)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError("the feature statistics are not finite")
    return Scaler(
        version=version,
        module_sha256=module_sha256,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        count=n,
    )


class ScalerStore:
    """Scaler versions on disk: ``<dir>/scaler-<version>.json``, versions counting up from 1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def versions(self) -> list[int]:
        """The stored versions, ascending."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem.split("-", 1)[1]) for p in self.directory.glob("scaler-*.json"))

    def next_version(self) -> int:
        """The version the next scaler gets."""
        return max(self.versions(), default=0) + 1

    def save(self, scaler: Scaler) -> Path:
        """Write ``scaler`` under its version (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"scaler-{scaler.version}.json"
        atomic_write_bytes(path, scaler.to_json().encode())
        return path

    def load(self, version: int) -> Scaler:
        """A stored version."""
        return Scaler.from_json((self.directory / f"scaler-{version}.json").read_text(encoding="utf-8"))
