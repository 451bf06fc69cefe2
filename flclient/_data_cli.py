"""``flclient data stats|import|prune --config device.toml``: the example store of a device's ``[data]`` table.

The commands open the store beside a running daemon (WAL: readers never block the sensor threads' appends).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

from ._config import DeviceConfig
from ._errors import DeviceConfigError
from ._examples import ExampleStore

__all__ = ["add_data_commands"]


def _store(args: argparse.Namespace) -> ExampleStore:
    config = DeviceConfig.from_toml(args.config)
    if config.example_store is None:
        raise DeviceConfigError(
            f"{args.config} has no [data] table: add one (e.g. [data] with max_age_s = 604800) to use the example store"
        )
    return ExampleStore.from_config(config.example_store)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def _cmd_stats(args: argparse.Namespace) -> int:
    with _store(args) as store:
        stats = store.stats()
        if args.json:
            print(json.dumps({"store": str(store.path), "collections": [s.to_json() for s in stats]}))
            return 0
        print(f"{store.path}: {len(stats)} collection(s), {sum(s.rows for s in stats):,} examples")
        for s in stats:
            print(
                f"  {s.name}: {s.rows:,} examples ({s.unused:,} unused), {s.bytes:,} bytes, "
                f"{_when(s.oldest)} .. {_when(s.newest)}, columns {', '.join(s.columns) or '-'}"
            )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    with _store(args) as store:
        collection = args.collection or store.selection.collection or "default"
        n = store.import_npz(args.file, collection, timestamps=args.timestamps)
        print(f"imported {n:,} examples from {args.file} into {collection!r} of {store.path}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    with _store(args) as store:
        removed = store.prune(vacuum=args.vacuum, verify=args.verify)
        print(f"pruned {removed:,} examples from {store.path}" + (" (vacuumed)" if args.vacuum else ""))
    return 0


def add_data_commands(sub: Any) -> None:
    """Add ``data stats``, ``data import`` and ``data prune`` to the ``flclient`` command line."""
    data = sub.add_parser("data", help="the on-device example store ([data] in device.toml)")
    actions = data.add_subparsers(dest="action", required=True)
    s = actions.add_parser("stats", help="what each collection holds")
    s.add_argument("--config", required=True, help="device.toml")
    s.add_argument("--json", action="store_true", help="one JSON object instead of text")
    s.set_defaults(func=_cmd_stats)
    i = actions.add_parser("import", help="append the records of an .npz data file to a collection")
    i.add_argument("file", help="an .npz file: the module's input columns, label, optionally x")
    i.add_argument("--config", required=True, help="device.toml")
    i.add_argument("--collection", default=None, help="collection (default: [data] collection, else 'default')")
    i.add_argument("--timestamps", default=None, help="array of the file holding each record's time (seconds)")
    i.set_defaults(func=_cmd_import)
    p = actions.add_parser("prune", help="enforce retention now (ages pass without appends)")
    p.add_argument("--config", required=True, help="device.toml")
    p.add_argument("--verify", action="store_true", help="also check every stored row and drop corrupt ones")
    p.add_argument("--vacuum", action="store_true", help="also return the freed space to the filesystem")
    p.set_defaults(func=_cmd_prune)
