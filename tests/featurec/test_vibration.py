"""vibration: array-valued columns through the ABI, against a numpy reference and the native build."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from featurec import NativeFeatureLibrary
from featurec._build import BuiltModule
from featurec._golden import compare
from flclient.features import FeatureModule, RowStatus

N = 256


def numpy_reference(samples: np.ndarray[Any, Any], rate: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """float64 reference with numpy's FFT (tolerance-level agreement: different summation order)."""
    x = samples.astype(np.float64)
    rms = np.sqrt((x * x).mean(axis=1))
    p2p = x.max(axis=1) - x.min(axis=1)
    peak = np.abs(x).max(axis=1)
    crest = np.divide(peak, rms, out=np.zeros_like(rms), where=rms > 0)
    centered = x - x.mean(axis=1, keepdims=True)
    m2 = (centered**2).mean(axis=1)
    m4 = (centered**4).mean(axis=1)
    kurt = np.divide(m4, m2**2, out=np.zeros_like(m2), where=m2 > 0)
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2 / N  # bins 0..128
    bands = power[:, 1:].reshape(len(x), 4, 32).sum(axis=2)
    dominant = (np.argmax(np.abs(np.fft.rfft(x, axis=1))[:, 1:], axis=1) + 1) * rate.astype(np.float64) / N
    return {
        "rms": rms,
        "peak_to_peak": p2p,
        "crest_factor": crest,
        "kurtosis": kurt,
        "band_energy": bands,
        "dominant_hz": dominant,
    }


def windows(n: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """Noisy machine vibrations: a few tones at bin frequencies plus noise, at several sample rates."""
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    bins = rng.integers(1, 128, size=(n, 3))
    amps = rng.uniform(0.2, 2.0, size=(n, 3)) * np.array([3.0, 1.0, 0.5])  # one clearly dominant tone
    tones = sum(
        amps[:, j, None] * np.sin(2 * np.pi * bins[:, j, None] * t / N + rng.uniform(0, 6, (n, 1))) for j in range(3)
    )
    samples = (tones + rng.normal(0, 0.05, (n, N))).astype(np.float32)
    rate = rng.choice(np.array([400.0, 1000.0, 3200.0], dtype=np.float32), n)
    return {"samples": samples, "sample_rate_hz": rate}


@pytest.fixture(scope="module")
def module(vibration_module: BuiltModule) -> Any:
    with FeatureModule.load(vibration_module.path) as fm:
        yield fm


def test_manifest_carries_vector_columns(module: FeatureModule) -> None:
    m = module.manifest
    assert [(c.name, c.dtype, c.shape) for c in m.inputs] == [("samples", "f32", (256,)), ("sample_rate_hz", "f32", ())]
    assert m.column("band_energy").shape == (4,)


def test_matches_numpy_reference(module: FeatureModule) -> None:
    rows = windows(400, seed=5)
    got = module.extract(rows)
    want = numpy_reference(rows["samples"], rows["sample_rate_hz"])
    assert (got["status"] == RowStatus.OK).all()
    for key, ref in want.items():
        np.testing.assert_allclose(got[key], ref, rtol=2e-5, atol=1e-6, err_msg=key)
    assert got["band_energy"].shape == (400, 4) and got["band_energy"].dtype == np.float32


def test_invalid_windows_are_flagged(module: FeatureModule) -> None:
    rows = windows(4, seed=1)
    rows["samples"][1, 17] = np.nan
    rows["sample_rate_hz"][2] = 0.0
    rows["samples"][3, :] = 1.5  # constant: valid, with kurtosis and crest defined as in the docs
    out = module.extract(rows)
    assert out["status"].tolist() == [RowStatus.OK, RowStatus.NON_FINITE_INPUT, RowStatus.INVALID_INPUT, RowStatus.OK]
    assert out["rms"][1] == 0 and out["band_energy"][2].tolist() == [0, 0, 0, 0]
    assert out["rms"][3] == np.float32(1.5) and out["kurtosis"][3] == 0 and out["peak_to_peak"][3] == 0


def test_wasm_equals_native_build_bit_for_bit(module: FeatureModule, vibration_native: NativeFeatureLibrary) -> None:
    rows = windows(300, seed=9)
    assert compare(module.manifest, module.extract(rows), vibration_native.extract(rows)) == []
