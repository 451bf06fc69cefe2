"""Key derivation and mask expansion: a 32-byte key -> ``dim`` uint32 words of ChaCha20 (or AES-256-CTR) keystream.

All mask arithmetic is uint32 with wrap-around; reducing mod 2^b at the end is exact because 2^b divides 2^32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["MaskExpander", "derive_key"]

U32 = npt.NDArray[np.uint32]
_ZERO_NONCE = bytes(16)


def derive_key(secret: bytes, *, round_id: bytes, label: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` salted with the round id; ``label`` separates the uses of one secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=round_id, info=b"flclient-secagg/v1 " + label).derive(secret)


class MaskExpander:
    """Adds or subtracts keystream masks into a uint32 accumulator, reusing its buffers across masks.

    A key is used for exactly one mask, so the fixed zero nonce never repeats under one key.
    """

    def __init__(self, dim: int, prg: str = "chacha20") -> None:
        if prg not in ("chacha20", "aes-ctr"):
            raise ValueError(f"unknown prg {prg!r}")
        self.dim = dim
        self.prg = prg
        self._zeros = bytes(4 * dim)
        self._buf = bytearray(4 * dim + 64)
        self._view: U32 = np.frombuffer(self._buf, dtype="<u4", count=dim)

    def _cipher(self, key: bytes) -> Cipher[modes.CTR | None]:
        if self.prg == "chacha20":
            return Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None)
        return Cipher(algorithms.AES(key), mode=modes.CTR(_ZERO_NONCE))

    def mask(self, key: bytes) -> U32:
        """The mask of ``key`` (a view into a reused buffer: copy it to keep it)."""
        self._cipher(key).encryptor().update_into(self._zeros, self._buf)
        return self._view

    def add(self, acc: U32, key: bytes, sign: int = 1) -> None:
        """``acc += sign * mask(key)`` mod 2^32, in place."""
        m = self.mask(key)
        if sign >= 0:
            np.add(acc, m, out=acc)
        else:
            np.subtract(acc, m, out=acc)
