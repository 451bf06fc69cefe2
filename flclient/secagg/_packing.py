"""Packing values of ``b`` bits (``1 <= b <= 32``) into ``ceil(count * b / 8)`` bytes, little-endian bit order."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._errors import SecAggProtocolError

__all__ = ["pack_bits", "packed_size", "unpack_bits"]

U32 = npt.NDArray[np.uint32]


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits occupy."""
    return -(-count * bits // 8)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")


def pack_bits(values: U32, bits: int) -> bytes:
    """Pack uint32 values, each below ``2^bits``, back to back: value ``i`` occupies bits ``[i*b, (i+1)*b)``."""
    _check_bits(bits)
    v = np.ascontiguousarray(values, dtype="<u4").reshape(-1)
    if bits < 32 and v.size and int(v.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    if bits in (8, 16, 32):
        return v.astype(f"<u{bits // 8}").tobytes()
    if bits % 4 == 0:
        # Two values per uint64 word take 2b bits, a whole number of bytes: keep the low bytes of each word.
        if v.size % 2:
            v = np.concatenate([v, np.zeros(1, dtype="<u4")])
        pairs = v.reshape(-1, 2).astype("<u8")
        words = pairs[:, 0] | (pairs[:, 1] << np.uint64(bits))
        nb = 2 * bits // 8
        out = words.view(np.uint8).reshape(-1, 8)[:, :nb].tobytes()
        return bytes(out[: packed_size(values.size, bits)])
    unpacked = np.unpackbits(v.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")[:, :bits]
    return np.packbits(unpacked.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | memoryview, bits: int, count: int) -> U32:
    """Inverse of :func:`pack_bits`; a wrong length or non-zero padding bits raise an error."""
    _check_bits(bits)
    if len(data) != packed_size(count, bits):
        raise SecAggProtocolError(f"packed vector is {len(data)} bytes, expected {packed_size(count, bits)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    spare = len(data) * 8 - count * bits
    if spare and int(raw[-1]) >> (8 - spare):
        raise SecAggProtocolError("packed vector has non-zero padding bits")
    if bits in (8, 16, 32):
        return raw.view(f"<u{bits // 8}").astype(np.uint32)
    if bits % 4 == 0:
        nb = 2 * bits // 8
        pairs = -(-count // 2)
        padded = np.zeros(pairs * nb, dtype=np.uint8)
        padded[: raw.size] = raw
        words8 = np.zeros((pairs, 8), dtype=np.uint8)
        words8[:, :nb] = padded.reshape(pairs, nb)
        words = words8.view("<u8").reshape(-1)
        mask = np.uint64((1 << bits) - 1)
        out = np.empty(pairs * 2, dtype=np.uint32)
        out[0::2] = words & mask
        out[1::2] = words >> np.uint64(bits)
        return out[:count]
    b = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    full = np.zeros((count, 32), dtype=np.uint8)
    full[:, :bits] = b
    return np.packbits(full, axis=1, bitorder="little").view("<u4").reshape(-1).astype(np.uint32)
