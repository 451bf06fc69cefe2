"""Reading a record's values as typed fields: one set of converters for every key, strict about types and names.

:class:`ValueReader` hands out each key once and remembers which it read; :meth:`ValueReader.finish` refuses the
keys nobody asked for. Every refusal is a :class:`~flclient.ProtocolError` naming the record and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .._errors import ProtocolError
from .._json import loads_untrusted

__all__ = ["ValueReader", "loads_json"]

T = TypeVar("T", bound=str)

_MAX_JSON_BYTES = 4 * 1024 * 1024
_MAX_JSON_DEPTH = 32


def loads_json(text: str, *, where: str) -> Any:
    """Parse JSON from a config value with bounded size and depth, strict numbers and unique keys (hostile input
    must not recurse, balloon or read as something else); raises :class:`~flclient.ProtocolError` naming ``where``."""
    if len(text) > _MAX_JSON_BYTES:
        raise ProtocolError(where, f"{where} is {len(text)} characters of JSON; at most {_MAX_JSON_BYTES} are read")
    try:
        return loads_untrusted(text, max_depth=_MAX_JSON_DEPTH)
    except ValueError as exc:
        raise ProtocolError(where, f"{where} is not valid JSON: {exc}") from exc


class ValueReader:
    """Typed access to one record's values (``where`` names the record in messages)."""

    def __init__(self, values: Mapping[str, Any], *, where: str) -> None:
        if not isinstance(values, Mapping):
            raise ProtocolError(where, f"{where} must be a record of named values, got {type(values).__name__}")
        self._values = values
        self._read: set[str] = set()
        self.where = where

    def has(self, key: str) -> bool:
        """Whether the record holds ``key`` (marks it read)."""
        self._read.add(key)
        return key in self._values

    def _get(self, key: str) -> Any:
        self._read.add(key)
        value = self._values.get(key)
        if value is None and key in self._values:  # a JSON null is not "absent": no field of ours is ever null
            raise ProtocolError(key, f"{self.where} {key!r} must not be null")
        return value

    def _bad(self, key: str, expected: str, value: Any) -> ProtocolError:
        return ProtocolError(key, f"{self.where} {key!r} must be {expected}, got {_show(value)}")

    def _missing(self, key: str) -> ProtocolError:
        return ProtocolError(key, f"{self.where} lacks the required key {key!r}")

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
    ) -> float:
        """A finite int or float (never a bool or a string)."""
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        number = _finite(value)
        if number is None:
            raise self._bad(key, "a finite number", value)
        value = number
        if minimum is not None and value < minimum:
            raise self._bad(key, f"a number >= {minimum}", value)
        if maximum is not None and value > maximum:
            raise self._bad(key, f"a number <= {maximum}", value)
        if above is not None and not value > above:
            raise self._bad(key, f"a number > {above}", value)
        return number

    def whole(
        self, key: str, default: int | None = None, *, minimum: int | None = None, maximum: int = 2**63 - 1
    ) -> int:
        """A whole number (an int, or a float with no fraction, as run configs send them)."""
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        ok = not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value == int(value))
        )
        if not ok:
            raise self._bad(key, "a whole number", value)
        number = int(value)
        if (minimum is not None and number < minimum) or number > maximum:
            low = "" if minimum is None else f" >= {minimum}"
            raise self._bad(key, f"a whole number{low} and <= {maximum}", value)
        return number

    def text(self, key: str, default: str | None = None, *, max_len: int = 4096) -> str:
        """A string."""
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        if len(value) > max_len:
            raise self._bad(key, f"a string of at most {max_len} characters", f"{len(value)} characters")
        return value

    def optional_text(self, key: str, *, max_len: int = 4096) -> str | None:
        """A string, or None when absent."""
        return self.text(key, max_len=max_len) if self.has(key) else None

    def choice(self, key: str, choices: Sequence[T], default: T | None = None) -> T:
        """One of ``choices``."""
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        for c in choices:
            if value == c:
                return c
        raise self._bad(key, "one of " + ", ".join(repr(c) for c in choices), value)

    def blob(self, key: str) -> bytes | None:
        """Bytes, or None when absent."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise self._bad(key, "bytes", value)
        return value

    def numbers(self, key: str) -> tuple[float, ...] | None:
        """A list of finite numbers, or None when absent."""
        value = self._get(key)
        if value is None:
            return None
        numbers = [_finite(v) for v in value] if isinstance(value, list) else [None]
        if not all(n is not None for n in numbers):
            raise self._bad(key, "a list of finite numbers", value)
        return tuple(n for n in numbers if n is not None)

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings (empty when absent)."""
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings", value)
        return tuple(value)

    def wholes(self, key: str) -> tuple[int, ...]:
        """A list of whole numbers (empty when absent)."""
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self._bad(key, "a list of whole numbers", value)
        return tuple(value)

    def finish(self) -> None:
        """Refuse any key that no field read."""
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            raise ProtocolError(
                unknown[0],
                f"{self.where} has unknown key(s) {', '.join(repr(k) for k in unknown)}: device and server must "
                "run the same flclient release",
            )


def _finite(value: Any) -> float | None:
    """``value`` as a finite float; None for a bool, a non-number, NaN, an infinity or an int past float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # float(10**400): math.isfinite() would raise the same
        return None
    return number if math.isfinite(number) else None


def _show(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 256:  # repr() refuses ints of more than 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
