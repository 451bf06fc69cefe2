"""The package surface: importable without the heavy runtimes, and one public __all__."""

from __future__ import annotations

import os
import subprocess
import sys

import flclient.protocol as protocol

CHECK = (
    "import flclient.protocol, sys; "
    "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'flwr', 'tuf', 'onnxruntime'}); "
    "assert not heavy, heavy"
)


def test_importing_the_protocol_loads_neither_flwr_nor_tuf_nor_onnxruntime() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_check_itself_can_fail() -> None:
    # The same assertion after importing one of the heavy packages must fail, or the test above proves nothing.
    code = CHECK.replace("import flclient.protocol, sys;", "import flclient.protocol, sys, tuf;")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "AssertionError" in done.stderr


def test_every_public_name_exists_once() -> None:
    assert len(set(protocol.__all__)) == len(protocol.__all__)  # (the order is ruff's RUF022)
    assert [name for name in protocol.__all__ if not hasattr(protocol, name)] == []
