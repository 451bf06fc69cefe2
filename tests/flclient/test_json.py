"""Untrusted JSON: depth measured exactly and bounded before parsing; strict numbers; unique keys; ValueError only."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient._json import loads_untrusted, nesting_depth

_text = st.text(st.sampled_from('ab[]{}"\\,: \n\u00e9'), max_size=6)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@given(_values, st.booleans())
def test_depth_is_exact_and_brackets_in_strings_do_not_count(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth(text) == _depth(value)


@given(_values)
def test_round_trip_within_the_depth_and_refusal_beyond_it(value: Any) -> None:
    text = json.dumps(value)
    depth = _depth(value)
    assert loads_untrusted(text, max_depth=depth) == value
    if depth:
        with pytest.raises(ValueError, match=f"nested {depth} levels"):
            loads_untrusted(text, max_depth=depth - 1)


@given(st.binary(max_size=64) | _text.map(str.encode))
def test_arbitrary_bytes_raise_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        loads_untrusted(data, max_depth=3)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested 200000 levels"),
        (b'"' + b'\\"[' * 100_000, "Unterminated string"),  # an unterminated string of escapes: linear, not quadratic
        (b"[Infinity]", "Infinity"),
        (b"-Infinity", "-Infinity"),
        (b"[NaN]", "NaN"),
        (b"1e400", "float range"),
        (b'{"a": 1, "a": 2}', "repeats the key"),
        (b"\xff", "UTF-8"),
        (b"1" * 5000, "digits|int"),
    ],
)
def test_hostile_json_is_a_value_error(text: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        loads_untrusted(text, max_depth=4)
