"""``featurec test``: a module against its golden vectors and against the crate's native build."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flclient._atomic import atomic_write_bytes
from flclient.features._abi import Column, Manifest
from flclient.features._host import FeatureModule

from ._build import build_module, build_native
from ._errors import CrateError
from ._golden import columns_from_json, compare, dumps_golden, loads_golden
from ._native import NativeFeatureLibrary

__all__ = ["GoldenReport", "random_inputs", "run_golden_test"]

GOLDEN_FILE = Path("golden") / "vectors.json"


@dataclass
class GoldenReport:
    module: str
    golden_rows: int = 0
    random_rows: int = 0
    checks: list[str] = field(default_factory=list)
    mismatches: dict[str, list[tuple[int, str, Any, Any]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())


def random_inputs(manifest: Manifest, n: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """Rows that exercise every dtype: typical values, domain edges and non-finite floats."""
    rng = np.random.default_rng(seed)
    return {c.name: _random_column(c, n, rng) for c in manifest.inputs}


def _random_column(col: Column, n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    size = n * col.width
    if col.dtype == "ascii":
        raw = rng.integers(32, 127, size=size, dtype=np.uint8)
        return raw.view(col.numpy_dtype)
    dt = col.element_dtype
    if dt.kind == "f":
        pick = rng.integers(0, 6, size=size)
        special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 90.0, 180.0, -90.0, -180.0])
        values = np.select(
            [pick == 0, pick == 1, pick == 2, pick == 3, pick == 4],
            [
                rng.uniform(0.0, 1.0, size),
                rng.uniform(-200.0, 200.0, size),
                rng.normal(0.0, 3.0, size),
                special[rng.integers(0, len(special), size)],
                rng.uniform(-1e6, 1e6, size),
            ],
            rng.uniform(-1e12, 1e12, size),
        )
        arr = values.astype(dt)
    else:
        info = np.iinfo(dt)
        wide = rng.integers(info.min, info.max, size=size, dtype=dt, endpoint=True)
        small = rng.integers(0, 2_000_000_000_000 if dt.itemsize == 8 else min(info.max, 1000), size=size).astype(dt)
        arr = np.where(rng.random(size) < 0.5, wide, small).astype(dt)
    return arr.reshape(n, *col.row_shape)


def _record(report: GoldenReport, label: str, diffs: list[tuple[int, str, Any, Any]]) -> None:
    report.checks.append(label)
    report.mismatches[label] = diffs


def run_golden_test(
    target: Path, *, golden: Path | None = None, bless: bool = False, random_rows: int = 2000, seed: int = 0
) -> GoldenReport:
    """Test a crate directory (builds wasm + native) or a built module file (golden vectors only)."""
    with tempfile.TemporaryDirectory(prefix="featurec-test-") as tmp:
        native: NativeFeatureLibrary | None = None
        if target.is_dir():
            built = build_module(target, Path(tmp))
            module_path = built.path
            native = NativeFeatureLibrary(build_native(target))
            golden = golden or target / GOLDEN_FILE
        else:
            module_path = target
            if golden is None:
                raise CrateError(
                    f"testing a module file needs its golden vectors: featurec test {target} --golden FILE"
                )
        with FeatureModule.load(module_path) as module:
            manifest = module.manifest
            report = GoldenReport(module=f"{manifest.name} {manifest.version}")
            if native is not None and native.manifest != manifest:
                raise CrateError("the native build declares a different manifest than the wasm build")
            if bless:
                if native is None:
                    raise CrateError("--bless needs a crate directory (expected outputs come from its native build)")
                _bless(golden, manifest, module, native, report)
            if not golden.is_file():
                raise CrateError(f"no golden vectors at {golden}; write inputs there and run with --bless")
            inputs, expected = loads_golden(golden.read_bytes(), manifest)
            report.golden_rows = len(expected["status"])
            got = module.extract(inputs)
            _record(report, "wasm vs golden expected", compare(manifest, got, expected))
            if native is not None:
                _record(report, "wasm vs native (golden inputs)", compare(manifest, got, native.extract(inputs)))
                if random_rows:
                    rand = random_inputs(manifest, random_rows, seed)
                    report.random_rows = random_rows
                    _record(
                        report,
                        f"wasm vs native ({random_rows} random rows, seed {seed})",
                        compare(manifest, module.extract(rand), native.extract(rand)),
                    )
    return report


def _bless(
    golden: Path,
    manifest: Manifest,
    module: FeatureModule,
    native: NativeFeatureLibrary,
    report: GoldenReport,
) -> None:
    """Rewrite the expected outputs from the native build, after checking wasm agrees with it."""
    if not golden.is_file():
        raise CrateError(f"--bless rewrites expected outputs of existing inputs; {golden} does not exist")
    try:
        obj = json.loads(golden.read_bytes())
    except json.JSONDecodeError as exc:
        raise CrateError(f"{golden} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CrateError(f"{golden} must be a JSON object with 'inputs'")
    inputs = columns_from_json(manifest.inputs, obj.get("inputs"), "inputs")
    want = native.extract(inputs)
    diffs = compare(manifest, module.extract(inputs), want)
    if diffs:
        _record(report, "wasm vs native before blessing", diffs)
        return
    atomic_write_bytes(golden, dumps_golden(manifest, inputs, want).encode())
    report.checks.append(f"blessed {golden}")
