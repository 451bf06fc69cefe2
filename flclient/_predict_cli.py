"""``flclient predict``: local inference with the device's current global model (no connection)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .features._columns_io import ColumnFileError

__all__ = ["add_predict_commands"]


def _read_input(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Columns by name (and optional dense extras ``x``) from an ``.npz`` or a ``.csv`` with a header row."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            arrays.pop("label", None)
            return arrays, arrays.get("x")  # dense extras, unless the module reads a column named x
        if suffix == ".csv":
            table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
            names = table.dtype.names or ()
            return {n: np.atleast_1d(table[n]) for n in names}, None
    except (OSError, ValueError) as exc:
        raise ColumnFileError(f"cannot read {path}: {exc}") from exc
    raise ColumnFileError(f"input {path}: use a .csv (header = the module's input columns) or .npz file")


def _cmd_predict(args: argparse.Namespace) -> int:
    from ._client import local_predictor
    from ._config import DeviceConfig

    config = DeviceConfig.from_toml(args.config, check_paths=False)
    columns, x = _read_input(Path(args.input))
    executor = local_predictor(config)
    try:
        out = executor.predict(columns, x=x)
    finally:
        executor.close()
    if args.output:
        np.savez(args.output, outputs=out, predicted=np.argmax(out, axis=1))
        print(f"{len(out)} predictions -> {args.output}", file=sys.stderr)
    else:
        for row in out:
            print(f"{int(np.argmax(row))}," + ",".join(f"{v:.6g}" for v in row))
    return 0


def add_predict_commands(sub: Any) -> None:
    """Add ``predict`` to the ``flclient`` command line."""
    p = sub.add_parser("predict", help="run the device's current global model on local records")
    p.add_argument("--config", required=True, help="device.toml")
    p.add_argument("--input", required=True, help="records: .csv (header = the module's input columns) or .npz")
    p.add_argument("--output", default=None, help="write outputs and predicted classes to this .npz")
    p.set_defaults(func=_cmd_predict)
