"""Checks shared by every TOML table of the device configuration: known keys, and paths relative to the file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._errors import DeviceConfigError

__all__ = ["check_keys", "config_path"]


def check_keys(
    raw: Mapping[str, Any], table: str, known: Iterable[str], error: type[Exception] = DeviceConfigError
) -> None:
    """Raise ``error`` naming the keys of ``[table]`` that are not ``known``, and the known ones."""
    known = set(known)
    unknown = set(raw) - known
    if unknown:
        raise error(f"unknown key(s) in [{table}]: {sorted(unknown)}; known: {sorted(known)}")


def config_path(value: object, where: str, base_dir: Path, error: type[Exception] = DeviceConfigError) -> Path:
    """A path string from the configuration (``where`` names its key), ``~`` expanded, relative to ``base_dir``."""
    if not isinstance(value, str) or not value:
        raise error(f"{where} must be a path string, got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p
