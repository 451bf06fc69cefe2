"""Golomb-Rice coding of non-negative integers (the gaps between sorted sparse indices).

The unary quotients and the fixed-width remainders go to two separate bit streams: every 1 in the unary stream
ends a quotient, so decoding is ``flatnonzero`` + ``diff`` instead of a bit-serial parse.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["rice_decode", "rice_encode", "rice_parameter"]

I64 = npt.NDArray[np.int64]


def rice_parameter(gaps: I64) -> int:
    """The Rice parameter (remainder width) that codes ``gaps`` in the fewest bits."""
    if gaps.size == 0:
        return 0
    top = int(gaps.max()).bit_length()
    best, best_bits = 0, None
    for r in range(top + 1):
        bits = int(np.sum(gaps >> r)) + gaps.size * (1 + r)
        if best_bits is None or bits < best_bits:
            best, best_bits = r, bits
    return best


def rice_encode(gaps: I64, r: int) -> tuple[bytes, bytes]:
    """Unary stream (quotient zeros then a one, per gap) and remainder stream (``r`` bits each, MSB first)."""
    q = gaps >> r
    ends = np.cumsum(q + 1) - 1
    unary = np.zeros(int(ends[-1]) + 1 if gaps.size else 0, np.uint8)
    unary[ends] = 1
    if r:
        shifts = np.arange(r - 1, -1, -1, dtype=np.int64)
        rem = ((gaps[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    else:
        rem = np.zeros(0, np.uint8)
    return np.packbits(unary).tobytes(), np.packbits(rem).tobytes()


def rice_decode(unary: bytes, remainder: bytes, count: int, r: int, *, limit: int) -> I64:
    """Inverse of :func:`rice_encode` for ``count`` gaps whose indices stay below ``limit``.

    Raises ``ValueError`` when the streams do not hold exactly ``count`` values or the indices run past ``limit``.
    """
    bits = np.unpackbits(np.frombuffer(unary, np.uint8))
    ends = np.flatnonzero(bits)
    if len(ends) != count:
        raise ValueError(f"unary stream holds {len(ends)} values, expected {count}")
    if count and len(bits) - int(ends[-1]) - 1 >= 8:
        raise ValueError("unary stream has trailing bytes")
    if not count and len(unary):
        raise ValueError("unary stream should be empty")
    q = np.diff(ends, prepend=-1).astype(np.int64) - 1
    if len(remainder) != -(-count * r // 8):
        raise ValueError("remainder stream has the wrong length")
    if r:
        rb = np.unpackbits(np.frombuffer(remainder, np.uint8))[: count * r].reshape(count, r).astype(np.int64)
        rem = rb @ (np.int64(1) << np.arange(r - 1, -1, -1, dtype=np.int64))
    else:
        rem = np.zeros(count, np.int64)
    if count and r and int(q.max()) >= (1 << (62 - r)):
        raise ValueError("gap too large")
    gaps: I64 = (q << r) | rem
    # Bound every gap before summing: gaps near 2^62 would wrap the int64 sum below the limit.
    if count > limit or (count and int(gaps.max()) >= limit):
        raise ValueError("indices run past the vector length")
    total = int(np.sum(gaps + 1)) if count * limit < 1 << 63 else sum(gaps.tolist()) + count
    if total > limit:
        raise ValueError("indices run past the vector length")
    return gaps
