"""Stochastic quantisation into Z_(2^b) with a shared scale, discrete (Skellam) noise, and the server's lift back."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._errors import UpdateInputError

__all__ = ["dequantize_sum", "quantize", "skellam_noise"]

U32 = npt.NDArray[np.uint32]
F32 = npt.NDArray[np.float32]


def quantize(x: npt.ArrayLike, *, clip: float, levels: int, bits: int, rng: np.random.Generator) -> tuple[U32, int]:
    """``x`` clamped to ``[-clip, clip]``, scaled so ``clip -> levels``, stochastically rounded, taken mod 2^b.

    Stochastic rounding keeps the quantised value unbiased. Returns the values and how many coordinates were
    clamped (with L2 clipping at ``clip`` upstream there are none).
    """
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise UpdateInputError("the update holds non-finite values")
    clamped = int(np.count_nonzero(np.abs(v) > clip))
    y = np.clip(v, -clip, clip) * (levels / clip)
    fl = np.floor(y)
    q = fl.astype(np.int64) + (rng.random(v.size) < (y - fl))
    return (q & ((1 << bits) - 1)).astype(np.uint32), clamped


def skellam_noise(size: int, *, variance: float, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Integer noise: the difference of two Poisson(variance / 2) draws (sums of Skellam noise stay Skellam)."""
    if variance <= 0:
        return np.zeros(size, dtype=np.int64)
    lam = variance / 2.0
    return rng.poisson(lam, size).astype(np.int64) - rng.poisson(lam, size).astype(np.int64)


def dequantize_sum(total: U32, *, clip: float, levels: int, bits: int) -> F32:
    """The float sum from the ring sum: lift to ``[-2^(b-1), 2^(b-1))`` and undo the scale."""
    t = np.asarray(total, dtype=np.int64) & ((1 << bits) - 1)
    t = np.where(t >= (1 << (bits - 1)), t - (1 << bits), t)
    return (t * (clip / levels)).astype(np.float32)
