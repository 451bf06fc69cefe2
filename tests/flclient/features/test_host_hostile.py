"""Hostile and broken modules: each gives its specific error quickly and leaves the host usable."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from flclient.features import (
    FeatureAbiMismatch,
    FeatureExportError,
    FeatureImportError,
    FeatureInputError,
    FeatureManifestError,
    FeatureMemoryExhausted,
    FeatureModule,
    FeatureModuleInvalid,
    FeatureOutOfFuel,
    FeatureSandboxError,
    FeatureTimeout,
    FeatureTrap,
    SandboxLimits,
)
from flclient.features._abi import MANIFEST_SECTION
from flclient.features._wasm_binary import with_custom_section

from . import wat

# extract bodies -----------------------------------------------------------------------------------
INFINITE_LOOP = """
  (func (export "flf1_extract") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))"""

TRAP = """
  (func (export "flf1_extract") (param i32 i32) (result i32)
    unreachable)"""

OUT_OF_BOUNDS = """
  (func (export "flf1_extract") (param i32 i32) (result i32)
    (i32.store (i32.const -16) (i32.const 1))
    (i32.const 0))"""

# Grows memory one page at a time until the limit refuses, then gives up by trapping (like Rust's
# handle_alloc_error).
MEMORY_BOMB = """
  (func (export "flf1_extract") (param i32 i32) (result i32)
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)"""

BAD_ARGUMENT = """
  (func (export "flf1_extract") (param i32 i32) (result i32)
    (i32.const 1))"""

UNKNOWN_STATUS = """
  (func (export "flf1_extract") (param $n i32) (param $t i32) (result i32)
    (memory.fill (i32.load offset=8 (local.get $t)) (i32.const 9) (local.get $n))
    (i32.const 0))"""

# Doubles x, but traps on the row whose x is exactly 13.0.
TRAPS_ON_13 = wat.DOUBLER_EXTRACT.replace(
    "(local.set $v (f64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))",
    "(local.set $v (f64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))\n"
    "      (if (f64.eq (local.get $v) (f64.const 13)) (then unreachable))",
)

X = {"x": np.array([1.0, 2.0, 3.0])}


def _load(data: bytes, **limits: object) -> FeatureModule:
    return FeatureModule.from_bytes(data, limits=SandboxLimits(**limits))  # type: ignore[arg-type]


def _assert_healthy() -> None:
    """A fresh, well-behaved module still works in this process."""
    with _load(wat.doubler()) as fm:
        assert fm.extract(X)["y"].tolist() == [2.0, 4.0, 6.0]


def test_infinite_loop_runs_out_of_fuel() -> None:
    with _load(wat.doubler(extract=INFINITE_LOOP), fuel_per_row=1000, fuel_base=100_000) as fm:
        with pytest.raises(FeatureOutOfFuel, match="doubler.*fuel"):
            fm.extract(X)
        with pytest.raises(FeatureOutOfFuel):  # rebuilt instance, same verdict
            fm.extract(X)
    _assert_healthy()


def test_infinite_loop_hits_the_wall_clock_deadline() -> None:
    fm = _load(wat.doubler(extract=INFINITE_LOOP), fuel_per_row=None, timeout_ms=50)
    with fm, pytest.raises(FeatureTimeout, match="deadline of 50"):
        fm.extract(X)
    _assert_healthy()


def test_memory_bomb_is_reported_as_memory_exhaustion() -> None:
    fm = _load(wat.doubler(extract=MEMORY_BOMB), memory_mib=4)
    with fm, pytest.raises(FeatureMemoryExhausted, match="limit of 4 MiB"):
        fm.extract(X)
    _assert_healthy()


def test_batch_too_big_for_the_memory_limit_fails_allocation_cleanly() -> None:
    # 2 MiB limit, rows_per_call derived from it; forcing a larger batch makes flf1_alloc return 0.
    with _load(wat.doubler(), memory_mib=2, batch_rows=1_000_000) as fm:
        assert fm.rows_per_call < 1_000_000
        n = fm.rows_per_call * 3 + 1
        out = fm.extract({"x": np.ones(n)})  # streamed in chunks that fit
        assert out["y"].shape == (n,) and np.all(out["y"] == 2.0)


def test_trap_is_typed_and_the_instance_is_rebuilt() -> None:
    with _load(wat.doubler(extract=TRAPS_ON_13)) as fm:
        assert fm.extract({"x": np.array([1.0])})["y"].tolist() == [2.0]
        with pytest.raises(FeatureTrap, match="unreachable"):
            fm.extract({"x": np.array([1.0, 13.0])})
        # The next call gets a fresh instance and works.
        assert fm.extract({"x": np.array([4.0, 5.0])})["y"].tolist() == [8.0, 10.0]


@pytest.mark.parametrize(("body", "match"), [(TRAP, "unreachable"), (OUT_OF_BOUNDS, "memory|bounds")])
def test_traps(body: str, match: str) -> None:
    with _load(wat.doubler(extract=body)) as fm, pytest.raises(FeatureTrap, match=match):
        fm.extract(X)
    _assert_healthy()


def test_bad_batch_status_and_unknown_row_status_are_errors() -> None:
    with _load(wat.doubler(extract=BAD_ARGUMENT)) as fm, pytest.raises(FeatureSandboxError, match="BAD_ARGUMENT"):
        fm.extract(X)
    with _load(wat.doubler(extract=UNKNOWN_STATUS)) as fm, pytest.raises(FeatureSandboxError, match="unknown row"):
        fm.extract(X)


def test_missing_export() -> None:
    with pytest.raises(FeatureExportError, match="missing export 'flf1_extract'"):
        _load(wat.doubler(omit=("flf1_extract",)))
    with pytest.raises(FeatureExportError, match="missing memory export"):
        _load(wat.doubler(omit=("memory",), extra="(memory 1)"))


def test_wrong_export_type() -> None:
    wrong = '(func (export "flf1_extract") (param i64 i32) (result i32) (i32.const 0))'
    with pytest.raises(FeatureExportError, match=r"type \(i64, i32\) -> \(i32\), the ABI requires \(i32, i32\)"):
        _load(wat.doubler(extract=wrong))


def test_unexpected_imports_are_refused() -> None:
    imports = '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
    with pytest.raises(FeatureImportError, match="wasi_snapshot_preview1.fd_write"):
        _load(wat.doubler(imports=imports))


def test_wrong_abi_version_in_code_and_in_manifest() -> None:
    with pytest.raises(FeatureAbiMismatch, match="code speaks ABI 2"):
        _load(wat.doubler(abi_version_body="(i32.const 2)"))
    with pytest.raises(FeatureAbiMismatch, match="declares ABI version 2"):
        _load(wat.doubler(code_manifest=wat.manifest(abi=2)))


def test_manifest_that_lies_about_its_columns() -> None:
    lie = wat.manifest(outputs=[{"name": "y", "dtype": "f32", "shape": [], "unit": "", "description": "twice x"}])
    with pytest.raises(FeatureManifestError, match="disagrees with the module's code about its columns"):
        _load(wat.doubler(embedded_manifest=lie))
    renamed = wat.manifest(version="9.9.9")
    with pytest.raises(FeatureManifestError, match="version='9.9.9'"):
        _load(wat.doubler(embedded_manifest=renamed))


def test_missing_or_malformed_manifest() -> None:
    with pytest.raises(FeatureManifestError, match="featurec build"):
        _load(wat.build(wat.doubler_wat(), embed=False))
    bad = wat.manifest(inputs=[{"name": "Bad Name", "dtype": "f64"}])
    with pytest.raises(FeatureManifestError, match="column name"):
        _load(wat.doubler(embedded_manifest=bad))


def test_not_wasm_at_all() -> None:
    with pytest.raises(FeatureModuleInvalid, match="not a WebAssembly module"):
        _load(b"#!/bin/sh\necho hello\n")


def test_start_function_that_loops_is_stopped_at_load() -> None:
    extra = "(func $start (loop $l (br $l))) (start $start)"
    with pytest.raises(FeatureOutOfFuel):
        _load(wat.doubler(extra=extra), fuel_base=100_000)


def test_module_that_needs_more_memory_than_the_limit() -> None:
    with pytest.raises(FeatureMemoryExhausted, match="memory limit of 1 MiB"):
        _load(wat.doubler(memory_pages=64), memory_mib=1)


# The allocator is the module's: every block it hands back must lie inside memory and overlap no other. -------
_FIRST = 65536  # the doubler's heap starts at page 1; x is the first block, y follows 3 rows * 8 bytes later


@pytest.mark.parametrize(
    ("call", "address", "match"),
    [
        (4, 0x7FFFFFF0, "the column table at 0x7ffffff0 .* ends past"),  # was an IndexError traceback
        (4, _FIRST, "column 'x' .* overlaps the column table|the column table .* overlaps column 'x'"),
        (2, _FIRST, "column 'x' at 0x10000 .* overlaps column 'y'|column 'y' .* overlaps column 'x'"),
        (3, _FIRST + 24, "column 'y' .* overlaps column 'status'|column 'status' .* overlaps column 'y'"),
        (1, 0x7FFFFFF0, "invalid address 0x7ffffff0"),
    ],
)
def test_allocator_blocks_outside_memory_or_overlapping_are_refused(call: int, address: int, match: str) -> None:
    module = wat.doubler(omit=("flf1_alloc",), extra=wat.hostile_alloc(wat.alloc_returns_on_call(call, address)))
    with _load(module) as fm:
        with pytest.raises(FeatureSandboxError, match=match):
            fm.extract(X)
        with pytest.raises(FeatureSandboxError, match=match):  # the rebuilt instance is refused the same way
            fm.extract(X)
    _assert_healthy()


def test_an_allocator_that_hands_out_one_block_for_everything_is_refused() -> None:
    module = wat.doubler(omit=("flf1_alloc",), extra=wat.hostile_alloc(f"(return (i32.const {_FIRST}))"))
    with _load(module) as fm, pytest.raises(FeatureSandboxError, match="overlaps"):
        fm.extract(X)


def test_a_well_behaved_hostile_alloc_wrapper_still_works() -> None:
    """The wrapper itself is sound: with a rule that never fires the module runs (so the tests above can fail)."""
    module = wat.doubler(omit=("flf1_alloc",), extra=wat.hostile_alloc(wat.alloc_returns_on_call(99, 0)))
    with _load(module) as fm:
        assert fm.extract(X)["y"].tolist() == [2.0, 4.0, 6.0]


@pytest.mark.parametrize("where", ["embedded", "code"])
def test_a_deeply_nested_manifest_is_a_manifest_error(where: str) -> None:
    depth = 50_000  # 100 kB, well under the 1 MiB cap, and far past json's recursion limit
    text = b'{"abi_version": 1, "name": "doubler", "version": "1.0.0", "inputs": ' + b"[" * depth + b"]" * depth
    text += b', "outputs": []}'
    if where == "embedded":
        data = with_custom_section(wat.build(wat.doubler_wat(), embed=False), MANIFEST_SECTION, text)
    else:  # the embedded manifest is fine; the one the code declares is the hostile one
        data = wat.build(wat.doubler_wat(code_manifest=text, memory_pages=4), wat.manifest())
    with pytest.raises(FeatureManifestError, match=f"nested {depth + 1} levels"):
        _load(data)
    _assert_healthy()


def test_fuel_beyond_u64_is_capped_not_wrapped() -> None:
    # 4 rows * 2^62 + 100 wraps to 100 in wasmtime's u64, which starves a good module; capped, it runs.
    with _load(wat.doubler(), fuel_per_row=1 << 62, fuel_base=100) as fm:
        assert fm.extract({"x": np.arange(4.0)})["y"].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_wide_outputs_are_refused_before_the_host_allocates_them() -> None:
    # Seven 1 MiB text outputs fit the 64 MiB sandbox a few rows at a time, but 200 rows would make the host
    # allocate 1.4 GB of output arrays.
    wide = [{"name": f"t{i}", "dtype": "ascii", "shape": [1 << 20]} for i in range(7)]
    columns = wat.manifest(outputs=[*wat.X_COLUMNS["outputs"], *wide])
    with _load(wat.doubler(code_manifest=columns, embedded_manifest=columns)) as fm:
        tracemalloc.start()
        try:
            with pytest.raises(FeatureInputError, match="host_memory_mib=1024; pass at most 146 rows"):
                fm.extract({"x": np.zeros(200)})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20, f"refusing peaked at {peak} bytes"


def test_the_host_memory_limit_counts_rows_times_the_row_width() -> None:
    with _load(wat.doubler(), host_memory_mib=1) as fm:
        fits = (1 << 20) // fm.manifest.row_bytes
        assert fm.extract({"x": np.ones(fits)})["y"].shape == (fits,)
        with pytest.raises(FeatureInputError, match=f"pass at most {fits} rows"):
            fm.extract({"x": np.ones(fits + 1)})
    with pytest.raises(ValueError, match="host_memory_mib"):
        SandboxLimits(host_memory_mib=0)


def test_non_ascii_bytes_in_an_ascii_output_are_the_modules_fault() -> None:
    # Outputs y: f64 and name: ascii[4]; the module writes 0xff into the first byte of every name.
    columns = wat.manifest(outputs=[*wat.X_COLUMNS["outputs"], {"name": "name", "dtype": "ascii", "shape": [4]}])
    extract = """
  (func (export "flf1_extract") (param $n i32) (param $t i32) (result i32)
    (memory.fill (i32.load offset=8 (local.get $t)) (i32.const 0xff) (i32.mul (local.get $n) (i32.const 4)))
    (memory.fill (i32.load offset=12 (local.get $t)) (i32.const 0) (local.get $n))
    (i32.const 0))"""
    module = wat.doubler(code_manifest=columns, embedded_manifest=columns, extract=extract)
    with _load(module) as fm, pytest.raises(FeatureSandboxError, match="non-ASCII byte 0xff into ascii output 'name'"):
        fm.extract(X)
    _assert_healthy()
