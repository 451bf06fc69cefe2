from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient.gate import FeaturePin
from flclient.gate._compat import parse_version

_part = st.integers(min_value=0, max_value=10**8)


@given(_part, _part, _part)
def test_version_round_trip(a: int, b: int, c: int) -> None:
    assert parse_version(f"{a}.{b}.{c}") == (a, b, c)
    assert parse_version(f"{a}.{b}") == (a, b, 0)
    assert parse_version(f"{a}") == (a, 0, 0)


@given(st.text(max_size=30))
def test_version_parser_rejects_or_parses(text: str) -> None:
    try:
        v = parse_version(text)
    except ValueError:
        return
    assert parse_version(".".join(map(str, v))) == v


@given(st.tuples(_part, _part, _part), st.tuples(_part, _part, _part))
def test_version_order_is_numeric(x: tuple[int, int, int], y: tuple[int, int, int]) -> None:
    vx, vy = (parse_version(".".join(map(str, t))) for t in (x, y))
    assert (vx < vy) == (x < y)


@pytest.mark.parametrize("bad", ["01.2", "1.2.3-rc1", "v1", "", "1..2", "1.2.3.4"])
def test_bad_versions(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_version(bad)


def test_pin_validation() -> None:
    with pytest.raises(ValueError, match="sha256"):
        FeaturePin(name="x", version="1.0.0", sha256="AB" * 32)
