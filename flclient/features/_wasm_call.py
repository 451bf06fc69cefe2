"""A low-overhead call path into wasmtime for functions whose types the host has already checked.

``wasmtime.Func.__call__`` re-reads the function type and converts every argument through ``Val`` on
each call (~25 us); a batch of one row would pay that every time. ``wasmtime_func_call_unchecked`` with a
preallocated raw-value array costs ~2 us. It is only sound when the argument and result types are known
to match, which :mod:`._host` checks once against ``EXPORT_SIGNATURES`` when a module is loaded. This
uses wasmtime-py's ctypes bindings, so the wasmtime version is pinned in pyproject.toml.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

__all__ = ["RawI32Func", "RawMemorySize", "memory_base", "memory_size"]


class RawI32Func:
    """Calls a wasm function of type ``(i32 * nparams) -> (i32 * nresults <= 1)`` on one store."""

    __slots__ = ("_context", "_func", "_n", "_vals")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, nparams: int) -> None:
        self._context = store._context()
        self._func = ctypes.byref(func._func)
        self._n = max(nparams, 1)
        self._vals = (ffi.wasmtime_val_raw_t * self._n)()

    def __call__(self, *args: int) -> int:
        vals = self._vals
        for i, arg in enumerate(args):
            vals[i].i32 = arg
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call_unchecked(self._context, self._func, vals, self._n, ctypes.byref(trap))
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        return int(vals[0].i32)


class RawMemorySize:
    """``memory.data_len(store)`` without the per-call wrapper overhead (checked on every batch)."""

    __slots__ = ("_context", "_memory")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._context = store._context()
        self._memory = ctypes.byref(memory._memory)

    def __call__(self) -> int:
        return int(ffi.wasmtime_memory_data_size(self._context, self._memory))


def memory_base(store: wasmtime.Store, memory: wasmtime.Memory) -> int:
    """Host address of the start of ``memory`` (valid until the memory grows)."""
    ptr: Any = memory.data_ptr(store)
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


def memory_size(store: wasmtime.Store, memory: wasmtime.Memory) -> int:
    return int(memory.data_len(store))
