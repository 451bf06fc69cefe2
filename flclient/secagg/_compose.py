"""How SecAgg composes with the update pipeline: a flat layout of the layers, and refusing non-linear codecs.

Under SecAgg the server only ever sees a sum, so whatever a device does to its update must commute with
summation. Clipping (on the device) and central DP noise (on the server, added to the unmasked sum) do;
distributed DP is the discrete noise :class:`~flclient.secagg.SecAggDevice` adds before masking. A compression
codec with per-update scales, rotation seeds or entropy coding does not: it is refused with
:class:`~flclient.SecAggIncompatible`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .._errors import SecAggIncompatible

__all__ = ["check_update_stages", "flatten_update", "require_linear_codec", "unflatten_update"]

F32 = npt.NDArray[np.float32]
Layout = tuple[tuple[str, tuple[int, ...]], ...]


def require_linear_codec(codec: object) -> None:
    """Refuse ``codec`` unless it declares ``linear = True`` (decoding a sum of encodings gives the sum)."""
    if getattr(codec, "linear", False) is not True:
        name = getattr(codec, "name", type(codec).__name__)
        raise SecAggIncompatible(
            f"compression codec {name!r} is not linear, so masked encodings cannot be summed: with SecAgg on, "
            "leave compression out (the update is quantised into Z_2^b and packed in b bits per coordinate)"
        )


def check_update_stages(stages: Iterable[object]) -> None:
    """Refuse an update pipeline whose encode stage uses a non-linear codec (any stage with a ``codec``)."""
    for stage in stages:
        codec = getattr(stage, "codec", None)
        if codec is not None:
            require_linear_codec(codec)


def flatten_update(tensors: Mapping[str, npt.ArrayLike], names: Sequence[str] | None = None) -> tuple[F32, Layout]:
    """Concatenate layers (sorted by name unless ``names`` is given) into one float32 vector, with the layout."""
    order = sorted(tensors) if names is None else list(names)
    arrays = [np.asarray(tensors[k], dtype=np.float32) for k in order]
    layout = tuple((k, tuple(a.shape)) for k, a in zip(order, arrays, strict=True))
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype=np.float32)
    return flat, layout


def unflatten_update(flat: npt.ArrayLike, layout: Layout) -> dict[str, F32]:
    """Inverse of :func:`flatten_update`."""
    v = np.asarray(flat, dtype=np.float32).reshape(-1)
    need = sum(math.prod(shape) for _, shape in layout)
    if v.size != need:
        raise ValueError(f"the vector has {v.size} values; the layout needs {need}")
    out: dict[str, F32] = {}
    pos = 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = v[pos : pos + size].reshape(shape)
        pos += size
    return out
