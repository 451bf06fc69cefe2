"""The feature host with small WAT modules: marshalling, streaming, caching, integrity, input errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flclient import _signing
from flclient.features import (
    Column,
    FeatureInputError,
    FeatureIntegrityError,
    FeatureModule,
    Manifest,
    RowStatus,
    SandboxLimits,
)
from flclient.features._abi import DTYPES

from . import wat


def copy_module(columns: list[Column]) -> bytes:
    """A module whose outputs ``out_j`` are byte copies of its inputs ``in_j`` (tests marshalling only)."""
    k = len(columns)
    inputs = [Column(name=f"in_{j}", dtype=c.dtype, shape=c.shape) for j, c in enumerate(columns)]
    outputs = [Column(name=f"out_{j}", dtype=c.dtype, shape=c.shape) for j, c in enumerate(columns)]
    man = Manifest(name="copier", version="0.1.0", inputs=tuple(inputs), outputs=tuple(outputs)).to_json()
    copies = "\n".join(
        f"(memory.copy (i32.load offset={4 * (k + j)} (local.get $t)) (i32.load offset={4 * j} (local.get $t))"
        f" (i32.mul (local.get $n) (i32.const {c.row_bytes})))"
        for j, c in enumerate(columns)
    )
    extract = f"""
  (func (export "flf1_extract") (param $n i32) (param $t i32) (result i32)
    {copies}
    (memory.fill (i32.load offset={8 * k} (local.get $t)) (i32.const 0) (local.get $n))
    (i32.const 0))"""
    return wat.doubler(code_manifest=man, extract=extract)


def test_doubler_flags_invalid_rows_and_zeroes_their_outputs() -> None:
    with FeatureModule.from_bytes(wat.doubler()) as fm:
        out = fm.extract({"x": [1.0, float("nan"), -2.5]})
    assert out["y"].tolist() == [2.0, 0.0, -5.0]
    assert out["status"].tolist() == [RowStatus.OK, RowStatus.NON_FINITE_INPUT, RowStatus.OK]
    assert out["y"].dtype == np.float64 and out["status"].dtype == np.uint8


def test_empty_input_gives_empty_columns() -> None:
    with FeatureModule.from_bytes(wat.doubler()) as fm:
        out = fm.extract({"x": np.zeros(0)})
    assert out["y"].shape == (0,) and out["status"].shape == (0,)


def test_streams_large_inputs_in_chunks() -> None:
    x = np.random.default_rng(1).normal(size=10_007)
    with FeatureModule.from_bytes(wat.doubler(), limits=SandboxLimits(batch_rows=1000)) as fm:
        assert fm.rows_per_call == 1000
        out = fm.extract({"x": x})
    np.testing.assert_array_equal(out["y"], 2 * x)


_dtype_names = sorted(DTYPES)


@st.composite
def column_sets(draw: st.DrawFn) -> list[Column]:
    cols = []
    for j in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(_dtype_names))
        if dtype == "ascii":
            shape: tuple[int, ...] = (draw(st.integers(1, 9)),)
        else:
            shape = draw(st.sampled_from([(), (1,), (3,), (8,)]))
        cols.append(Column(name=f"c{j}", dtype=dtype, shape=shape))
    return cols


def _column_data(col: Column, n: int) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    if col.dtype == "ascii":
        text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=col.width)
        return st.lists(text, min_size=n, max_size=n).map(
            lambda v: np.array([s.encode() for s in v], dtype=f"S{col.width}")
        )
    return hnp.arrays(col.element_dtype, (n, *col.shape))


@given(data=st.data(), columns=column_sets(), n=st.integers(0, 40), batch=st.integers(1, 17))
def test_marshalling_round_trips_every_dtype_and_shape(
    data: st.DataObject, columns: list[Column], n: int, batch: int
) -> None:
    inputs = {f"in_{j}": data.draw(_column_data(c, n)) for j, c in enumerate(columns)}
    with FeatureModule.from_bytes(copy_module(columns), limits=SandboxLimits(batch_rows=batch)) as fm:
        out = fm.extract(inputs)
    for j, col in enumerate(columns):
        got, want = out[f"out_{j}"], inputs[f"in_{j}"]
        assert got.dtype == col.numpy_dtype and got.shape == want.shape
        # Bit-exact, NaN payloads included.
        assert got.tobytes() == want.astype(col.numpy_dtype).tobytes()
    assert out["status"].tolist() == [0] * n


def test_input_conversion_is_lossless_or_refused() -> None:
    ints = Column(name="a", dtype="u64")
    mod = copy_module([ints])
    with FeatureModule.from_bytes(mod) as fm:
        big = np.array([2**64 - 1, 0], dtype=np.uint64)
        assert fm.extract({"in_0": big})["out_0"].tolist() == [2**64 - 1, 0]
        assert fm.extract({"in_0": [1.0, 2.0]})["out_0"].tolist() == [1, 2]  # whole floats are fine
        with pytest.raises(FeatureInputError, match="whole numbers"):
            fm.extract({"in_0": [1.5]})
        with pytest.raises(FeatureInputError, match="outside the u64 range"):
            fm.extract({"in_0": [-1]})
        with pytest.raises(FeatureInputError, match=r"missing input column\(s\) \['in_0'\]"):
            fm.extract({"x": [1]})
        with pytest.raises(FeatureInputError, match="expected integers"):
            fm.extract({"in_0": ["a"]})
        with pytest.raises(FeatureInputError, match="shape"):
            fm.extract({"in_0": 5})


def test_float_inputs_are_refused_when_they_would_overflow_or_lose_integers() -> None:
    mod = copy_module([Column(name="a", dtype="f32")])
    with FeatureModule.from_bytes(mod) as fm:
        got = fm.extract({"in_0": np.array([0.5, -2.0, np.inf, 3e38])})["out_0"]
        assert got.tolist() == [0.5, -2.0, np.inf, float(np.float32(3e38))]  # rounding is fine, overflow is not
        assert fm.extract({"in_0": np.array([2**24, -(2**24)])})["out_0"].tolist() == [2**24, -(2**24)]
        with pytest.raises(FeatureInputError, match="beyond the f32 range"):
            fm.extract({"in_0": np.array([1.0, 1e39])})  # was silently inf
        with pytest.raises(FeatureInputError, match="cannot hold exactly"):
            fm.extract({"in_0": np.array([2**24 + 1])})  # was silently 2^24
        with pytest.raises(FeatureInputError, match="cannot hold exactly"):
            fm.extract({"in_0": np.array([2**64 - 1], dtype=np.uint64)})


def test_columns_must_have_equal_lengths() -> None:
    mod = copy_module([Column(name="a", dtype="f32"), Column(name="b", dtype="i8", shape=(2,))])
    with FeatureModule.from_bytes(mod) as fm:
        with pytest.raises(FeatureInputError, match="different lengths"):
            fm.extract({"in_0": [1.0, 2.0], "in_1": [[1, 2]]})
        with pytest.raises(FeatureInputError, match=r"expected \(rows, 2\)"):
            fm.extract({"in_0": [1.0], "in_1": [1]})


def test_compiled_module_cache(tmp_path: Path) -> None:
    data = wat.doubler()
    with FeatureModule.from_bytes(data, cache_dir=tmp_path) as first:
        assert not first.from_cache
    (entry,) = tmp_path.glob("*.cwasm")
    with FeatureModule.from_bytes(data, cache_dir=tmp_path) as second:
        assert second.from_cache
        assert second.extract({"x": [3.0]})["y"].tolist() == [6.0]
    # Different engine configuration (epoch interruption on) must not reuse the artifact.
    limits = SandboxLimits(timeout_ms=1000)
    with FeatureModule.from_bytes(data, cache_dir=tmp_path, limits=limits) as third:
        assert not third.from_cache
    assert len(list(tmp_path.glob("*.cwasm"))) == 2
    # A corrupted entry is detected by its checksum and recompiled, never deserialized.
    blob = bytearray(entry.read_bytes())
    blob[-100] ^= 0xFF
    entry.write_bytes(bytes(blob))
    with FeatureModule.from_bytes(data, cache_dir=tmp_path) as fourth:
        assert not fourth.from_cache
        assert fourth.extract({"x": [1.0]})["y"].tolist() == [2.0]
    entry.write_bytes(entry.read_bytes()[:50])  # truncated
    with FeatureModule.from_bytes(data, cache_dir=tmp_path) as fifth:
        assert not fifth.from_cache


def test_sha256_pin(tmp_path: Path) -> None:
    data = wat.doubler()
    path = tmp_path / "m.wasm"
    path.write_bytes(data)
    import hashlib

    FeatureModule.load(path, expected_sha256=hashlib.sha256(data).hexdigest()).close()
    with pytest.raises(FeatureIntegrityError, match="expected 00"):
        FeatureModule.load(path, expected_sha256="00" * 32)


def test_signatures(tmp_path: Path) -> None:
    data = wat.doubler()
    path = tmp_path / "m.wasm"
    path.write_bytes(data)
    priv_a, pub_a = _signing.generate_key_pair()
    _, pub_b = _signing.generate_key_pair()
    key_a, key_b = _signing.load_public_key(pub_a), _signing.load_public_key(pub_b)

    with pytest.raises(FeatureIntegrityError, match="signature .* cannot be read"):
        FeatureModule.load(path, trusted_keys=[key_a])
    sig = _signing.sign(data, _signing.load_private_key(priv_a))
    (tmp_path / "m.wasm.sig").write_bytes(sig.to_bytes())
    FeatureModule.load(path, trusted_keys=[key_a]).close()
    with pytest.raises(FeatureIntegrityError, match="not a trusted key"):
        FeatureModule.load(path, trusted_keys=[key_b])
    # Tampered module: one byte of the manifest changed.
    path.write_bytes(data[:-3] + b"x" + data[-2:])
    with pytest.raises(FeatureIntegrityError, match="different bytes"):
        FeatureModule.load(path, trusted_keys=[key_a])
    # Forged signature over the right digest.
    forged = json.loads(sig.to_bytes())
    forged["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (tmp_path / "m.wasm.sig").write_text(json.dumps(forged))
    with pytest.raises(FeatureIntegrityError, match="does not verify"):
        FeatureModule.load(path, trusted_keys=[key_a])


def test_closed_module_refuses_calls() -> None:
    fm = FeatureModule.from_bytes(wat.doubler())
    fm.close()
    fm.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        fm.extract({"x": [1.0]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fuel_per_row": None, "timeout_ms": None}, "could hang the device"),
        ({"memory_mib": 0}, "memory_mib"),
        ({"batch_rows": 0}, "batch_rows"),
        ({"timeout_ms": -1}, "timeout_ms"),
        ({"fuel_per_row": 0}, "fuel_per_row"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SandboxLimits(**kwargs)
