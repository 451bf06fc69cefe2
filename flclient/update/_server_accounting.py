"""Server-side central-DP accounting with dp-accounting's privacy-loss-distribution (PLD) accountant.

Only the coordinator needs this: dp-accounting pulls in scipy, dm-tree and absl, which a device never installs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["central_epsilon"]


def _dp_accounting() -> Any:
    try:
        import dp_accounting  # type: ignore[import-untyped,unused-ignore]
        from dp_accounting import pld  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise ImportError("central epsilon needs the dp-accounting package: pip install 'flclient[server]'") from exc
    return dp_accounting, pld


def central_epsilon(*, noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``rounds`` Poisson-subsampled Gaussian rounds (central DP at the server), by PLD."""
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if rounds == 0:
        return 0.0
    dpa, pld = _dp_accounting()
    event: Any = dpa.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dpa.PoissonSampledDpEvent(sampling_rate, event)
    accountant = pld.PLDAccountant()
    accountant.compose(dpa.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))
