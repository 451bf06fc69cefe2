"""L2 clipping of a model update, per update or per layer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._errors import UpdateInputError

__all__ = ["ClipConfig", "ClipReport", "clip_update", "update_norm"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """Clip the update to L2 norm ``max_norm``.

    With ``per_layer=True`` each layer gets its own bound, ``max_norm * sqrt(size / total size)``, so the bounds
    still add up (in squares) to ``max_norm`` and the update's sensitivity for DP stays ``max_norm``.
    """

    max_norm: float
    per_layer: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ValueError(f"max_norm must be a positive finite number, got {self.max_norm}")


@dataclass(frozen=True, kw_only=True)
class ClipReport:
    """What clipping did: the bound per layer, and whether anything was scaled down (never the raw norm)."""

    max_norm: float
    per_layer: bool
    clipped: bool


def update_norm(update: Mapping[str, npt.NDArray[np.floating]]) -> float:
    """The L2 norm of all layers together."""
    return math.sqrt(sum(float(np.dot(a.ravel().astype(np.float64), a.ravel())) for a in update.values()))


def clip_update(update: Mapping[str, F32], config: ClipConfig) -> tuple[dict[str, F32], ClipReport]:
    """Return the clipped update (new arrays) and a report. Raises :class:`~flclient.UpdateInputError` on NaN/inf."""
    for name, a in update.items():
        if not np.isfinite(a).all():
            raise UpdateInputError(f"layer {name!r} has NaN or infinite values")
    out: dict[str, F32] = {}
    clipped = False
    if config.per_layer:
        total = sum(a.size for a in update.values()) or 1
        for name, a in update.items():
            bound = config.max_norm * math.sqrt(a.size / total)
            scaled, was = _clip_to(a, update_norm({name: a}), bound)
            out[name] = scaled
            clipped |= was
    else:
        norm = update_norm(update)
        for name, a in update.items():
            out[name], was = _clip_to(a, norm, config.max_norm)
            clipped |= was
    return out, ClipReport(max_norm=config.max_norm, per_layer=config.per_layer, clipped=clipped)


def _clip_to(a: F32, norm: float, bound: float) -> tuple[F32, bool]:
    if norm <= bound:
        return a.astype(np.float32, copy=True), False
    # Scale in float64 and round down so float32 rounding cannot push the norm back over the bound.
    factor = np.float32(np.nextafter(np.float32(bound / norm), np.float32(0)))
    return (a * factor).astype(np.float32), True
