"""Randomised Hadamard rotation of a flat vector, in power-of-two blocks, from a shared seed.

The transform is applied as a chain of small dense Hadamard factors (H_n = H_a (x) H_b (x) ...), each one a
BLAS matrix product: numpy has no fast Walsh-Hadamard transform, and 20 butterfly passes over a 4 MiB vector
cost several times more than four products with 32 x 32 matrices.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_BLOCK_LOG2", "MIN_BLOCK_LOG2", "block_sizes", "hadamard", "rotation_signs"]

F32 = npt.NDArray[np.float32]

MAX_BLOCK_LOG2 = 20
"""Largest block rotated as a whole (2^20 coordinates); longer vectors are rotated in blocks of this size."""
MIN_BLOCK_LOG2 = 6
"""Smallest block; a tail shorter than 2^6 is zero-padded to it."""
_MAX_FACTOR_LOG2 = 4  # 16 x 16 factors measured fastest (five products for 2^20)


def block_sizes(n: int) -> list[int]:
    """Power-of-two blocks covering ``n`` coordinates: full 2^20 blocks, then the binary digits of the rest.

    The last block may extend past ``n`` (zero padding, fewer than 2^6 coordinates).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    sizes = [1 << MAX_BLOCK_LOG2] * (n >> MAX_BLOCK_LOG2)
    rest = n & ((1 << MAX_BLOCK_LOG2) - 1)
    for bit in range(MAX_BLOCK_LOG2 - 1, MIN_BLOCK_LOG2 - 1, -1):
        if rest & (1 << bit):
            sizes.append(1 << bit)
    if rest & ((1 << MIN_BLOCK_LOG2) - 1):
        sizes.append(1 << MIN_BLOCK_LOG2)
    return sizes


@functools.cache
def _sylvester(size: int) -> F32:
    h = np.ones((1, 1), dtype=np.float32)
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    h.setflags(write=False)
    return h


def _factors(size: int) -> list[int]:
    k = size.bit_length() - 1
    parts = max(1, math.ceil(k / _MAX_FACTOR_LOG2))
    base, extra = divmod(k, parts)
    return [1 << (base + (1 if i < extra else 0)) for i in range(parts)]


def hadamard(x: F32) -> F32:
    """Orthonormal Walsh-Hadamard transform of each row of ``x`` (shape ``(rows, 2^k)``); its own inverse."""
    rows, size = x.shape
    if size & (size - 1) or size == 0:
        raise ValueError(f"row length must be a power of two, got {size}")
    factors = _factors(size)
    y = x.reshape(-1, factors[-1]) @ _sylvester(factors[-1])
    inner = factors[-1]
    for f in reversed(factors[:-1]):
        y = np.matmul(_sylvester(f), y.reshape(-1, f, inner))
        inner *= f
    y = y.reshape(rows, size)
    y *= np.float32(1.0 / math.sqrt(size))
    return y


def rotation_signs(seed: int, n: int) -> F32:
    """``n`` random signs (+1/-1 as float32) from ``seed``, reproducible across numpy versions.

    The raw PCG64 output stream is fixed by numpy's compatibility policy (the distribution methods are not),
    so the signs are taken from its bits directly.
    """
    words = np.random.PCG64(seed).random_raw((n + 63) // 64)
    bits = np.unpackbits(np.asarray(words, dtype="<u8").view(np.uint8))[:n]
    signs: F32 = np.float32(1.0) - np.float32(2.0) * bits.astype(np.float32)
    return signs
