"""device_context: the WASM module against an independent Python reference (pygeohash) and its native build."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from featurec import NativeFeatureLibrary
from featurec._build import BuiltModule
from featurec._golden import compare
from flclient.features import FeatureModule

from .reference_device_context import boundary_rows, numpy_reference, python_reference, random_rows


def _mismatches(module: FeatureModule, got: dict[str, Any], want: dict[str, Any]) -> list[Any]:
    return compare(module.manifest, got, want)


@pytest.fixture(scope="module")
def module(device_context_module: BuiltModule) -> Any:
    with FeatureModule.load(device_context_module.path) as fm:
        yield fm


def test_manifest(module: FeatureModule) -> None:
    m = module.manifest
    assert (m.name, m.version, m.abi_version) == ("device_context", "1.0.0", 1)
    assert [c.name for c in m.inputs] == ["timestamp_ms", "location_lat", "location_lon", "battery_level"]
    assert [(c.name, c.dtype, c.shape) for c in m.outputs] == [
        ("hour_of_day", "u8", ()),
        ("is_weekend", "u8", ()),
        ("battery_bucket", "u8", ()),
        ("location_hash", "ascii", (5,)),
    ]


def test_boundary_rows_match_the_python_reference(module: FeatureModule) -> None:
    rows = boundary_rows()
    want = python_reference(rows)
    diffs = _mismatches(module, module.extract(rows), want)
    assert diffs == [], diffs[:10]
    # The boundary set really covers every status and both weekend values.
    assert set(want["status"].tolist()) == {0, 1, 2}
    assert set(want["is_weekend"][want["status"] == 0].tolist()) == {0, 1}


def test_random_rows_match_the_python_reference(module: FeatureModule) -> None:
    rows = random_rows(12_000, seed=7)
    want = python_reference(rows)
    diffs = _mismatches(module, module.extract(rows), want)
    assert diffs == [], diffs[:10]
    assert (want["status"] == 0).mean() > 0.9


def test_numpy_reference_agrees_with_python_reference() -> None:
    rows = {
        k: np.concatenate([a, b])
        for (k, a), b in zip(boundary_rows().items(), random_rows(3000, 1).values(), strict=True)
    }
    py, vec = python_reference(rows), numpy_reference(rows)
    for key in py:
        np.testing.assert_array_equal(py[key], vec[key], err_msg=key)


def test_known_values(module: FeatureModule) -> None:
    out = module.extract(
        {
            "timestamp_ms": [0, 2 * 86_400_000 + 5 * 3_600_000, 3 * 86_400_000],  # Thu 00h, Sat 05h, Sun 00h
            "location_lat": [0.0, 52.52, 90.0],
            "location_lon": [0.0, 13.405, 180.0],
            "battery_level": [0.7, 1.0, 0.0],
        }
    )
    assert out["hour_of_day"].tolist() == [0, 5, 0]
    assert out["is_weekend"].tolist() == [0, 1, 1]
    assert out["battery_bucket"].tolist() == [7, 10, 0]
    assert out["location_hash"].tolist() == [b"s0000", b"u33dc", b"zzzzz"]


def test_wasm_equals_native_build(module: FeatureModule, device_context_native: NativeFeatureLibrary) -> None:
    rows = random_rows(5000, seed=3)
    assert _mismatches(module, module.extract(rows), device_context_native.extract(rows)) == []
