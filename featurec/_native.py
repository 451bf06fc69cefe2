"""Run the native (host) build of a feature crate through ctypes, with the same ABI as the module.

The same Rust source compiled for the host is the reference the WASM module must match bit for bit, and
the speed the module is measured against. Pointers are ``usize`` natively, so the column table is an
array of ``size_t``; columns live in numpy arrays, so no copies are needed.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flclient.features._abi import (
    ABI_VERSION,
    EXPORT_ABI_VERSION,
    EXPORT_EXTRACT,
    EXPORT_MANIFEST_LEN,
    EXPORT_MANIFEST_PTR,
    BatchStatus,
    Manifest,
    RowStatus,
)

from ._errors import BuildError

__all__ = ["NativeFeatureLibrary"]


class NativeFeatureLibrary:
    """A feature crate's native cdylib, loaded with ctypes. Trusted code: no sandbox."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise BuildError(f"cannot load native library {self.path}: {exc}") from exc
        lib = self._lib
        for name in (EXPORT_ABI_VERSION, EXPORT_MANIFEST_LEN):
            getattr(lib, name).restype = ctypes.c_int32
        getattr(lib, EXPORT_MANIFEST_PTR).restype = ctypes.c_void_p
        self._extract = getattr(lib, EXPORT_EXTRACT)
        self._extract.restype = ctypes.c_int32
        self._extract.argtypes = [ctypes.c_int32, ctypes.c_void_p]
        version = getattr(lib, EXPORT_ABI_VERSION)()
        if version != ABI_VERSION:
            raise BuildError(f"{self.path} speaks ABI {version}, expected {ABI_VERSION}")
        length = getattr(lib, EXPORT_MANIFEST_LEN)()
        ptr = getattr(lib, EXPORT_MANIFEST_PTR)()
        self.manifest = Manifest.from_bytes(ctypes.string_at(ptr, length), module=self.path.name)

    def extract_into(
        self,
        inputs: list[np.ndarray[Any, Any]],
        outputs: list[np.ndarray[Any, Any]],
        status: np.ndarray[Any, Any],
        table: np.ndarray[Any, Any],
    ) -> None:
        """Lowest-overhead call: prepared contiguous arrays and a preallocated size_t table (for benchmarks)."""
        for i, arr in enumerate((*inputs, *outputs, status)):
            table[i] = arr.ctypes.data
        rc = self._extract(len(status), table.ctypes.data)
        if rc != BatchStatus.OK:
            raise BuildError(f"native flf1_extract returned batch status {rc}")

    def prepare(self, columns: Mapping[str, Any]) -> tuple[list[np.ndarray[Any, Any]], int]:
        """Convert named inputs to contiguous arrays of the manifest's dtypes."""
        arrays = []
        for col in self.manifest.inputs:
            arr = np.asarray(columns[col.name])
            if col.dtype == "ascii":
                arr = np.ascontiguousarray(arr.astype(col.numpy_dtype))
            else:
                arr = np.ascontiguousarray(arr, dtype=col.element_dtype)
            arrays.append(arr)
        return arrays, len(arrays[0])

    def extract(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Same contract as ``FeatureModule.extract`` (outputs of non-OK rows are zero)."""
        inputs, n = self.prepare(columns)
        outputs = [np.zeros((n, *c.row_shape), dtype=c.numpy_dtype) for c in self.manifest.outputs]
        status = np.zeros(n, dtype=np.uint8)
        table = np.zeros(len(inputs) + len(outputs) + 1, dtype=np.uintp)
        self.extract_into(inputs, outputs, status, table)
        bad = status != RowStatus.OK
        result = {c.name: arr for c, arr in zip(self.manifest.outputs, outputs, strict=True)}
        for arr in result.values():
            arr[bad] = np.zeros((), dtype=arr.dtype)
        result["status"] = status
        return result
