"""The feature host: loads ABI v1 modules and runs batches in a sandbox.

Life of a module: bytes -> integrity (sha256, signature) -> embedded manifest -> compile (or load the
cached compiled artifact) -> import/export checks -> instantiate -> the module's own manifest must equal
the embedded one. Every call into the guest runs with a fuel budget and/or an epoch deadline and under a
memory limit. Any trap discards the instance; the next call builds a fresh one from the compiled module.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .. import _signing
from .._errors import (
    FeatureAbiMismatch,
    FeatureError,
    FeatureExportError,
    FeatureImportError,
    FeatureInputError,
    FeatureIntegrityError,
    FeatureManifestError,
    FeatureMemoryExhausted,
    FeatureModuleInvalid,
    FeatureOutOfFuel,
    FeatureSandboxError,
    FeatureTimeout,
    FeatureTrap,
)
from .._lifetime import Resource
from ._abi import (
    ABI_VERSION,
    ALLOWED_IMPORTS,
    EXPORT_ABI_VERSION,
    EXPORT_ALLOC,
    EXPORT_EXTRACT,
    EXPORT_FREE,
    EXPORT_MANIFEST_LEN,
    EXPORT_MANIFEST_PTR,
    EXPORT_MEMORY,
    EXPORT_SIGNATURES,
    MANIFEST_SECTION,
    MAX_MANIFEST_BYTES,
    BatchStatus,
    Column,
    Manifest,
    RowStatus,
    describe_columns,
)
from ._cache import CompiledModuleCache
from ._wasm_binary import WasmFormatError, custom_section
from ._wasm_call import RawI32Func, RawMemorySize, memory_base, memory_size

__all__ = ["FeatureModule", "SandboxLimits", "declared_manifest"]

_PAGE = 65536
_MAX_ROW_STATUS = max(RowStatus)
_MAX_FUEL = (1 << 64) - 1


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """Limits applied to every call into a feature module.

    ``fuel_per_row`` and ``fuel_base`` bound the instructions a batch may execute (deterministic: the same
    on every device); ``timeout_ms`` bounds wall-clock time per call; ``memory_mib`` caps the module's linear
    memory. At least one of fuel and timeout must be set: a module with neither could hang the device.
    ``batch_rows`` caps rows per call; larger inputs are streamed in chunks. ``host_memory_mib`` caps what one
    :meth:`FeatureModule.extract` makes the host allocate for converted inputs and outputs: the module's manifest
    sets the row width (an ``ascii[2^20]`` output is 1 MiB a row), so a module that fits its sandbox could
    otherwise make the host allocate gigabytes for a few hundred rows.
    """

    fuel_per_row: int | None = 1_000_000
    fuel_base: int = 10_000_000
    timeout_ms: float | None = None
    memory_mib: int = 64
    batch_rows: int = 65_536
    host_memory_mib: int = 1024

    def __post_init__(self) -> None:
        if self.fuel_per_row is None and self.timeout_ms is None:
            raise ValueError("set fuel_per_row or timeout_ms (or both): an unbounded module could hang the device")
        if self.fuel_per_row is not None and self.fuel_per_row < 1:
            raise ValueError(f"fuel_per_row must be >= 1, got {self.fuel_per_row}")
        if self.fuel_base < 1:
            raise ValueError(f"fuel_base must be >= 1, got {self.fuel_base}")
        if self.timeout_ms is not None and not (0 < self.timeout_ms <= 86_400_000):
            raise ValueError(f"timeout_ms must be in (0, 86400000], got {self.timeout_ms}")
        if not 1 <= self.memory_mib <= 4096:
            raise ValueError(f"memory_mib must be between 1 and 4096, got {self.memory_mib}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")
        if not 1 <= self.host_memory_mib <= 1 << 20:
            raise ValueError(f"host_memory_mib must be between 1 and {1 << 20}, got {self.host_memory_mib}")

    @property
    def engine_config(self) -> dict[str, object]:
        """The engine settings these limits need (part of the compiled-module cache key)."""
        return {
            "consume_fuel": self.fuel_per_row is not None,
            "epoch_interruption": self.timeout_ms is not None,
        }


class _Watchdog:
    """Advances an engine's epoch on a fixed tick so that epoch deadlines measure wall-clock time."""

    def __init__(self, engine: wasmtime.Engine, tick_s: float) -> None:
        self._engine = engine
        self._tick = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flclient-feature-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            self._engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _Buffer:
    ptr: int = 0
    rows: int = 0
    nbytes: int = 0


@dataclass
class _Instance:
    """One store + instance and the guest buffers allocated in it."""

    store: wasmtime.Store
    memory: wasmtime.Memory
    alloc: RawI32Func
    free: RawI32Func
    extract: RawI32Func
    exports: dict[str, wasmtime.Func]
    memory_size: RawMemorySize
    buffers: list[_Buffer] = field(default_factory=list)
    # Typed numpy views of each column buffer in guest memory, shape (rows, *row_shape), in manifest
    # order; rebuilt whenever the buffers change or memory grows (it may move).
    in_views: list[np.ndarray[Any, Any]] = field(default_factory=list)
    out_views: list[np.ndarray[Any, Any]] = field(default_factory=list)
    out_bytes: list[tuple[np.ndarray[Any, Any], int]] = field(default_factory=list)  # (flat uint8, row bytes)
    status_view: np.ndarray[Any, Any] | None = None
    table_ptr: int = 0
    view: np.ndarray[Any, np.dtype[np.uint8]] | None = None
    view_len: int = -1


class _Sandbox:
    """A compiled module plus at most one live instance of it, and the limits every call runs under.

    ``guarded`` is the only way into the guest: it arms fuel and the epoch deadline, and turns any
    failure into a FeatureError after discarding the instance.
    """

    def __init__(self, name: str, engine: wasmtime.Engine, module: wasmtime.Module, limits: SandboxLimits) -> None:
        self.name = name
        self.limits = limits
        self.instance: _Instance | None = None
        self._engine = engine
        self._module = module
        self._watchdog: _Watchdog | None = None
        self._epoch_ticks = 0
        if limits.timeout_ms is not None:
            tick_ms = min(10.0, max(0.5, limits.timeout_ms / 10))
            self._epoch_ticks = max(1, math.ceil(limits.timeout_ms / tick_ms))
            self._watchdog = _Watchdog(engine, tick_ms / 1000)

    @classmethod
    def compile(
        cls, data: bytes, *, name: str, sha256: str, limits: SandboxLimits, cache_dir: str | Path | None
    ) -> tuple[_Sandbox, bool]:
        """Compile (or load from the cache), check imports and exports; returns (sandbox, from_cache)."""
        config = wasmtime.Config()
        config.consume_fuel = limits.fuel_per_row is not None
        config.epoch_interruption = limits.timeout_ms is not None
        engine = wasmtime.Engine(config)

        def compile_module() -> wasmtime.Module:
            try:
                return wasmtime.Module(engine, data)
            except wasmtime.WasmtimeError as exc:
                raise FeatureModuleInvalid(name, f"not a valid WebAssembly module: {_first_line(exc)}") from exc

        if cache_dir is not None:
            cache = CompiledModuleCache(Path(cache_dir).expanduser())
            module, from_cache = cache.load_or_compile(engine, sha256, limits.engine_config, compile_module)
        else:
            module, from_cache = compile_module(), False
        _check_imports_exports(name, module)
        return cls(name, engine, module, limits), from_cache

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self.instance = None

    def get_instance(self) -> _Instance:
        if self.instance is not None:
            return self.instance
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self.limits.memory_mib << 20)
        self._arm(store, rows=0)
        try:
            instance = wasmtime.Instance(store, self._module, [])
        except wasmtime.Trap as exc:
            raise self._translate_trap(exc, store, None, rows=0) from exc
        except wasmtime.WasmtimeError as exc:
            message = _first_line(exc)
            if "memory" in message and ("limit" in message or "minimum" in message or "exceed" in message):
                raise FeatureMemoryExhausted(
                    self.name,
                    f"cannot instantiate within the memory limit of {self.limits.memory_mib} MiB: {message}",
                ) from exc
            raise FeatureModuleInvalid(self.name, f"cannot instantiate: {message}") from exc
        exports = instance.exports(store)
        funcs = {n: exports[n] for n in EXPORT_SIGNATURES}
        memory = exports[EXPORT_MEMORY]
        # _check_imports_exports() proved these types when the module was compiled.
        assert isinstance(memory, wasmtime.Memory)
        assert all(isinstance(f, wasmtime.Func) for f in funcs.values())
        typed = {n: f for n, f in funcs.items() if isinstance(f, wasmtime.Func)}
        self.instance = _Instance(
            store=store,
            memory=memory,
            alloc=RawI32Func(store, typed[EXPORT_ALLOC], 1),
            free=RawI32Func(store, typed[EXPORT_FREE], 2),
            extract=RawI32Func(store, typed[EXPORT_EXTRACT], 2),
            exports=typed,
            memory_size=RawMemorySize(store, memory),
        )
        return self.instance

    def fail(self, error: FeatureError) -> FeatureError:
        """Discard the instance (it may be in any state) and hand back the error to raise."""
        self.instance = None
        return error

    def _fuel(self, rows: int) -> int:
        """The fuel for a call over ``rows`` rows; wasmtime takes a u64 and silently wraps larger values."""
        return min(self.limits.fuel_base + (self.limits.fuel_per_row or 0) * rows, _MAX_FUEL)

    def _arm(self, store: wasmtime.Store, rows: int) -> None:
        if self.limits.fuel_per_row is not None:
            store.set_fuel(self._fuel(rows))
        if self._watchdog is not None:
            store.set_epoch_deadline(self._epoch_ticks)

    def guarded(self, call: Callable[[], int], *, rows: int) -> int:
        """Run one guest call on the live instance under fresh limits."""
        inst = self.instance
        assert inst is not None
        self._arm(inst.store, rows)
        try:
            return call()
        except wasmtime.Trap as exc:
            raise self.fail(self._translate_trap(exc, inst.store, inst.memory, rows=rows)) from exc
        except wasmtime.WasmtimeError as exc:
            raise self.fail(FeatureTrap(self.name, f"call failed: {_first_line(exc)}")) from exc

    def declared_manifest(self) -> Manifest:
        """The manifest the module's code declares (flf1_manifest_ptr/len), after an ABI version check."""
        inst = self.get_instance()
        exports, store = inst.exports, inst.store
        version = self.guarded(lambda: int(exports[EXPORT_ABI_VERSION](store)), rows=0)
        if version != ABI_VERSION:
            raise FeatureAbiMismatch(self.name, f"module code speaks ABI {version}; this host speaks {ABI_VERSION}")
        ptr = self.guarded(lambda: int(exports[EXPORT_MANIFEST_PTR](store)), rows=0) & 0xFFFFFFFF
        length = self.guarded(lambda: int(exports[EXPORT_MANIFEST_LEN](store)), rows=0) & 0xFFFFFFFF
        if length > MAX_MANIFEST_BYTES or ptr + length > memory_size(store, inst.memory):
            raise FeatureManifestError(self.name, "the module's manifest pointer is out of bounds")
        return Manifest.from_bytes(bytes(inst.memory.read(store, ptr, ptr + length)), module=self.name)

    def _translate_trap(
        self, exc: wasmtime.Trap, store: wasmtime.Store, memory: wasmtime.Memory | None, *, rows: int
    ) -> FeatureError:
        name = self.name
        code = exc.trap_code
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return FeatureOutOfFuel(name, f"ran out of fuel ({self._fuel(rows)} for {rows} rows); it may loop forever")
        if code == wasmtime.TrapCode.INTERRUPT:
            return FeatureTimeout(name, f"ran past its deadline of {self.limits.timeout_ms} ms")
        if memory is not None and memory_size(store, memory) + _PAGE > self.limits.memory_mib << 20:
            return FeatureMemoryExhausted(
                name,
                f"trapped ({_trap_name(code)}) with its memory at the limit of {self.limits.memory_mib} MiB",
            )
        return FeatureTrap(name, f"trapped ({_trap_name(code)}): {_trap_message(exc)}")


def declared_manifest(data: bytes, *, limits: SandboxLimits | None = None, label: str = "<bytes>") -> Manifest:
    """Run a module's manifest exports in the sandbox; for tools that embed the manifest (featurec build)."""
    sandbox, _ = _Sandbox.compile(
        data,
        name=label,
        sha256=hashlib.sha256(data).hexdigest(),
        limits=limits or SandboxLimits(),
        cache_dir=None,
    )
    try:
        return sandbox.declared_manifest()
    finally:
        sandbox.close()


class FeatureModule(Resource):
    """A verified, compiled feature module and a sandboxed instance of it.

    Load one with :meth:`load` (a file) or :meth:`from_bytes`, then call :meth:`extract`::

        with FeatureModule.load("device_context-1.0.0.wasm", cache_dir="~/.cache/flclient") as fm:
            cols = fm.extract({"timestamp_ms": ts, "location_lat": lat, ...})
            cols["hour_of_day"], cols["status"]

    Calls are serialised by an internal lock. Close it (or use ``with``) to release native resources.
    """

    def __init__(self, *, manifest: Manifest, sha256: str, sandbox: _Sandbox, from_cache: bool) -> None:
        # Private: use load() / from_bytes(), which verify the module first.
        self.manifest = manifest
        self.sha256 = sha256
        self.limits = sandbox.limits
        self.from_cache = from_cache
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self._closed = False
        self._columns: tuple[Column, ...] = (*manifest.inputs, *manifest.outputs)
        budget_rows = (self.limits.memory_mib << 20) // 2 // manifest.row_bytes
        self._rows_per_call = max(1, min(self.limits.batch_rows, budget_rows))

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        limits: SandboxLimits | None = None,
        cache_dir: str | Path | None = None,
        expected_sha256: str | None = None,
        trusted_keys: Iterable[Ed25519PublicKey] = (),
        signature_path: str | Path | None = None,
    ) -> FeatureModule:
        """Load a module file. With ``trusted_keys`` its signature (default ``<path>.sig``) must verify."""
        path = Path(path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FeatureModuleInvalid(str(path), f"cannot read the module file: {exc.strerror or exc}") from exc
        keys = list(trusted_keys)
        signature: bytes | None = None
        if keys:
            sig_path = Path(signature_path) if signature_path is not None else path.with_name(path.name + ".sig")
            try:
                signature = sig_path.read_bytes()
            except OSError as exc:
                raise FeatureIntegrityError(
                    path.name, f"a trusted key is configured but the signature {sig_path} cannot be read"
                ) from exc
        return cls.from_bytes(
            data,
            limits=limits,
            cache_dir=cache_dir,
            expected_sha256=expected_sha256,
            trusted_keys=keys,
            signature=signature,
            label=path.name,
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        limits: SandboxLimits | None = None,
        cache_dir: str | Path | None = None,
        expected_sha256: str | None = None,
        trusted_keys: Iterable[Ed25519PublicKey] = (),
        signature: bytes | None = None,
        label: str = "<bytes>",
    ) -> FeatureModule:
        """Verify, compile (or load from ``cache_dir``) and instantiate a module."""
        limits = limits or SandboxLimits()
        sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256.lower():
            raise FeatureIntegrityError(label, f"sha256 is {sha256}, expected {expected_sha256}")
        keys = list(trusted_keys)
        if keys:
            if signature is None:
                raise FeatureIntegrityError(label, "a trusted key is configured but no signature was given")
            try:
                _signing.verify(data, _signing.DetachedSignature.from_bytes(signature), keys)
            except _signing.SignatureError as exc:
                raise FeatureIntegrityError(label, f"signature check failed: {exc}") from exc
        try:
            embedded = custom_section(data, MANIFEST_SECTION)
        except WasmFormatError as exc:
            raise FeatureModuleInvalid(label, f"not a WebAssembly module: {exc}") from exc
        if embedded is None:
            raise FeatureManifestError(
                label, f"no {MANIFEST_SECTION!r} custom section; build the module with 'featurec build'"
            )
        manifest = Manifest.from_bytes(embedded, module=label)
        name = manifest.name
        if manifest.abi_version != ABI_VERSION:
            raise FeatureAbiMismatch(
                name, f"manifest declares ABI version {manifest.abi_version}; this host speaks {ABI_VERSION}"
            )

        sandbox, from_cache = _Sandbox.compile(data, name=name, sha256=sha256, limits=limits, cache_dir=cache_dir)
        try:
            declared = sandbox.declared_manifest()
            if declared != manifest:
                raise FeatureManifestError(name, _manifest_difference(manifest, declared))
        except BaseException:
            sandbox.close()
            raise
        return cls(manifest=manifest, sha256=sha256, sandbox=sandbox, from_cache=from_cache)

    # ---- lifetime ----------------------------------------------------------------------------------

    def _release(self) -> None:
        """Release the instance, watchdog and engine (``close()``, idempotent, calls this once)."""
        self._sandbox.close()

    def _describe(self) -> str:
        return f"FeatureModule {self.manifest.name!r}"

    def __repr__(self) -> str:
        return f"<FeatureModule {self.manifest.name} {self.manifest.version} sha256={self.sha256[:12]}>"

    # ---- running ---------------------------------------------------------------------------------

    @property
    def rows_per_call(self) -> int:
        """Rows per call into the guest; longer inputs are streamed in chunks of this size."""
        return self._rows_per_call

    def extract(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the module over named input columns; returns every output column plus ``status``.

        Inputs are converted to the manifest's dtypes without losing information: integers only to types that
        hold them exactly, floats to narrower floats only within range (rounding as float arithmetic does).
        Rows whose status is not ``RowStatus.OK`` have all outputs zero. Raises :class:`FeatureInputError` for
        bad input and a :class:`FeatureSandboxError` subclass when the module misbehaves.
        """
        self._check_open()
        self._check_host_memory(columns)
        inputs, n = self._convert_inputs(columns)
        step = self._rows_per_call
        with self._lock:
            if n <= step:  # one call: copy the outputs straight out of guest memory
                outputs, status = self._run_chunk(inputs, 0, n, None)
            else:
                outputs = [np.empty((n, *c.row_shape), dtype=c.numpy_dtype) for c in self.manifest.outputs]
                status = np.empty(n, dtype=np.uint8)
                for start in range(0, n, step):
                    self._run_chunk(inputs, start, min(n, start + step), (outputs, status))
        result = {c.name: arr for c, arr in zip(self.manifest.outputs, outputs, strict=True)}
        result["status"] = status
        return result

    def _check_host_memory(self, columns: Mapping[str, Any]) -> None:
        """Refuse, before converting anything, a call whose inputs and outputs would exceed ``host_memory_mib``."""
        rows = 0
        for c in self.manifest.inputs:
            try:
                rows = max(rows, len(columns[c.name]))
            except (KeyError, TypeError):
                continue  # missing or not array-like: the conversion names the problem
        row_bytes = self.manifest.row_bytes
        limit = self.limits.host_memory_mib << 20
        if rows * row_bytes > limit:
            raise FeatureInputError(
                self.manifest.name,
                f"{rows} rows need {rows * row_bytes} bytes of host memory ({row_bytes} a row for this module's "
                f"columns), over host_memory_mib={self.limits.host_memory_mib}; pass at most {limit // row_bytes} "
                "rows per call or raise host_memory_mib",
            )

    def _convert_inputs(self, columns: Mapping[str, Any]) -> tuple[list[np.ndarray[Any, Any]], int]:
        name = self.manifest.name
        try:
            converted = [_convert_column(name, c, columns[c.name]) for c in self.manifest.inputs]
        except KeyError:
            missing = [c.name for c in self.manifest.inputs if c.name not in columns]
            raise FeatureInputError(
                name,
                f"missing input column(s) {missing}; the module needs {describe_columns(self.manifest.inputs)}",
            ) from None
        n = len(converted[0])
        if any(len(a) != n for a in converted):
            sizes = {c.name: len(a) for c, a in zip(self.manifest.inputs, converted, strict=True)}
            raise FeatureInputError(name, f"input columns have different lengths: {sizes}")
        return converted, n

    def _run_chunk(
        self,
        inputs: list[np.ndarray[Any, Any]],
        start: int,
        stop: int,
        into: tuple[list[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None,
    ) -> tuple[list[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
        """Run rows [start, stop); copy the outputs into ``into`` at the same rows, or into new arrays."""
        m = stop - start
        sandbox = self._sandbox
        inst = sandbox.instance or sandbox.get_instance()
        if not inst.buffers or inst.buffers[0].rows < m:
            self._allocate(inst, m)
        elif inst.view_len != inst.memory_size():
            self._refresh_view(inst)
        for dst, arr in zip(inst.in_views, inputs, strict=True):
            dst[:m] = arr[start:stop]
        rc = sandbox.guarded(lambda: inst.extract(m, inst.table_ptr), rows=m)
        if rc != BatchStatus.OK:
            reason = BatchStatus(rc).name if rc in set(BatchStatus) else str(rc)
            raise sandbox.fail(FeatureSandboxError(self.manifest.name, f"flf1_extract returned batch status {reason}"))
        if inst.view_len != inst.memory_size():
            # The ABI forbids growing memory in extract; tolerate it, but re-derive the views.
            self._refresh_view(inst)
        assert inst.status_view is not None
        status_now = inst.status_view[:m]
        if status_now.any():
            if int(status_now.max()) > _MAX_ROW_STATUS:
                raise sandbox.fail(
                    FeatureSandboxError(self.manifest.name, f"the module wrote unknown row status {status_now.max()}")
                )
            # The ABI promises all-zero outputs for rows that are not OK; enforce it in guest memory,
            # bytewise (so floats, integers and text alike), before anything is copied out.
            _zero_bad_rows(inst.out_bytes, status_now, m)
        self._check_ascii_outputs(inst, m)
        if into is None:
            return [src[:m].copy() for src in inst.out_views], inst.status_view[:m].copy()
        outputs, status = into
        for src, out in zip(inst.out_views, outputs, strict=True):
            out[start:stop] = src[:m]
        status[start:stop] = inst.status_view[:m]
        return into

    def _check_ascii_outputs(self, inst: _Instance, m: int) -> None:
        """An ascii output holds ASCII text (bytes below 0x80, NUL padded): anything else is the module's fault."""
        for col, (raw, width) in zip(self.manifest.outputs, inst.out_bytes, strict=True):
            if col.dtype != "ascii":
                continue
            high = np.flatnonzero(raw[: m * width] >= 0x80)
            if high.size:
                raise self._sandbox.fail(
                    FeatureSandboxError(
                        self.manifest.name,
                        f"the module wrote non-ASCII byte {int(raw[high[0]]):#04x} into ascii output {col.name!r} "
                        f"(row {int(high[0]) // width} of the batch)",
                    )
                )

    def _allocate(self, inst: _Instance, rows: int) -> None:
        """(Re)allocate every column buffer for ``rows`` rows, then the pointer table."""
        name, sandbox = self.manifest.name, self._sandbox
        rows = min(self._rows_per_call, max(rows, 2 * (inst.buffers[0].rows if inst.buffers else 0)))
        for buf in inst.buffers:
            if buf.ptr:
                sandbox.guarded(partial(inst.free, buf.ptr, buf.nbytes), rows=0)
        inst.buffers = []
        sizes = [(c.name, rows * c.row_bytes) for c in self._columns] + [("status", rows)]
        for col_name, nbytes in sizes:
            ptr = sandbox.guarded(partial(inst.alloc, nbytes), rows=0) & 0xFFFFFFFF
            if ptr == 0:
                raise sandbox.fail(
                    FeatureMemoryExhausted(
                        name,
                        f"could not allocate {nbytes} bytes for column {col_name!r} ({rows} rows) within the "
                        f"memory limit of {self.limits.memory_mib} MiB; raise memory_mib or lower batch_rows",
                    )
                )
            if ptr % 8 or ptr + nbytes > memory_size(inst.store, inst.memory):
                raise sandbox.fail(FeatureSandboxError(name, f"flf1_alloc returned an invalid address {ptr:#x}"))
            inst.buffers.append(_Buffer(ptr=ptr, rows=rows, nbytes=nbytes))
        table = np.array([b.ptr for b in inst.buffers], dtype="<u4")
        if not inst.table_ptr:
            inst.table_ptr = sandbox.guarded(lambda: inst.alloc(table.nbytes), rows=0) & 0xFFFFFFFF
            if inst.table_ptr == 0:
                raise sandbox.fail(FeatureMemoryExhausted(name, "could not allocate the column table"))
        blocks = [(f"column {c!r}", b.ptr, b.nbytes) for (c, _), b in zip(sizes, inst.buffers, strict=True)]
        problem = _block_problem([*blocks, ("the column table", inst.table_ptr, table.nbytes)], inst.memory_size())
        if problem:
            raise sandbox.fail(FeatureSandboxError(name, f"flf1_alloc returned unusable blocks: {problem}"))
        inst.memory.write(inst.store, table.tobytes(), inst.table_ptr)
        self._refresh_view(inst)

    def _refresh_view(self, inst: _Instance) -> None:
        """Re-derive the memory view and the typed column views (memory may have moved)."""
        size = inst.memory_size()
        base = memory_base(inst.store, inst.memory)
        view: np.ndarray[Any, np.dtype[np.uint8]] = np.frombuffer(
            memoryview((ctypes.c_ubyte * size).from_address(base)), dtype=np.uint8
        )
        inst.view, inst.view_len = view, size
        views = []
        for col, buf in zip(self._columns, inst.buffers, strict=False):
            raw = view[buf.ptr : buf.ptr + buf.nbytes]
            if col.dtype == "ascii":
                views.append(raw.view(col.numpy_dtype))
            else:
                views.append(raw.view(col.element_dtype).reshape(buf.rows, *col.row_shape))
        n_in = len(self.manifest.inputs)
        inst.in_views, inst.out_views = views[:n_in], views[n_in:]
        inst.out_bytes = [
            (view[b.ptr : b.ptr + b.nbytes], c.row_bytes)
            for c, b in zip(self.manifest.outputs, inst.buffers[n_in:], strict=False)
        ]
        sbuf = inst.buffers[-1]
        inst.status_view = view[sbuf.ptr : sbuf.ptr + sbuf.nbytes]


def _block_problem(blocks: list[tuple[str, int, int]], memory_bytes: int) -> str | None:
    """Why guest blocks ``(label, address, bytes)`` cannot be used (outside memory, overlapping), or None.

    The guest's allocator is not trusted: a block past the end of memory would make the host read or write
    outside it, and two overlapping blocks would let one column's data pass for another's.
    """
    for label, ptr, nbytes in blocks:
        if ptr + nbytes > memory_bytes:
            return f"{label} at {ptr:#x} ({nbytes} bytes) ends past the {memory_bytes} bytes of memory"
    ordered = sorted(blocks, key=lambda b: b[1])
    for (a, a_ptr, a_len), (b, b_ptr, _) in itertools.pairwise(ordered):
        if a_ptr + a_len > b_ptr:
            return f"{a} at {a_ptr:#x} ({a_len} bytes) overlaps {b} at {b_ptr:#x}"
    return None


_UINT_OF_WIDTH = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _zero_bad_rows(columns: list[tuple[np.ndarray[Any, Any], int]], status: np.ndarray[Any, Any], m: int) -> None:
    """Zero, bytewise, the first ``m`` rows of each (flat byte buffer, row width) whose status is not OK.

    Rows of 1, 2, 4 or 8 bytes are one unsigned integer each, so a contiguous multiply by 0/1 does it
    (vectorised, ~1 us per 10k rows); other widths index the bad rows, which are usually few.
    """
    ok = status == RowStatus.OK
    masks: dict[int, np.ndarray[Any, Any]] = {}
    bad: np.ndarray[Any, Any] | None = None
    for raw, width in columns:
        rows = raw[: m * width]
        uint = _UINT_OF_WIDTH.get(width)
        if uint is not None:
            mask = masks.get(width)
            if mask is None:
                mask = masks[width] = ok.astype(uint)
            typed = rows.view(uint)
            np.multiply(typed, mask, out=typed)
        else:
            if bad is None:
                bad = np.flatnonzero(~ok)
            rows.reshape(m, width)[bad] = 0


def _trap_name(code: Any) -> str:
    return getattr(code, "name", str(code))


def _trap_message(exc: wasmtime.Trap) -> str:
    """The 'wasm trap: ...' line of a trap message, without the backtrace."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for line in lines:
        _, found, cause = line.partition("wasm trap:")
        if found:
            return cause.strip()
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_imports_exports(name: str, module: wasmtime.Module) -> None:
    imports = [(i.module, i.name) for i in module.imports]
    forbidden = [f"{m}.{n}" for m, n in imports if (m, n) not in ALLOWED_IMPORTS]
    if forbidden:
        raise FeatureImportError(
            name,
            f"imports {forbidden}; a feature module may import nothing (it must be a pure function of its rows)",
        )
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get(EXPORT_MEMORY), wasmtime.MemoryType):
        raise FeatureExportError(name, f"missing memory export {EXPORT_MEMORY!r}")
    for export, (params, results) in EXPORT_SIGNATURES.items():
        ty = exports.get(export)
        if ty is None:
            raise FeatureExportError(name, f"missing export {export!r}; is it an ABI v{ABI_VERSION} module?")
        if not isinstance(ty, wasmtime.FuncType):
            raise FeatureExportError(name, f"export {export!r} is not a function")
        got = (tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
        if got != (params, results):
            raise FeatureExportError(
                name, f"export {export!r} has type {_sig(*got)}, the ABI requires {_sig(params, results)}"
            )


def _sig(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _manifest_difference(embedded: Manifest, declared: Manifest) -> str:
    for key in ("name", "version", "abi_version", "description"):
        a, b = getattr(embedded, key), getattr(declared, key)
        if a != b:
            return f"the embedded manifest says {key}={a!r} but the module's code declares {b!r}"
    return (
        "the embedded manifest disagrees with the module's code about its columns: embedded inputs "
        f"[{describe_columns(embedded.inputs)}] outputs [{describe_columns(embedded.outputs)}], code inputs "
        f"[{describe_columns(declared.inputs)}] outputs [{describe_columns(declared.outputs)}]"
    )


def _convert_column(module: str, col: Column, values: Any) -> np.ndarray[Any, Any]:
    """Convert one input column to the manifest dtype without losing information."""
    if (
        type(values) is np.ndarray
        and values.dtype == col.element_dtype
        and values.shape[1:] == col.shape
        and values.ndim == len(col.shape) + 1
        and values.flags.c_contiguous
        and col.dtype != "ascii"
    ):
        return values  # the common case: already right, no copy
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise FeatureInputError(module, f"input {col.name!r} is not array-like: {exc}") from exc
    if col.dtype == "ascii":
        if arr.dtype.kind == "U":
            try:
                arr = np.char.encode(arr, "ascii")
            except UnicodeEncodeError as exc:
                raise FeatureInputError(module, f"input {col.name!r} has non-ASCII text") from exc
        if arr.dtype.kind != "S" or arr.ndim != 1 or arr.dtype.itemsize > col.width:
            raise FeatureInputError(
                module, f"input {col.name!r} must be 1-D ASCII strings of at most {col.width} bytes"
            )
        return np.ascontiguousarray(arr.astype(col.numpy_dtype))
    want = (arr.shape[0] if arr.ndim else -1, *col.row_shape)
    if arr.ndim == 0 or arr.shape != want:
        raise FeatureInputError(
            module,
            f"input {col.name!r} has shape {arr.shape}; expected (rows{', ' + str(col.width) if col.shape else ''})",
        )
    target = col.element_dtype
    if arr.dtype == target:
        return np.ascontiguousarray(arr)
    kind = arr.dtype.kind
    if target.kind == "f":
        if kind not in "fiub":
            raise FeatureInputError(module, f"input {col.name!r} has dtype {arr.dtype}; expected numbers ({col.dtype})")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(arr.astype(target))
        if kind == "f":
            # Narrowing floats rounds (as any float arithmetic does) but must not turn a finite value into inf.
            if not np.array_equal(np.isfinite(out), np.isfinite(arr)):
                raise FeatureInputError(module, f"input {col.name!r} has values beyond the {col.dtype} range")
        elif kind in "iu" and arr.size:
            with np.errstate(over="ignore", invalid="ignore"):
                exact = np.array_equal(out.astype(np.float64), arr.astype(np.float64)) and np.array_equal(
                    out.astype(arr.dtype), arr
                )
            if not exact:
                raise FeatureInputError(
                    module,
                    f"input {col.name!r} has integers that {col.dtype} cannot hold exactly "
                    "(f32 holds every integer up to 2^24, f64 up to 2^53)",
                )
        return out
    # Integer target: accept integers (and bools) that fit, and floats that are whole numbers that fit.
    if kind not in "iubf":
        raise FeatureInputError(module, f"input {col.name!r} has dtype {arr.dtype}; expected integers ({col.dtype})")
    if arr.size:
        if kind == "f" and not np.all(np.isfinite(arr) & (arr == np.trunc(arr))):
            raise FeatureInputError(module, f"input {col.name!r} must hold whole numbers ({col.dtype})")
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise FeatureInputError(
                module, f"input {col.name!r} has values in [{lo}, {hi}], outside the {col.dtype} range"
            )
    return np.ascontiguousarray(arr.astype(target))
