"""Aggregation of device updates (numpy only): weighted FedAvg, unweighted mean, coordinate-wise median, trimmed
mean, norm bound."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import UpdateCodecError
from ..protocol import AGGREGATIONS
from ..update import decode_update

__all__ = ["AGGREGATIONS", "AggregationResult", "DeviceUpdate", "aggregate", "apply_encoded_update"]


Params = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DeviceUpdate:
    """One device's new parameters (the standard layout: full arrays) and how many examples produced them."""

    node_id: int
    parameters: Params
    num_examples: int


@dataclass(frozen=True)
class AggregationResult:
    """The new global parameters and which updates were left out, with why."""

    parameters: dict[str, np.ndarray]
    used: tuple[int, ...]
    rejected: Mapping[int, str]


def _delta_norm(update: Params, base: Params) -> float:
    return float(np.sqrt(sum(float(np.sum((np.asarray(update[k], np.float64) - base[k]) ** 2)) for k in base)))


def aggregate(
    base: Params,
    updates: Sequence[DeviceUpdate],
    *,
    method: str = "fedavg",
    trim_fraction: float = 0.1,
    norm_bound: float | None = None,
) -> AggregationResult:
    """Aggregate ``updates`` of the global model ``base``.

    Updates with other parameter names or shapes, non-finite values, no examples, or a delta whose L2 norm
    exceeds ``norm_bound`` are rejected (a Byzantine or broken device cannot move the model arbitrarily far).
    ``fedavg`` weights by examples; ``mean`` weights every device alike (what a SecAgg round computes, the
    masked sum over the survivors divided by their number); ``median`` and ``trimmed-mean`` (dropping
    ``trim_fraction`` of the values at each end, per coordinate) are unweighted and robust to a minority of outliers.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {method!r}")
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    good, rejected = screen_updates(base, updates, norm_bound=norm_bound)
    if not good:
        return AggregationResult({k: np.array(v, copy=True) for k, v in base.items()}, (), rejected)
    out: dict[str, np.ndarray] = {}
    for k, ref in base.items():
        stack = np.stack([np.asarray(u.parameters[k], dtype=np.float64) for u in good])
        if method == "fedavg":
            w = np.array([u.num_examples for u in good], dtype=np.float64)
            value = np.tensordot(w / w.sum(), stack, axes=1)
        elif method == "mean":
            value = stack.mean(axis=0)
        elif method == "median":
            value = np.median(stack, axis=0)
        else:
            cut = int(np.floor(trim_fraction * len(good)))
            srt = np.sort(stack, axis=0)
            value = srt[cut : len(good) - cut].mean(axis=0)
        out[k] = value.astype(np.asarray(ref).dtype)
    return AggregationResult(out, tuple(u.node_id for u in good), rejected)


def screen_updates(
    base: Params, updates: Sequence[DeviceUpdate], *, norm_bound: float | None = None
) -> tuple[list[DeviceUpdate], dict[int, str]]:
    """The updates fit to aggregate, and why each other one is rejected: other parameter names or shapes,
    non-finite values, no examples, or a delta whose L2 norm exceeds ``norm_bound``."""
    rejected: dict[int, str] = {}
    good: list[DeviceUpdate] = []
    for u in updates:
        if set(u.parameters) != set(base):
            rejected[u.node_id] = "parameter names differ from the global model"
        elif any(np.shape(u.parameters[k]) != np.shape(base[k]) for k in base):
            rejected[u.node_id] = "parameter shapes differ from the global model"
        elif not all(np.all(np.isfinite(u.parameters[k])) for k in base):
            rejected[u.node_id] = "non-finite parameters"
        elif u.num_examples <= 0:
            rejected[u.node_id] = "no examples"
        elif norm_bound is not None and (norm := _delta_norm(u.parameters, base)) > norm_bound:
            rejected[u.node_id] = f"update norm {norm:.3g} exceeds the bound {norm_bound:.3g}"
        else:
            good.append(u)
    return good, rejected


def apply_encoded_update(base: Params, payload: bytes) -> dict[str, np.ndarray]:
    """A device's encoded delta (:meth:`flclient.update.EncodedUpdate.to_bytes`) applied to ``base``.

    Decoding is bounded by the global model's size; an update that is malformed, names other layers, has other
    shapes or non-finite values raises :class:`~flclient.UpdateCodecError` (the caller rejects that device).
    """
    _, delta = decode_update(payload, max_coords=sum(int(np.size(v)) for v in base.values()))
    if set(delta) != set(base):
        raise UpdateCodecError("the update's layers differ from the global model")
    out: dict[str, np.ndarray] = {}
    for name, ref in base.items():
        d = delta[name]
        if d.shape != np.shape(ref):
            raise UpdateCodecError(f"layer {name!r} has shape {d.shape}, the global model {np.shape(ref)}")
        if not np.all(np.isfinite(d)):
            raise UpdateCodecError(f"layer {name!r} has non-finite values")
        out[name] = (np.asarray(ref, dtype=np.float32) + d).astype(np.asarray(ref).dtype)
    return out
