"""The portable feature pipeline end to end (the first main job; `flclient demo` now runs a federation).

1. featurec builds the reference crate wasm/rust-features/device_context into a signed WASM module;
2. the device side (flclient) loads it (sha256 + signature verified, compiled once and cached),
   extracts features from the bundled sample in the sandbox, and writes them to out/features.csv;
3. a summary of what came out is printed.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np

from featurec import FeaturecError, build_module
from flclient import FLClientError, _signing
from flclient.features import FeatureModule, RowStatus
from flclient.features._columns_io import ColumnFileError, read_columns, write_columns

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out"


def main() -> int:
    t0 = time.perf_counter()
    built = build_module(ROOT / "wasm" / "rust-features" / "device_context", OUT / "modules")
    build_s = time.perf_counter() - t0
    print(f"built   {built.path.relative_to(ROOT)}  {built.size} bytes  sha256 {built.sha256[:16]}…  ({build_s:.1f} s)")

    private_pem, public_pem = _signing.generate_key_pair()  # a throwaway publisher key for the demo
    signature = _signing.sign(built.path.read_bytes(), _signing.load_private_key(private_pem))
    built.path.with_name(built.path.name + ".sig").write_bytes(signature.to_bytes())
    print(f"signed  with key {signature.key_id}")

    sample = ROOT / "scripts" / "data" / "device_context_sample.csv"
    t0 = time.perf_counter()
    with FeatureModule.load(
        built.path,
        cache_dir=OUT / "cache",
        expected_sha256=built.sha256,
        trusted_keys=[_signing.load_public_key(public_pem)],
    ) as module:
        load_ms = (time.perf_counter() - t0) * 1000
        print(
            f"loaded  {module.manifest.name} {module.manifest.version} (verified; "
            f"{'cached compile' if module.from_cache else 'compiled'} in {load_ms:.1f} ms)"
        )
        inputs = read_columns(sample, module.manifest.inputs)
        t0 = time.perf_counter()
        out = module.extract(inputs)
        extract_s = time.perf_counter() - t0
        write_columns(OUT / "features.csv", module.manifest.outputs, out)

    n = len(out["status"])
    ok = out["status"] == RowStatus.OK
    print(
        f"extract {n} rows from {sample.relative_to(ROOT)} in {extract_s * 1000:.2f} ms "
        f"-> {(OUT / 'features.csv').relative_to(ROOT)}"
    )
    print()
    print(
        "row status   "
        + ", ".join(f"{RowStatus(s).name}={c}" for s, c in sorted(collections.Counter(out["status"].tolist()).items()))
    )
    hours = np.bincount(out["hour_of_day"][ok], minlength=24)
    print("hour (UTC)   " + " ".join(f"{h:02d}:{c}" for h, c in enumerate(hours) if c))
    print(f"weekend      {out['is_weekend'][ok].mean():.1%} of valid rows")
    buckets = np.bincount(out["battery_bucket"][ok], minlength=11)
    print("battery      " + " ".join(f"{b * 10}%:{c}" for b, c in enumerate(buckets)))
    cells = collections.Counter(h.decode() for h in out["location_hash"][ok]).most_common(5)
    print("top cells    " + ", ".join(f"{cell}:{count}" for cell, count in cells))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FeaturecError, FLClientError, ColumnFileError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
