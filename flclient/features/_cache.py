"""On-disk cache of compiled feature modules.

A compiled artifact is native code that wasmtime loads without re-validating it, so the cache only ever
loads files this device wrote itself, keyed by everything that makes an artifact valid: the wasmtime
version, the engine configuration (fuel and epoch instrumentation change the code), the CPU, and the
module's sha256. Each file carries the sha256 of its payload, checked before deserializing, so a
truncated or corrupted file is recompiled instead of crashing the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path

import wasmtime

from .._atomic import atomic_write_bytes

__all__ = ["CompiledModuleCache", "cpu_fingerprint"]

_HEADER = b"flclient-cwasm-v1\n"


def cpu_fingerprint() -> str:
    """The machine, CPU model and feature flags, as a short hash (compiled code is CPU-specific)."""
    parts = [platform.machine(), platform.system()]
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        seen: set[str] = set()
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags", "Features", "CPU implementer", "CPU part") and key not in seen:
                seen.add(key)
                parts.append(f"{key}={value.strip()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class CompiledModuleCache:
    """A directory of compiled modules; safe to share between processes (writes are atomic)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._cpu = cpu_fingerprint()
        self._wasmtime = version("wasmtime")

    def key(self, module_sha256: str, engine_config: Mapping[str, object]) -> str:
        material = json.dumps(
            {
                "wasmtime": self._wasmtime,
                "config": dict(sorted(engine_config.items())),
                "cpu": self._cpu,
                "module": module_sha256,
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.cwasm"

    def load_or_compile(
        self,
        engine: wasmtime.Engine,
        module_sha256: str,
        engine_config: Mapping[str, object],
        compile_module: Callable[[], wasmtime.Module],
    ) -> tuple[wasmtime.Module, bool]:
        """Return (module, was_cached). Unreadable or corrupt entries are replaced, never trusted."""
        path = self.path(self.key(module_sha256, engine_config))
        cached = self._read(path)
        if cached is not None:
            try:
                return wasmtime.Module.deserialize(engine, cached), True
            except wasmtime.WasmtimeError:
                # Written by us but unusable (e.g. engine settings drifted): fall through and rewrite it.
                pass
        module = compile_module()
        payload = module.serialize()
        with contextlib.suppress(OSError):  # a read-only or full disk only costs the next load a compile
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_bytes(path, _HEADER + hashlib.sha256(payload).digest() + payload, mode=0o600)
        return module, False

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        head = len(_HEADER)
        digest, payload = blob[head : head + 32], blob[head + 32 :]
        if blob[:head] != _HEADER or hashlib.sha256(payload).digest() != digest:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        return payload
