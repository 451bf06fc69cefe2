"""Feature extraction throughput: device_context as WASM (through the sandboxed host) against the same crate
built natively (ctypes), a numpy + pygeohash reference and a pure-Python reference, on the same rows, in the
same run. Prints one JSON object on its last line.

    .venv/bin/python benchmarks/bench_features.py [--quick]

Targets (issue 2): wasm at 10k rows >= 0.67x native; >= 10x the numpy reference; batch overhead (n = 1)
<= 20 us; cached load <= 5 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featurec import NativeFeatureLibrary, build_module, build_native  # noqa: E402
from flclient.features import FeatureModule  # noqa: E402
from tests.featurec.reference_device_context import numpy_reference, python_reference, random_rows  # noqa: E402

CRATE = ROOT / "wasm" / "rust-features" / "device_context"


def per_call_seconds(fn: Callable[[], object], *, min_time: float = 0.2, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time per call in a loop of at least ``min_time`` seconds."""
    fn()  # warm up
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= min_time / 4:
            break
        loops *= 4
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7

    with tempfile.TemporaryDirectory() as tmp:
        built = build_module(CRATE, Path(tmp) / "modules")
        native = NativeFeatureLibrary(build_native(CRATE))
        cache = Path(tmp) / "cache"

        cold = [per_call_seconds(lambda: FeatureModule.load(built.path).close(), min_time=0.3, repeats=repeats)]
        FeatureModule.load(built.path, cache_dir=cache).close()  # populate the cache
        cached = per_call_seconds(lambda: FeatureModule.load(built.path, cache_dir=cache).close(), repeats=repeats)

        results: dict[str, float] = {}
        rows_1m = random_rows(1_000_000, seed=11)
        with FeatureModule.load(built.path, cache_dir=cache) as module:
            for n, key in (
                (100, "wasm_rows_per_s_100"),
                (10_000, "wasm_rows_per_s_10k"),
                (1_000_000, "wasm_rows_per_s_1m"),
            ):
                rows = {k: v[:n] for k, v in rows_1m.items()}
                results[key] = n / per_call_seconds(lambda r=rows: module.extract(r), repeats=repeats)
            one = {k: v[:1] for k, v in rows_1m.items()}
            overhead = per_call_seconds(lambda: module.extract(one), repeats=repeats)
            rows_10k = {k: v[:10_000] for k, v in rows_1m.items()}
            wasm_out = module.extract(rows_10k)
            # The guest call alone (inputs already in guest memory): the kernel, without host marshalling.
            sandbox = module._sandbox
            inst = sandbox.instance
            assert inst is not None
            kernel_s = per_call_seconds(
                lambda: sandbox.guarded(lambda: inst.extract(10_000, inst.table_ptr), rows=10_000), repeats=repeats
            )

        inputs, n = native.prepare(rows_10k)
        outputs = [np.zeros((n, *c.row_shape), dtype=c.numpy_dtype) for c in native.manifest.outputs]
        status = np.zeros(n, dtype=np.uint8)
        table = np.zeros(len(inputs) + len(outputs) + 1, dtype=np.uintp)
        native_s = per_call_seconds(lambda: native.extract_into(inputs, outputs, status, table), repeats=repeats)
        np.testing.assert_array_equal(status, wasm_out["status"])  # same rows, same answers

        numpy_s = per_call_seconds(lambda: numpy_reference(rows_10k), repeats=repeats)
        rows_2k = {k: v[:2000] for k, v in rows_1m.items()}
        python_s = per_call_seconds(lambda: python_reference(rows_2k), repeats=repeats) / 2000 * 10_000

    report = {
        **{k: round(v) for k, v in results.items()},
        "wasm_kernel_rows_per_s_10k": round(10_000 / kernel_s),
        "native_rows_per_s": round(10_000 / native_s),
        "numpy_ref_rows_per_s": round(10_000 / numpy_s),
        "python_ref_rows_per_s": round(10_000 / python_s),
        "batch_call_overhead_us": round(overhead * 1e6, 2),
        "cached_load_ms": round(cached * 1e3, 3),
        "cold_compile_ms": round(min(cold) * 1e3, 2),
        "wasm_10k_vs_native": round(results["wasm_rows_per_s_10k"] / (10_000 / native_s), 3),
        "wasm_kernel_10k_vs_native": round(native_s and kernel_s and native_s / kernel_s, 3),
        "wasm_10k_vs_numpy_ref": round(results["wasm_rows_per_s_10k"] / (10_000 / numpy_s), 1),
        "module_bytes": built.size,
    }
    report["targets_met"] = {
        "wasm_10k_ge_0.67x_native": report["wasm_10k_vs_native"] >= 0.67,
        "wasm_10k_ge_10x_numpy_ref": report["wasm_10k_vs_numpy_ref"] >= 10,
        "batch_overhead_le_20us": report["batch_call_overhead_us"] <= 20,
        "cached_load_le_5ms": report["cached_load_ms"] <= 5,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
