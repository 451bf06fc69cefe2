"""Build frozen config dataclasses from TOML tables: unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .._errors import PolicyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["from_table", "load_toml"]

T = TypeVar("T")


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; unreadable or malformed files raise :class:`PolicyError` naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise PolicyError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), f"not valid TOML: {exc}") from exc


def _convert(value: Any, hint: Any, where: str, base: Any = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _convert(value, non_none[0], where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a table")
        return from_table(hint, value, where, base=base)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be an array")
        item = args[0]
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number")
        if math.isnan(float(value)):
            raise ValueError(f"{where} must not be NaN")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {where}")  # a bug in a dataclass, not in the file


def from_table(cls: type[T], table: Mapping[str, Any], where: str = "", *, base: T | None = None) -> T:
    """Build ``cls`` (a dataclass) from ``table``; raises ``ValueError`` naming the offending key.

    With ``base``, keys the table leaves out keep ``base``'s values (nested tables overlay recursively), so a file
    only states what differs from the defaults.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - names)
    if unknown:
        raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {where or 'table'}")
    kwargs = {
        k: _convert(v, hints[k], f"{where}.{k}" if where else k, getattr(base, k) if base is not None else None)
        for k, v in table.items()
    }
    if base is not None:
        return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]
    return cls(**kwargs)
