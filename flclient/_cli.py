"""The ``flclient`` command line. User mistakes end with one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import _signing
from ._command import run_command
from ._daemon import add_node_commands
from ._data_cli import add_data_commands
from ._errors import FLClientError
from ._predict_cli import add_predict_commands
from .features import FeatureModule, SandboxLimits
from .features._columns_io import ColumnFileError, read_columns, write_columns
from .gate._cli import add_gate_commands
from .sim._cli import add_sim_commands

__all__ = ["main"]


def _cmd_features_run(args: argparse.Namespace) -> int:
    try:
        limits = SandboxLimits(
            fuel_per_row=args.fuel,
            timeout_ms=args.timeout_ms,
            memory_mib=args.memory_mib,
            batch_rows=args.batch_rows,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    keys = []
    for key_path in args.trusted_key or []:
        try:
            keys.append(_signing.load_public_key(Path(key_path).read_bytes()))
        except OSError as exc:
            raise _UsageError(f"cannot read trusted key {key_path}: {exc.strerror or exc}") from exc
        except _signing.SignatureError as exc:
            raise _UsageError(f"trusted key {key_path}: {exc}") from exc
    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".npz"):
        raise _UsageError(f"output {output}: use a .csv or .npz file name")
    with FeatureModule.load(
        args.module,
        limits=limits,
        cache_dir=args.cache_dir,
        expected_sha256=args.sha256,
        trusted_keys=keys,
    ) as module:
        columns = read_columns(Path(args.input), module.manifest.inputs)
        started = time.perf_counter()
        result = module.extract(columns)
        elapsed = time.perf_counter() - started
        write_columns(output, module.manifest.outputs, result)
        n = len(result["status"])
        bad = int((result["status"] != 0).sum())
        m = module.manifest
        print(
            f"{m.name} {m.version}: {n} rows -> {output} ({bad} invalid rows flagged), "
            f"{n / elapsed if elapsed > 0 else 0:,.0f} rows/s",
            file=sys.stderr,
        )
    return 0


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="flclient", description="On-device federated-learning client.")
    p.add_argument("--version", action="version", version=f"flclient {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    features = sub.add_parser("features", help="run feature modules").add_subparsers(dest="action", required=True)
    r = features.add_parser("run", help="extract features from a CSV/.npz file with a module")
    r.add_argument("module", help="a feature module (.wasm) built by featurec")
    r.add_argument("--input", required=True, help="input .csv (header = the module's input columns) or .npz")
    r.add_argument("--output", required=True, help="output .csv or .npz (output columns + status)")
    r.add_argument("--fuel", type=int, default=SandboxLimits.fuel_per_row, help="fuel (instructions) per row")
    r.add_argument("--memory-mib", type=int, default=SandboxLimits.memory_mib, help="module memory limit")
    r.add_argument("--timeout-ms", type=float, default=None, help="wall-clock limit per batch call")
    r.add_argument("--batch-rows", type=int, default=SandboxLimits.batch_rows, help="rows per call")
    r.add_argument("--cache-dir", default=None, help="compiled-module cache directory")
    r.add_argument("--sha256", default=None, help="refuse the module unless its sha256 is this")
    r.add_argument("--trusted-key", action="append", help="Ed25519 public key (PEM); requires MODULE.sig")
    r.set_defaults(func=_cmd_features_run)
    add_gate_commands(sub)
    add_sim_commands(sub)
    add_node_commands(sub)
    add_data_commands(sub)
    add_predict_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("flclient", _parser().parse_args(argv), (FLClientError, ColumnFileError, _UsageError))


if __name__ == "__main__":
    sys.exit(main())
