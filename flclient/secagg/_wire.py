"""Bounds-checked reading of binary messages: every parser in this package reads through :class:`Reader`."""

from __future__ import annotations

import struct
from typing import Any

from .._errors import SecAggProtocolError

__all__ = ["Reader"]

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class Reader:
    """A cursor over bytes that raises :class:`~flclient.SecAggProtocolError` instead of reading past the end."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._buf = memoryview(data)
        self._pos = 0
        self._what = what

    def take(self, size: int) -> memoryview:
        """The next ``size`` bytes."""
        if size < 0 or self._pos + size > len(self._buf):
            raise SecAggProtocolError(f"{self._what} is truncated")
        out = self._buf[self._pos : self._pos + size]
        self._pos += size
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        """The next fixed-size struct."""
        return fmt.unpack(self.take(fmt.size))

    def u32(self) -> int:
        """The next little-endian unsigned 32-bit integer."""
        return int(_U32.unpack(self.take(4))[0])

    def u16(self) -> int:
        """The next little-endian unsigned 16-bit integer."""
        return int(_U16.unpack(self.take(2))[0])

    def count(self, item_size: int) -> int:
        """A u32 item count, refused when that many items of ``item_size`` bytes cannot fit in what is left."""
        n = self.u32()
        if n * item_size > len(self._buf) - self._pos:
            raise SecAggProtocolError(f"{self._what} announces more items than it holds")
        return n

    def rest(self) -> memoryview:
        """Everything not read yet."""
        return self.take(len(self._buf) - self._pos)

    def finish(self) -> None:
        """Refuse trailing bytes."""
        if self._pos != len(self._buf):
            raise SecAggProtocolError(f"{self._what} has {len(self._buf) - self._pos} trailing bytes")
