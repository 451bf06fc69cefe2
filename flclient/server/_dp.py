"""Central differential privacy at the server (DP-FedAvg): clip every device delta, average them with equal
weights, add Gaussian noise to the average, and account the run's epsilon with dp-accounting's PLD accountant.

The devices clip to ``clip-norm`` already (``dp-mode = "central"``: clipping only, charged to their ledgers); the
server clips again so that a device that did not cannot raise the sensitivity. With ``n`` deltas each of norm at
most ``C``, the equal-weight average has sensitivity ``C / n`` to one device's participation (add/remove with a
fixed cohort size), so noise of std ``z * C / n`` makes each round a Gaussian mechanism with multiplier ``z``.
Rounds compose; a cohort drawn from a larger population is accounted as Poisson subsampling at rate
``cohort / population`` (the rate the caller states).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._aggregate import AggregationResult, DeviceUpdate, screen_updates

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["CentralDP", "central_dp_aggregate"]


@dataclass(frozen=True, kw_only=True)
class CentralDP:
    """Central DP settings of a run: per-device clip norm, noise multiplier, and the delta epsilon is stated at."""

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ValueError(f"central DP needs a positive clip-norm, got {self.clip_norm}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"central DP needs a positive dp-noise-multiplier, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.delta}")

    @classmethod
    def from_config(cls, run: RunConfig) -> CentralDP | None:
        """The central DP of a run with ``dp-mode = "central"`` (``clip-norm``, ``dp-noise-multiplier``,
        ``dp-delta``); ``None`` in local mode."""
        if run.dp_mode != "central":
            return None
        return cls(clip_norm=run.clip_norm or 0.0, noise_multiplier=run.dp_noise_multiplier or 0.0, delta=run.dp_delta)

    def epsilon(self, *, rounds: int, sampling_rate: float = 1.0) -> float:
        """Epsilon at ``delta`` after ``rounds`` noised rounds (PLD; needs the ``[server]`` extra)."""
        from ..update import central_epsilon

        return central_epsilon(
            noise_multiplier=self.noise_multiplier, sampling_rate=sampling_rate, rounds=rounds, delta=self.delta
        )


def central_dp_aggregate(
    base: Mapping[str, np.ndarray],
    updates: Sequence[DeviceUpdate],
    dp: CentralDP,
    rng: np.random.Generator,
) -> tuple[AggregationResult, float]:
    """The noised equal-weight average of the clipped deltas applied to ``base``; returns it and the noise std.

    Updates the plain aggregation would reject (other names or shapes, non-finite values) are rejected here too.
    No update: ``base`` unchanged and no noise (nothing was released).
    """
    good, rejected = screen_updates(base, updates)
    if not good:
        return AggregationResult({k: np.array(v, copy=True) for k, v in base.items()}, (), rejected), 0.0
    total = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in base.items()}
    for u in good:
        delta = {k: np.asarray(u.parameters[k], dtype=np.float64) - np.asarray(base[k], dtype=np.float64) for k in base}
        norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
        scale = min(1.0, dp.clip_norm / norm) if norm > 0 else 1.0
        for k, d in delta.items():
            total[k] += d * scale
    n = len(good)
    std = dp.noise_multiplier * dp.clip_norm / n
    out = {
        k: (np.asarray(base[k], dtype=np.float64) + total[k] / n + rng.normal(0.0, std, size=np.shape(base[k]))).astype(
            np.asarray(base[k]).dtype
        )
        for k in base
    }
    return AggregationResult(out, tuple(u.node_id for u in good), rejected), std
