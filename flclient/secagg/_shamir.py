"""Shamir secret sharing of 32-byte secrets over the prime field F_p, p = 2^31 - 1, vectorised with numpy.

A secret is cut into 30-bit chunks (every chunk < p) and each chunk is shared with its own random polynomial of
degree ``t - 1``, evaluated for all recipients at once by Horner's rule in uint64 (products stay below 2^62).
Any ``t - 1`` shares of a chunk are uniform and independent of it, so each chunk, and the secret, is perfectly
hidden. A share of one secret is ``CHUNKS`` field elements, 4 bytes each.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from .._errors import SecAggProtocolError

__all__ = [
    "CHUNKS",
    "PRIME",
    "SHARE_BYTES",
    "combine",
    "decode_share",
    "elements_to_secret",
    "encode_share",
    "secret_to_elements",
    "split",
]

U64 = npt.NDArray[np.uint64]
RandomBytes = Callable[[int], bytes]

PRIME = (1 << 31) - 1
_CHUNK_BITS = 30
_SECRET_BYTES = 32
CHUNKS = -(-_SECRET_BYTES * 8 // _CHUNK_BITS)
SHARE_BYTES = 4 * CHUNKS
_CHUNK_MASK = (1 << _CHUNK_BITS) - 1


def secret_to_elements(secret: bytes) -> U64:
    """A 32-byte secret as ``CHUNKS`` field elements of 30 bits each."""
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"a secret is {_SECRET_BYTES} bytes, got {len(secret)}")
    v = int.from_bytes(secret, "little")
    return np.array([(v >> (_CHUNK_BITS * i)) & _CHUNK_MASK for i in range(CHUNKS)], dtype=np.uint64)


def elements_to_secret(elements: U64) -> bytes:
    """Inverse of :func:`secret_to_elements`; elements that no 32-byte secret produces raise an error."""
    if elements.shape != (CHUNKS,) or int(elements.max()) > _CHUNK_MASK:
        raise SecAggProtocolError("reconstructed shares do not form a secret (inconsistent or forged shares)")
    v = 0
    for i, e in enumerate(elements.tolist()):
        v |= int(e) << (_CHUNK_BITS * i)
    if v >> (8 * _SECRET_BYTES):
        raise SecAggProtocolError("reconstructed shares do not form a secret (inconsistent or forged shares)")
    return v.to_bytes(_SECRET_BYTES, "little")


def _uniform(shape: tuple[int, ...], random_bytes: RandomBytes) -> U64:
    """Uniform elements of F_p by rejection from 31-bit draws."""
    size = int(np.prod(shape))
    out = np.frombuffer(random_bytes(4 * size), dtype="<u4").astype(np.uint64) & np.uint64(PRIME)
    bad = np.flatnonzero(out == PRIME)
    while bad.size:
        out[bad] = np.frombuffer(random_bytes(4 * bad.size), dtype="<u4").astype(np.uint64) & np.uint64(PRIME)
        bad = bad[out[bad] == PRIME]
    shaped: U64 = out.reshape(shape)
    return shaped


def split(secrets: Sequence[bytes], threshold: int, xs: Sequence[int], random_bytes: RandomBytes) -> U64:
    """Shares of every secret for every evaluation point ``x`` in ``xs`` (distinct, in ``[1, p)``).

    Returns an array of shape ``(len(xs), len(secrets), CHUNKS)``; any ``threshold`` rows recover the secrets.
    """
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("evaluation points must be distinct and in [1, p)")
    constant = np.stack([secret_to_elements(s) for s in secrets]).reshape(-1)
    coeffs = _uniform((threshold - 1, constant.size), random_bytes)
    x = np.asarray(xs, dtype=np.uint64)[:, None]
    p = np.uint64(PRIME)
    acc = np.zeros((len(xs), constant.size), dtype=np.uint64)
    for c in coeffs[::-1]:
        acc = (acc + c) % p * x % p
    acc = (acc + constant) % p
    out: U64 = acc.reshape(len(xs), len(secrets), CHUNKS)
    return out


@lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(xs: Sequence[int], shares: U64) -> U64:
    """The constant terms (the secret's elements) from shares ``(len(xs), ..., CHUNKS)`` at points ``xs``."""
    if len(set(xs)) != len(xs) or len(xs) != shares.shape[0]:
        raise ValueError("need one share per distinct evaluation point")
    lam = np.asarray(_lagrange_at_zero(tuple(int(x) for x in xs)), dtype=np.uint64)
    p = np.uint64(PRIME)
    terms = lam.reshape((-1,) + (1,) * (shares.ndim - 1)) * (shares % p) % p
    out: U64 = np.sum(terms, axis=0, dtype=np.uint64) % p
    return out


def encode_share(share: U64) -> bytes:
    """One secret's share (``CHUNKS`` elements) as ``SHARE_BYTES`` little-endian bytes."""
    if share.shape != (CHUNKS,):
        raise ValueError(f"a share is {CHUNKS} elements")
    return struct.pack(f"<{CHUNKS}I", *share.tolist())


def decode_share(data: bytes | memoryview) -> U64:
    """Inverse of :func:`encode_share`; wrong length or elements outside F_p raise an error."""
    if len(data) != SHARE_BYTES:
        raise SecAggProtocolError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    out = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint64)
    if int(out.max()) >= PRIME:
        raise SecAggProtocolError("a share holds a value outside the field")
    return out
