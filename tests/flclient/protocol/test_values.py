"""ValueReader's converters and loads_json as properties: strict types, bounds, every refusal naming its key."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.protocol import ValueReader, loads_json

KEY = "the-key"
not_numbers = st.one_of(
    st.booleans(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.just({}),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)]),
)


def _refused(read: Any, value: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    """Reading ``value`` under KEY with ``read`` raises a ProtocolError naming KEY and the record."""
    reader = ValueReader({KEY: value}, where="rec")
    with pytest.raises(ProtocolError) as info:
        read(reader, KEY, *args, **kwargs)
    assert info.value.key == KEY and repr(KEY) in str(info.value) and "rec" in str(info.value)
    return info.value


# --- whole --------------------------------------------------------------------------------------------------------


@given(st.integers(-(2**63), 2**63 - 1))
def test_whole_accepts_ints(value: int) -> None:
    assert ValueReader({KEY: value}, where="rec").whole(KEY) == value


@given(st.integers(-(2**53), 2**53))
def test_whole_accepts_floats_without_a_fraction(value: int) -> None:
    got = ValueReader({KEY: float(value)}, where="rec").whole(KEY)
    assert got == value and type(got) is int


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-(2**52), max_value=2**52))
def test_whole_refuses_a_fraction(value: float) -> None:
    assume(value != int(value))
    _refused(ValueReader.whole, value)


@given(not_numbers.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)))
def test_whole_refuses_what_is_not_a_whole_number(value: Any) -> None:
    err = _refused(ValueReader.whole, value)
    assert "whole number" in str(err)


def test_whole_examples() -> None:
    reader = ValueReader({"a": 3, "b": 3.0}, where="rec")
    assert (reader.whole("a"), reader.whole("b")) == (3, 3)
    for wrong in (3.5, True, "3", [3]):
        _refused(ValueReader.whole, wrong)


@given(st.integers(), st.integers(-100, 100), st.integers(-100, 100))
def test_whole_holds_its_bounds(value: int, low: int, span: int) -> None:
    high = low + abs(span)
    reader = ValueReader({KEY: value}, where="rec")
    if low <= value <= high:
        assert reader.whole(KEY, minimum=low, maximum=high) == value
    else:
        _refused(ValueReader.whole, value, minimum=low, maximum=high)


@given(st.integers(min_value=2**63))
def test_whole_refuses_ints_past_int64_by_default(value: int) -> None:
    _refused(ValueReader.whole, value)


# --- number -------------------------------------------------------------------------------------------------------


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**1000), 2**1000))
def test_number_accepts_finite_ints_and_floats(value: float) -> None:
    got = ValueReader({KEY: value}, where="rec").number(KEY)
    assert type(got) is float and got == float(value)


@given(not_numbers)
def test_number_refuses_bools_strings_and_non_finite_values(value: Any) -> None:
    err = _refused(ValueReader.number, value)
    assert "finite number" in str(err)


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(-10, 10), st.floats(0, 10))
def test_number_holds_its_bounds(value: float, low: float, span: float) -> None:
    high = low + span
    reader = ValueReader({KEY: value}, where="rec")
    if low <= value <= high:
        assert reader.number(KEY, minimum=low, maximum=high) == value
    else:
        _refused(ValueReader.number, value, minimum=low, maximum=high)
    if not value > low:
        _refused(ValueReader.number, value, above=low)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70), max_size=5))
def test_numbers_accepts_a_list_of_finite_numbers(values: list[float]) -> None:
    assert ValueReader({KEY: values}, where="rec").numbers(KEY) == tuple(float(v) for v in values)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3), not_numbers, st.data())
def test_numbers_refuses_a_list_with_one_wrong_element(values: list[float], wrong: Any, data: st.DataObject) -> None:
    values.insert(data.draw(st.integers(0, len(values))), wrong)
    _refused(ValueReader.numbers, values)
    _refused(ValueReader.numbers, 1.0)


# --- the other converters -------------------------------------------------------------------------------------


@given(st.text(max_size=30), st.integers(0, 30))
def test_text_accepts_strings_up_to_its_bound(value: str, max_len: int) -> None:
    reader = ValueReader({KEY: value}, where="rec")
    if len(value) <= max_len:
        assert reader.text(KEY, max_len=max_len) == value
    else:
        _refused(ValueReader.text, value, max_len=max_len)


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.binary(), st.lists(st.text(), max_size=2)))
def test_text_refuses_what_is_not_a_string(value: Any) -> None:
    _refused(ValueReader.text, value)
    _refused(ValueReader.optional_text, value)


@given(st.lists(st.text(max_size=3), min_size=1, max_size=4, unique=True), st.data())
def test_choice_returns_the_choice_itself(choices: list[str], data: st.DataObject) -> None:
    value = data.draw(st.sampled_from(choices))
    got = ValueReader({KEY: value}, where="rec").choice(KEY, choices)
    assert got == value and any(got is c for c in choices)  # the caller's own literal comes back
    wrong = data.draw(
        st.one_of(st.text(max_size=3), st.integers(), st.binary(max_size=3)).filter(lambda v: v not in choices)
    )
    err = _refused(ValueReader.choice, wrong, choices)
    assert all(repr(c)[:10] in str(err) for c in choices[:2])


@given(st.one_of(st.text(max_size=3), st.integers(), st.lists(st.binary(), max_size=2)))
def test_blob_refuses_what_is_not_bytes(value: Any) -> None:
    _refused(ValueReader.blob, value)


@given(st.lists(st.text(max_size=3), max_size=3), st.lists(st.integers(), max_size=3))
def test_lists_of_texts_and_wholes(texts: list[str], wholes: list[int]) -> None:
    reader = ValueReader({"t": texts, "w": wholes}, where="rec")
    assert reader.texts("t") == tuple(texts) and reader.wholes("w") == tuple(wholes)
    assert reader.texts("absent") == () and reader.wholes("absent") == ()
    _refused(ValueReader.texts, [*texts, 1])
    _refused(ValueReader.wholes, [*wholes, True])
    _refused(ValueReader.wholes, [*wholes, 1.5])


@given(st.sampled_from(["whole", "number", "text", "choice"]))
def test_a_missing_required_key_is_named(kind: str) -> None:
    reader = ValueReader({}, where="rec")
    with pytest.raises(ProtocolError) as info:
        if kind == "choice":
            reader.choice(KEY, ("a",))
        else:
            getattr(reader, kind)(KEY)
    assert info.value.key == KEY and "lacks the required key" in str(info.value) and repr(KEY) in str(info.value)


def test_absent_keys_take_their_default() -> None:
    reader = ValueReader({}, where="rec")
    assert reader.whole(KEY, 7) == 7 and reader.number(KEY, 0.5) == 0.5 and reader.text(KEY, "d") == "d"
    assert reader.choice(KEY, ("a", "b"), default="b") == "b" and reader.optional_text(KEY) is None
    assert reader.blob(KEY) is None and reader.numbers(KEY) is None
    reader.finish()


@given(st.one_of(st.integers(), st.text(), st.lists(st.integers())))
def test_a_reader_needs_a_mapping(values: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        ValueReader(values, where="rec")
    assert info.value.key == "rec"


# --- finish -------------------------------------------------------------------------------------------------------


@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=6), st.data())
def test_finish_names_every_key_nobody_read(values: dict[str, int], data: st.DataObject) -> None:
    reader = ValueReader(values, where="rec")
    read = data.draw(st.sets(st.sampled_from(sorted(values)) if values else st.nothing()))
    for key in read:
        assert reader.has(key)
    unread = sorted(set(values) - read)
    if not unread:
        reader.finish()
        return
    with pytest.raises(ProtocolError) as info:
        reader.finish()
    assert info.value.key == unread[0]
    assert all(repr(k) in str(info.value) for k in unread)


@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), max_size=4), st.data())
def test_reading_a_key_in_any_way_counts(values: dict[str, int], data: st.DataObject) -> None:
    reader = ValueReader(values, where="rec")
    for key in values:
        how = data.draw(st.sampled_from(["has", "whole", "number", "wholes"]))
        if how == "wholes":
            with pytest.raises(ProtocolError):  # a refused value was still read: finish() does not name it again
                reader.wholes(key)
        else:
            getattr(reader, how)(key)
    reader.finish()


# --- loads_json -----------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


@given(json_values)
def test_loads_json_reads_what_json_writes(value: Any) -> None:
    assert loads_json(json.dumps(value), where=KEY) == value


@given(st.integers(33, 100_000), st.sampled_from(["[", '{"a":', '[{"a":']))
def test_loads_json_refuses_deep_nesting(depth: int, opener: str) -> None:
    with pytest.raises(ProtocolError) as info:
        loads_json(opener * depth, where=KEY)
    assert info.value.key == KEY and "levels deep" in str(info.value)


@given(st.integers(1, 32))
def test_loads_json_reads_nesting_up_to_its_bound(depth: int) -> None:
    assert loads_json("[" * depth + "]" * depth, where=KEY) is not None


def test_brackets_in_strings_do_not_count_as_nesting() -> None:
    text = json.dumps(["[" * 1000, '\\"[[[', "{" * 1000])
    assert loads_json(text, where=KEY) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ["NaN", "[NaN]", '{"a": Infinity}', "-Infinity", "", "{", "[1,]", "\x00", "9" * 5000, " " * (4 * 1024 * 1024 + 1)],
)
def test_loads_json_refuses_non_json_and_non_finite_constants(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        loads_json(text, where=KEY)
    assert info.value.key == KEY and KEY in str(info.value)


@given(st.text(alphabet='[]{}",:\\ 0-9eE.NaInfityrulsf', max_size=80))
def test_loads_json_raises_nothing_but_protocol_error(text: str) -> None:
    try:
        loads_json(text, where=KEY)
    except ProtocolError as exc:
        assert exc.key == KEY


@given(st.sampled_from(["whole", "number", "text", "optional_text", "choice", "blob", "numbers", "texts", "wholes"]))
def test_a_null_is_refused_not_read_as_absent(kind: str) -> None:
    reader = ValueReader({KEY: None}, where="rec")
    with pytest.raises(ProtocolError) as info:
        if kind == "choice":
            reader.choice(KEY, ("a",), default="a")
        elif kind in ("whole", "number", "text"):
            getattr(reader, kind)(KEY, {"whole": 1, "number": 1.0, "text": "d"}[kind])
        else:
            getattr(reader, kind)(KEY)
    assert info.value.key == KEY and "null" in str(info.value)
