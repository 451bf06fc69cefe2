"""``flclient run --config device.toml`` (the daemon), ``flclient node-key`` and ``flclient demo`` (the local
federation).

The daemon runs the node under asyncio: SIGTERM/SIGINT stop it gracefully (the last reply gets its grace
period, then the node deactivates), it reconnects forever with backoff, and it logs JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ._client import AsyncClient, json_logger
from ._config import DeviceConfig
from ._errors import FLClientError

__all__ = ["add_node_commands", "run_daemon"]


async def run_daemon(config: DeviceConfig) -> int:
    """Run a node until SIGTERM or SIGINT; returns the exit status."""
    log = json_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log({"event": "start", "superlink": config.superlink_url, "state_dir": str(config.state_dir)})
    async with AsyncClient(config, log=log) as client:
        await client.run(stop)
    log({"event": "stopped"})
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = DeviceConfig.from_toml(args.config)
    return asyncio.run(run_daemon(config))


# What `flclient demo` imports, by the name pip installs it under (all in the [demo] extra).
_DEMO_MODULES = {"flwr": "flwr", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def _demo_missing() -> list[str]:
    import importlib.util

    return [dist for module, dist in _DEMO_MODULES.items() if importlib.util.find_spec(module) is None]


def device_public_key(config: DeviceConfig) -> bytes:
    """The device's public key in OpenSSH format, what ``flwr supernode register`` takes.

    The key is the one the node signs with, kept in the state store; a device that never ran gets it now, so
    that its key can be registered before its first start.
    """
    from ._state import StateStore
    from .fleet import NodeKey

    config.state_dir.mkdir(parents=True, exist_ok=True)
    with StateStore(config.state_path) as store:
        pem = store.get_meta("node_key")
        if pem is None:
            key = NodeKey.generate()
            store.set_meta("node_key", key.to_pem())
        else:
            key = NodeKey.from_pem(pem)
    return key.public_openssh()


def _cmd_node_key(args: argparse.Namespace) -> int:
    public = device_public_key(DeviceConfig.from_toml(args.config, check_paths=False))  # before any data exists
    if args.action == "show":
        sys.stdout.write(public.decode("ascii") + "\n")
        return 0
    out = Path(args.output)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public + b"\n")
    except OSError as exc:
        raise FLClientError(f"cannot write the public key to {out}: {exc.strerror or exc}") from exc
    print(f"wrote {out}; register it: flwr supernode register {out} [SUPERLINK]", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    missing = _demo_missing()
    if missing and sys.version_info < (3, 11):
        raise FLClientError(
            f"the demo runs a Flower coordinator, which needs Python >= 3.11 (this is "
            f"{sys.version_info.major}.{sys.version_info.minor}); the device side (flclient run, check, features) "
            "works on 3.10: run the demo from a Python 3.11+ venv with pip install 'flclient[demo]'"
        )
    if missing:
        raise FLClientError(f"the demo needs {', '.join(missing)}: pip install 'flclient[demo]'")
    try:
        from .server._demo import run_demo
    except ImportError as exc:
        raise FLClientError(
            f"the demo needs the server extra ({exc.name} is missing): pip install 'flclient[demo]'"
        ) from exc
    return run_demo(devices=args.devices, rounds=args.rounds, out_dir=args.out, seed=args.seed)


def add_node_commands(sub: Any) -> None:
    """Add ``run`` and ``demo`` to the ``flclient`` command line."""
    r = sub.add_parser("run", help="run a device node (daemon) against a Flower SuperLink")
    r.add_argument("--config", required=True, help="device.toml")
    r.set_defaults(func=_cmd_run)
    k = sub.add_parser("node-key", help="the device's public key, for SuperLink node authentication")
    actions = k.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print the public key (OpenSSH format, as `flwr supernode register` takes)")
    show.add_argument("--config", required=True, help="device.toml")
    export = actions.add_parser("export", help="write the public key to a file for `flwr supernode register`")
    export.add_argument("--config", required=True, help="device.toml")
    export.add_argument("--output", default="device.pub", help="the file to write (default device.pub)")
    for p in (show, export):
        p.set_defaults(func=_cmd_node_key)
    d = sub.add_parser("demo", help="a local federation: SuperLink, ServerApp and N device processes on loopback")
    d.add_argument("--devices", type=int, default=8, help="device processes (default 8)")
    d.add_argument("--rounds", type=int, default=3, help="training rounds (default 3)")
    d.add_argument("--out", default="out/demo", help="output directory (plot, metrics, device state)")
    d.add_argument("--seed", type=int, default=0, help="seed of the data partitions and the model")
    d.set_defaults(func=_cmd_demo)
