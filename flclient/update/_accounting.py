"""Privacy accounting for the Gaussian mechanism in Renyi DP, closed form, no libraries.

One participation with noise multiplier ``z`` (noise std = z * clip norm, sensitivity = clip norm) has
RDP ``eps(alpha) = alpha / (2 z^2)`` at every order alpha > 1; participations add. The (epsilon, delta)
conversion is the one dp-accounting uses (Balle et al. 2020, Thm 21):
``eps = rdp(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1)``,
minimised over alpha on a dense grid, and never worse than the classic closed form
``rho + 2 sqrt(rho log(1/delta))`` with ``rho = sum 1 / (2 z^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["gaussian_rdp_rho", "rdp_epsilon"]

_ORDERS = np.concatenate([np.geomspace(1.0 + 1e-4, 1e6, 6000)])


def gaussian_rdp_rho(noise_multipliers: Iterable[float]) -> float:
    """The RDP slope ``rho`` (``eps(alpha) = rho * alpha``) of composed Gaussian mechanisms."""
    total = 0.0
    for z in noise_multipliers:
        if not z > 0:
            return math.inf
        total += 1.0 / (2.0 * z * z)
    return total


def rdp_epsilon(rho: float, delta: float) -> float:
    """Epsilon at ``delta`` for RDP curve ``rho * alpha``; 0 for no participation, inf for noiseless ones."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if rho == 0:
        return 0.0
    if not math.isfinite(rho):
        return math.inf
    classic = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
    a = _ORDERS
    eps = rho * a + np.log((a - 1.0) / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    return max(0.0, min(classic, float(eps.min())))
