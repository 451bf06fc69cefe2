"""Golden vectors: committed inputs and expected outputs of a feature module, as JSON.

File format (``<crate>/golden/vectors.json``)::

    {"inputs":   {"<column>": [row, ...], ...},
     "expected": {"<column>": [row, ...], ..., "status": [0, 1, ...]}}

A row is a number (scalar column), a list of numbers (vector column) or a string (ascii column).
Non-finite floats are the strings "NaN", "Infinity" and "-Infinity". Floats are written with Python's
shortest round-trip repr, so f32 and f64 values survive a round trip exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flclient.features._abi import Column, Manifest

from ._errors import CrateError

__all__ = ["columns_from_json", "columns_to_json", "compare", "dumps_golden", "loads_golden"]

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_to_json(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _float_from_json(v: Any, where: str) -> float:
    if isinstance(v, str):
        if v not in _NONFINITE:
            raise CrateError(f"{where}: {v!r} is not a number (non-finite floats are 'NaN', 'Infinity', '-Infinity')")
        return _NONFINITE[v]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CrateError(f"{where}: {v!r} is not a number")
    return float(v)


def columns_to_json(columns: Sequence[Column], data: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for col in columns:
        arr = data[col.name]
        if col.dtype == "ascii":
            out[col.name] = [bytes(b).decode("ascii") for b in arr]
        elif col.element_dtype.kind == "f":
            values = [[_float_to_json(float(x)) for x in row] for row in arr.reshape(len(arr), col.width)]
            out[col.name] = [v if col.shape else v[0] for v in values]
        else:
            out[col.name] = arr.tolist()
    return out


def columns_from_json(columns: Sequence[Column], obj: Any, where: str) -> dict[str, np.ndarray[Any, Any]]:
    if not isinstance(obj, dict):
        raise CrateError(f"{where} must be an object of columns")
    result: dict[str, np.ndarray[Any, Any]] = {}
    for col in columns:
        if col.name not in obj:
            raise CrateError(f"{where} has no column {col.name!r}")
        rows = obj[col.name]
        if not isinstance(rows, list):
            raise CrateError(f"{where}.{col.name} must be a list of rows")
        at = f"{where}.{col.name}"
        try:
            if col.dtype == "ascii":
                if not all(isinstance(r, str) and len(r) <= col.width for r in rows):
                    raise CrateError(f"{at}: rows must be strings of at most {col.width} characters")
                result[col.name] = np.array([r.encode("ascii") for r in rows], dtype=col.numpy_dtype)
                continue
            if col.shape:
                if not all(isinstance(r, list) and len(r) == col.width for r in rows):
                    raise CrateError(f"{at}: every row must be a list of {col.width} numbers")
                flat = [x for r in rows for x in r]
            else:
                flat = list(rows)
            if col.element_dtype.kind == "f":
                values = [_float_from_json(x, at) for x in flat]
                arr = np.array(values, dtype=np.float64).astype(col.element_dtype)
            else:
                if not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
                    raise CrateError(f"{at}: rows must be integers")
                info = np.iinfo(col.element_dtype)
                if any(not info.min <= x <= info.max for x in flat):
                    raise CrateError(f"{at}: a value is outside the {col.dtype} range")
                arr = np.array(flat, dtype=col.element_dtype)
        except (UnicodeEncodeError, OverflowError) as exc:
            raise CrateError(f"{at}: {exc}") from exc
        result[col.name] = arr.reshape(len(rows), *col.row_shape)
    lengths = {len(a) for a in result.values()}
    if len(lengths) > 1:
        raise CrateError(f"{where}: columns have different numbers of rows")
    return result


_STATUS = Column(name="row_status", dtype="u8")


def loads_golden(text: str | bytes, manifest: Manifest) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse a golden file into (inputs, expected outputs incl. ``status``)."""
    try:
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CrateError(f"golden vectors are not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or "inputs" not in obj or "expected" not in obj:
        raise CrateError("golden vectors need top-level 'inputs' and 'expected' objects")
    inputs = columns_from_json(manifest.inputs, obj["inputs"], "inputs")
    expected_obj = obj["expected"]
    if isinstance(expected_obj, dict) and "status" in expected_obj:
        expected_obj = {**expected_obj, _STATUS.name: expected_obj["status"]}
    expected = columns_from_json((*manifest.outputs, _STATUS), expected_obj, "expected")
    expected["status"] = expected.pop(_STATUS.name)
    n_in = {len(a) for a in inputs.values()}
    n_out = {len(a) for a in expected.values()}
    if n_in != n_out:
        raise CrateError(f"golden vectors have {n_in} input rows but {n_out} expected rows")
    return inputs, expected


def dumps_golden(manifest: Manifest, inputs: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    exp = columns_to_json(manifest.outputs, expected)
    exp["status"] = np.asarray(expected["status"]).tolist()
    obj = {"inputs": columns_to_json(manifest.inputs, inputs), "expected": exp}
    return json.dumps(obj, indent=1) + "\n"


def _same(col_dtype: np.dtype[Any], a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per-row equality: bit-exact, except that any NaN equals any NaN (payloads are not portable)."""
    if a.shape != b.shape:
        return np.zeros(len(a), dtype=bool)
    if col_dtype.kind == "f":
        bits = np.dtype(f"<u{col_dtype.itemsize}")
        eq = (a.view(bits) == b.view(bits)) | (np.isnan(a) & np.isnan(b))
    else:
        eq = a == b
    result: np.ndarray[Any, Any] = eq.reshape(len(a), -1).all(axis=1) if eq.ndim > 1 else eq
    return result


def compare(manifest: Manifest, got: Mapping[str, Any], want: Mapping[str, Any]) -> list[tuple[int, str, Any, Any]]:
    """Every (row, column, got, want) that differs, in row order."""
    diffs: list[tuple[int, str, Any, Any]] = []
    cols = [(c.name, c.numpy_dtype) for c in manifest.outputs] + [("status", np.dtype(np.uint8))]
    for name, dtype in cols:
        a, b = np.asarray(got[name]), np.asarray(want[name])
        eq = _same(dtype, a, b)
        if eq.shape != (len(a),):
            diffs.append((0, name, a.shape, b.shape))
            continue
        for row in np.flatnonzero(~eq):
            diffs.append((int(row), name, a[row].tolist(), b[row].tolist()))
    diffs.sort(key=lambda d: d[0])
    return diffs
