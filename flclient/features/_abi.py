"""Feature ABI version 1: the one definition shared by the host (flclient) and the compiler (featurec).

The prose contract is ``docs/feature-abi.md``; this module is its executable form. Keep them in step.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import FeatureManifestError
from .._json import loads_untrusted

__all__ = [
    "ABI_VERSION",
    "ALLOWED_IMPORTS",
    "BUILD_SECTION",
    "DTYPES",
    "EXPORT_ABI_VERSION",
    "EXPORT_ALLOC",
    "EXPORT_EXTRACT",
    "EXPORT_FREE",
    "EXPORT_MANIFEST_LEN",
    "EXPORT_MANIFEST_PTR",
    "EXPORT_MEMORY",
    "EXPORT_SIGNATURES",
    "MANIFEST_SECTION",
    "BatchStatus",
    "Column",
    "Manifest",
    "RowStatus",
]

ABI_VERSION = 1

# Exports. `flf_abi_version` is deliberately unversioned so any host can ask any module.
EXPORT_MEMORY = "memory"
EXPORT_ABI_VERSION = "flf_abi_version"
EXPORT_MANIFEST_PTR = "flf1_manifest_ptr"
EXPORT_MANIFEST_LEN = "flf1_manifest_len"
EXPORT_ALLOC = "flf1_alloc"
EXPORT_FREE = "flf1_free"
EXPORT_EXTRACT = "flf1_extract"

#: Function exports and their (params, results) as wasm value types.
EXPORT_SIGNATURES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    EXPORT_ABI_VERSION: ((), ("i32",)),
    EXPORT_MANIFEST_PTR: ((), ("i32",)),
    EXPORT_MANIFEST_LEN: ((), ("i32",)),
    EXPORT_ALLOC: (("i32",), ("i32",)),
    EXPORT_FREE: (("i32", "i32"), ()),
    EXPORT_EXTRACT: (("i32", "i32"), ("i32",)),
}

#: Imports a v1 module may have, as (module, name) pairs: none. A feature is a pure function of its rows.
ALLOWED_IMPORTS: frozenset[tuple[str, str]] = frozenset()

MANIFEST_SECTION = "flfeature.manifest.v1"
BUILD_SECTION = "flfeature.build.v1"

#: ABI dtype name -> numpy dtype of one element (little-endian).
DTYPES: Mapping[str, np.dtype[Any]] = {
    "u8": np.dtype("<u1"),
    "i8": np.dtype("<i1"),
    "u16": np.dtype("<u2"),
    "i16": np.dtype("<i2"),
    "u32": np.dtype("<u4"),
    "i32": np.dtype("<i4"),
    "u64": np.dtype("<u8"),
    "i64": np.dtype("<i8"),
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "ascii": np.dtype("<u1"),
}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
_MAX_VECTOR = 1 << 20
_MAX_COLUMNS = 256
MAX_MANIFEST_BYTES = 1 << 20
#: A manifest nests 4 deep ({"inputs": [{"shape": [k]}]}); deeper JSON is refused before it is parsed.
MAX_MANIFEST_DEPTH = 16


class RowStatus(enum.IntEnum):
    """Per-row status written by the module into the status column."""

    OK = 0
    INVALID_INPUT = 1
    NON_FINITE_INPUT = 2
    FEATURE_ERROR = 3


class BatchStatus(enum.IntEnum):
    """Return value of ``flf1_extract``."""

    OK = 0
    BAD_ARGUMENT = 1
    INTERNAL = 2


@dataclass(frozen=True, kw_only=True)
class Column:
    """One input or output column: ``dtype`` per element, ``shape`` per row (``()`` = scalar)."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    unit: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name == "status":
            raise ValueError(f"column name {self.name!r} must match [a-z][a-z0-9_]{{0,63}} and must not be 'status'")
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name!r}: unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}")
        if len(self.shape) > 1 or any(not 1 <= k <= _MAX_VECTOR for k in self.shape):
            raise ValueError(f"column {self.name!r}: shape must be [] or [k] with 1 <= k <= {_MAX_VECTOR}")
        if self.dtype == "ascii" and len(self.shape) != 1:
            raise ValueError(f"column {self.name!r}: an ascii column needs shape [k] (its width in bytes)")

    @property
    def width(self) -> int:
        """Elements per row."""
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.width * DTYPES[self.dtype].itemsize

    @property
    def element_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype]

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The dtype of one row as the host returns it (``S<k>`` for ascii)."""
        if self.dtype == "ascii":
            return np.dtype(f"S{self.width}")
        return DTYPES[self.dtype]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row in the host's numpy arrays (``()`` for scalars and ascii)."""
        return () if self.dtype == "ascii" else self.shape

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "unit": self.unit,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Column:
        if not isinstance(obj, dict):
            raise ValueError(f"{where} must be an object")
        unknown = set(obj) - {"name", "dtype", "shape", "unit", "description"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
        for key, typ in (("name", str), ("dtype", str), ("shape", list), ("unit", str), ("description", str)):
            if key in obj and not isinstance(obj[key], typ):
                raise ValueError(f"{where}.{key} must be a {typ.__name__}")
        if "name" not in obj or "dtype" not in obj:
            raise ValueError(f"{where} needs 'name' and 'dtype'")
        shape = obj.get("shape", [])
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in shape):
            raise ValueError(f"{where}.shape must be a list of integers")
        return cls(
            name=obj["name"],
            dtype=obj["dtype"],
            shape=tuple(shape),
            unit=obj.get("unit", ""),
            description=obj.get("description", ""),
        )


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a feature module declares about itself (see docs/feature-abi.md)."""

    name: str
    version: str
    abi_version: int = ABI_VERSION
    description: str = ""
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"module name {self.name!r} must match [a-z][a-z0-9_]{{0,63}}")
        if not _SEMVER.fullmatch(self.version):
            raise ValueError(f"version {self.version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        if not self.inputs or not self.outputs:
            raise ValueError("a feature module needs at least one input and one output column")
        if len(self.inputs) + len(self.outputs) > _MAX_COLUMNS:
            raise ValueError(f"a feature module may have at most {_MAX_COLUMNS} columns")
        names = [c.name for c in (*self.inputs, *self.outputs)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column names must be unique; repeated: {dupes}")

    @property
    def row_bytes(self) -> int:
        """Bytes of linear memory one row needs (inputs, outputs and status)."""
        return sum(c.row_bytes for c in (*self.inputs, *self.outputs)) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "abi_version": self.abi_version,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "inputs": [c.to_json() for c in self.inputs],
            "outputs": [c.to_json() for c in self.outputs],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, module: str = "<module>") -> Manifest:
        """Parse and validate a manifest; any problem raises :class:`FeatureManifestError`."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise FeatureManifestError(module, f"manifest is {len(data)} bytes (limit {MAX_MANIFEST_BYTES})")
        try:
            obj = loads_untrusted(data, max_depth=MAX_MANIFEST_DEPTH)
        except ValueError as exc:
            raise FeatureManifestError(module, f"manifest is not valid UTF-8 JSON: {exc}") from exc
        try:
            return cls.from_json(obj)
        except ValueError as exc:
            raise FeatureManifestError(module, f"invalid manifest: {exc}") from exc

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise ValueError("the manifest must be a JSON object")
        required = {"abi_version", "name", "version", "inputs", "outputs"}
        missing = required - set(obj)
        if missing:
            raise ValueError(f"missing keys {sorted(missing)}")
        unknown = set(obj) - required - {"description"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        abi = obj["abi_version"]
        if not isinstance(abi, int) or isinstance(abi, bool):
            raise ValueError("abi_version must be an integer")
        for key in ("name", "version"):
            if not isinstance(obj[key], str):
                raise ValueError(f"{key} must be a string")
        if not isinstance(obj.get("description", ""), str):
            raise ValueError("description must be a string")
        for key in ("inputs", "outputs"):
            if not isinstance(obj[key], list):
                raise ValueError(f"{key} must be a list of columns")
        return cls(
            name=obj["name"],
            version=obj["version"],
            abi_version=abi,
            description=obj.get("description", ""),
            inputs=tuple(Column.from_json(c, f"inputs[{i}]") for i, c in enumerate(obj["inputs"])),
            outputs=tuple(Column.from_json(c, f"outputs[{i}]") for i, c in enumerate(obj["outputs"])),
        )

    def column(self, name: str) -> Column:
        for c in (*self.inputs, *self.outputs):
            if c.name == name:
                return c
        raise KeyError(name)


def describe_columns(columns: Sequence[Column]) -> str:
    """``name:dtype[shape]`` list, for messages."""
    return ", ".join(f"{c.name}:{c.dtype}{list(c.shape) if c.shape else ''}" for c in columns)
