"""Reading and writing feature columns as CSV or .npz files (for the CLI).

CSV: one header row. A scalar or ascii column is one CSV column named like the column; a vector column
``samples`` of width k is k CSV columns ``samples[0]`` .. ``samples[k-1]``. Floats are written in their
shortest round-trip form, so a CSV round trip is exact. ``.npz``: one array per column, shape (rows, ...).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_bytes
from ._abi import Column

__all__ = ["ColumnFileError", "csv_headers", "read_columns", "write_columns"]

# A line longer than this is refused before it is read whole (a row of 2^20 floats is about 25 MiB of text).
_MAX_LINE = 64 << 20


class ColumnFileError(ValueError):
    """The input file cannot be read as the module's columns; the message says where and why."""


def csv_headers(col: Column) -> list[str]:
    if col.dtype == "ascii" or not col.shape:
        return [col.name]
    return [f"{col.name}[{i}]" for i in range(col.width)]


def read_columns(path: Path, columns: Sequence[Column]) -> dict[str, np.ndarray[Any, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, columns)
    if suffix == ".csv":
        return _read_csv(path, columns)
    raise ColumnFileError(f"{path}: unsupported input format {suffix!r}; use .csv or .npz")


def _read_npz(path: Path, columns: Sequence[Column]) -> dict[str, np.ndarray[Any, Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [c.name for c in columns if c.name not in npz.files]
            if missing:
                raise ColumnFileError(f"{path}: missing array(s) {missing} (found {sorted(npz.files)})")
            return {c.name: npz[c.name] for c in columns}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ColumnFileError):
            raise
        raise ColumnFileError(f"{path}: not a readable .npz file: {exc}") from exc


def _read_csv(path: Path, columns: Sequence[Column]) -> dict[str, np.ndarray[Any, Any]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            # strict: an unterminated quote or text after a closing quote is an error, not a field read to the end
            return _parse_csv(path, columns, csv.reader(_bounded_lines(f, path), strict=True))
    except (OSError, UnicodeDecodeError) as exc:
        raise ColumnFileError(f"{path}: cannot read as UTF-8 text: {exc}") from exc


def _bounded_lines(f: io.TextIOBase, path: Path) -> Iterator[str]:
    """The file's lines, streamed, refusing one longer than ``_MAX_LINE`` before it is read whole."""
    lineno = 0
    while line := f.readline(_MAX_LINE + 1):
        lineno += 1
        if len(line) > _MAX_LINE:
            raise ColumnFileError(f"{path}: line {lineno} is longer than {_MAX_LINE} characters")
        yield line


def _parse_csv(path: Path, columns: Sequence[Column], reader: Any) -> dict[str, np.ndarray[Any, Any]]:
    try:
        header = next(reader)
    except StopIteration:
        raise ColumnFileError(f"{path}: the file is empty; the first line must name the columns") from None
    except csv.Error as exc:
        raise ColumnFileError(f"{path}: bad CSV: {exc}") from exc
    header = [h.strip() for h in header]
    index = {h: i for i, h in enumerate(header)}
    wanted = [h for c in columns for h in csv_headers(c)]
    missing = [h for h in wanted if h not in index]
    if missing:
        raise ColumnFileError(f"{path}: missing column(s) {missing} in the header (found {header})")
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row:
                continue  # tolerate blank lines
            if len(row) != len(header):
                lineno = len(rows) + 2
                raise ColumnFileError(f"{path}: line {lineno} has {len(row)} fields, the header has {len(header)}")
            rows.append(row)
    except csv.Error as exc:
        raise ColumnFileError(f"{path}: bad CSV at line {reader.line_num}: {exc}") from exc
    result: dict[str, np.ndarray[Any, Any]] = {}
    for col in columns:
        fields = csv_headers(col)
        if col.dtype == "ascii":
            cells = [r[index[col.name]] for r in rows]
            bad = next((i for i, v in enumerate(cells) if len(v) > col.width or not v.isascii()), None)
            if bad is not None:
                raise ColumnFileError(
                    f"{path}: line {bad + 2}, column {col.name!r}: {cells[bad]!r} is not ASCII of at most "
                    f"{col.width} characters"
                )
            result[col.name] = np.array([v.encode() for v in cells], dtype=col.numpy_dtype)
            continue
        parts = [_parse_cells(path, [r[index[f]].strip() for r in rows], col, f) for f in fields]
        arr = np.stack(parts, axis=1) if col.shape else parts[0]
        result[col.name] = arr
    return result


def _parse_cells(path: Path, cells: list[str], col: Column, field: str) -> np.ndarray[Any, Any]:
    dtype = col.element_dtype
    try:
        if dtype.kind == "f":
            wide = np.array(cells, dtype=np.float64)
            with np.errstate(over="ignore"):
                out = wide.astype(dtype)
            overflow = np.flatnonzero(np.isfinite(wide) & ~np.isfinite(out))
            if overflow.size:
                i = int(overflow[0])
                raise ColumnFileError(
                    f"{path}: line {i + 2}, column {field!r}: {cells[i]!r} is beyond the {col.dtype} range"
                )
            return out
        return np.array([int(v) for v in cells], dtype=dtype)
    except (ValueError, OverflowError):
        parse = float if dtype.kind == "f" else int
        for i, v in enumerate(cells):
            try:
                value = parse(v)
                if dtype.kind != "f":
                    np.array(value, dtype=dtype)
            except (ValueError, OverflowError):
                raise ColumnFileError(
                    f"{path}: line {i + 2}, column {field!r}: {v!r} is not a valid {col.dtype}"
                ) from None
        raise


def write_columns(path: Path, columns: Sequence[Column], data: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Write the given columns plus ``status`` atomically (.csv or .npz by suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        buf = io.BytesIO()
        arrays: dict[str, Any] = {c.name: data[c.name] for c in columns}
        arrays["status"] = data["status"]
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return
    if suffix != ".csv":
        raise ColumnFileError(f"{path}: unsupported output format {suffix!r}; use .csv or .npz")
    header: list[str] = []
    cells: list[np.ndarray[Any, Any]] = []
    for col in columns:
        header += csv_headers(col)
        arr = data[col.name]
        if col.dtype == "ascii":
            cells.append(np.char.decode(arr, "ascii").astype(object))
        else:
            flat = arr.reshape(len(arr), col.width)
            cells += [flat[:, i].astype(str).astype(object) for i in range(flat.shape[1])]
    header.append("status")
    cells.append(data["status"].astype(str).astype(object))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*cells, strict=True))
    atomic_write_bytes(path, out.getvalue().encode())
