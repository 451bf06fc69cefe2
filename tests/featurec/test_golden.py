"""`featurec test` on the reference crates: committed golden vectors, and wasm against the native build."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurec._testing import run_golden_test

CRATES = Path(__file__).resolve().parents[2] / "wasm" / "rust-features"


@pytest.mark.parametrize("crate", ["device_context", "vibration"])
def test_reference_crate_matches_golden_vectors_and_native_build(crate: str) -> None:
    report = run_golden_test(CRATES / crate, random_rows=2000, seed=42)
    assert report.golden_rows >= 10
    assert report.random_rows == 2000
    assert len(report.checks) == 3
    assert report.ok, {k: v[:5] for k, v in report.mismatches.items()}


# ---- the golden-vector file codec -----------------------------------------------------------------

import json  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from featurec import CrateError  # noqa: E402
from featurec._golden import compare, dumps_golden, loads_golden  # noqa: E402
from flclient.features import Column, Manifest  # noqa: E402

MANIFEST = Manifest(
    name="golden_codec",
    version="1.0.0",
    inputs=(Column(name="a", dtype="u64"), Column(name="b", dtype="f32", shape=(3,))),
    outputs=(Column(name="c", dtype="f64"), Column(name="d", dtype="ascii", shape=(4,)), Column(name="e", dtype="i8")),
)


@st.composite
def golden_data(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    n = draw(st.integers(0, 12))
    f32 = st.floats(width=32)
    inputs = {
        "a": np.array(draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)), dtype=np.uint64),
        "b": np.array(
            draw(st.lists(st.lists(f32, min_size=3, max_size=3), min_size=n, max_size=n)), dtype=np.float32
        ).reshape(n, 3),
    }
    expected = {
        "c": np.array(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64),
        "d": np.array(
            [
                s.encode()
                for s in draw(st.lists(st.from_regex(r"[a-z0-9]{0,4}", fullmatch=True), min_size=n, max_size=n))
            ],
            dtype="S4",
        ),
        "e": np.array(draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n)), dtype=np.int8),
        "status": np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.uint8),
    }
    return inputs, expected


@given(golden_data())
def test_golden_file_round_trips_bit_for_bit(data: tuple[dict[str, Any], dict[str, Any]]) -> None:
    inputs, expected = data
    text = dumps_golden(MANIFEST, inputs, expected)
    json.loads(text)  # plain JSON: non-finite floats are strings
    back_in, back_exp = loads_golden(text, MANIFEST)
    for key, arr in inputs.items():
        assert back_in[key].tobytes() == arr.tobytes() or np.array_equal(back_in[key], arr, equal_nan=True)
    assert compare(MANIFEST, back_exp, expected) == []


@given(golden_data(), st.integers(1, 300))
def test_truncated_golden_file_is_rejected(data: tuple[dict[str, Any], dict[str, Any]], cut: int) -> None:
    text = dumps_golden(MANIFEST, *data).rstrip()  # cut into the JSON itself, not its trailing newline
    with pytest.raises(CrateError):
        loads_golden(text[: max(0, len(text) - cut)], MANIFEST)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["inputs"].pop("a"), "no column 'a'"),
        (lambda o: o["inputs"].__setitem__("a", [1.5]), "must be integers"),
        (lambda o: o["inputs"].__setitem__("a", [-1]), "outside the u64 range"),
        (lambda o: o["inputs"].__setitem__("b", [[1.0, 2.0]]), "list of 3 numbers"),
        (lambda o: o["expected"].__setitem__("d", ["toolong"]), "at most 4"),
        (lambda o: o["expected"].__setitem__("c", ["nan"]), "not a number"),
        (lambda o: o.pop("expected"), "top-level"),
    ],
)
def test_malformed_golden_files_name_the_problem(mutate: Any, message: str) -> None:
    obj = {"inputs": {"a": [1], "b": [[1.0, 2.0, 3.0]]}, "expected": {"c": [0.5], "d": ["ab"], "e": [1], "status": [0]}}
    mutate(obj)
    with pytest.raises(CrateError, match=message):
        loads_golden(json.dumps(obj), MANIFEST)
