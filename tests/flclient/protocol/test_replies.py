"""Replies: every reply round-trips exactly, and every broken encoding is refused naming the record or key."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.fleet._objects import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flclient.protocol import (
    DeviceInfo,
    ErrorReply,
    EvaluateReply,
    Metric,
    QueryReply,
    Record,
    Reply,
    ReplyMetrics,
    SecAggReply,
    StatsReply,
    TrainReply,
    UpdateSignature,
)

from .strategies import (
    assert_same,
    devices,
    error_replies,
    evaluate_replies,
    metrics,
    query_replies,
    replies,
    secagg_replies,
    signatures,
    stats_replies,
    through_wire,
    train_replies,
)
from .test_tasks import names

INT_METRICS = {
    Metric.NUM_EXAMPLES,
    Metric.EVAL_EXAMPLES,
    Metric.MODEL_VERSION,
    Metric.UPDATE_BYTES,
    Metric.BYTES_DOWN,
}
FLOAT_METRICS = {
    Metric.EVAL_LOSS,
    Metric.EVAL_ACC,
    Metric.TRAIN_LOSS,
    Metric.TRAIN_S,
    Metric.FEATURES_S,
    Metric.DEVICE_S,
}
WRONG_WHOLE = ["3", True, 3.5, [1], b"3", math.nan, math.inf, -1]
WRONG_FLOAT = ["3", True, [1.0], b"3", math.inf, -math.inf, 10**400]  # NaN is a reported (not-run) value
WRONG_DEVICE: dict[str, list[Any]] = {
    Record.DEVICE_CLASS: [3, True, ["a"], b"a", "x" * 129],
    Record.BACKENDS: ["a", 3, [1], [b"a"]],
    Record.FEATURE_ABIS: ["1", 1, [1.5], [True], ["1"]],
    Record.RUNTIME_VERSION: [3, ["1.0"], b"1.0", "1" * 65],
}
unknown_names = st.text(min_size=1, max_size=12)
REPLY_CLASSES = (TrainReply, EvaluateReply, QueryReply, StatsReply, SecAggReply)


def _refused(cls: type[Any], content: RecordDict, key: str) -> ProtocolError:
    """Decoding ``content`` raises a ProtocolError (nothing else) naming ``key``."""
    with pytest.raises(ProtocolError) as info:
        cls.from_records(content)
    assert info.value.key == key, (info.value.key, str(info.value))
    assert names(info.value, key)
    return info.value


def _metric_record(content: RecordDict, **changes: Any) -> RecordDict:
    rec = content[Record.METRICS]
    assert isinstance(rec, MetricRecord)
    values = dict(rec.values)
    for k, v in changes.items():
        if v is None:
            values.pop(k, None)
        else:
            values[k] = v
    return {**content, Record.METRICS: MetricRecord(values)}


with_metrics = st.one_of(
    train_replies(),
    evaluate_replies,
    query_replies,
    stats_replies(),
    secagg_replies.filter(lambda r: r.metrics is not None),
)


# --- round trips ------------------------------------------------------------------------------------------------


@given(replies)
def test_every_reply_round_trips_exactly(reply: Reply) -> None:
    assert_same(type(reply).from_records(reply.to_records()), reply)


@given(replies)
def test_every_reply_round_trips_through_the_wire(reply: Reply) -> None:
    assert_same(type(reply).from_records(through_wire(reply.to_records())), reply)


@given(metrics)
def test_metrics_round_trip_and_list_what_was_reported(m: ReplyMetrics) -> None:
    assert ReplyMetrics.from_record(m.to_record()) == m
    assert set(m.to_dict()) == {k for k, v in m.to_record().values.items() if v is not None}
    assert m.to_dict()[Metric.NUM_EXAMPLES] == m.num_examples


@given(metrics, st.sampled_from(sorted(FLOAT_METRICS - {Metric.DEVICE_S})))
def test_a_nan_float_metric_is_refused_naming_it(m: ReplyMetrics, key: str) -> None:
    with pytest.raises(ProtocolError) as info:
        ReplyMetrics.from_record(MetricRecord({**m.to_record().values, key: math.nan}))
    assert info.value.key == key


@given(devices)
def test_device_info_round_trips(info: DeviceInfo) -> None:
    assert DeviceInfo.from_record(info.to_record()) == info


@given(signatures)
def test_update_signature_round_trips(sig: UpdateSignature) -> None:
    assert UpdateSignature.from_record(sig.to_record()) == sig


@given(error_replies)
def test_an_error_reply_round_trips_through_its_reason(err: ErrorReply) -> None:
    assert ErrorReply.from_reason(err.to_reason()) == err
    assert err.label == err.code


@given(st.integers(8193, 20_000), st.characters())
def test_a_long_error_detail_is_cut_to_the_bound(length: int, char: str) -> None:
    detail = char * length
    back = ErrorReply.from_reason(ErrorReply(kind="failed", code="RuntimeError", detail=detail).to_reason())
    assert len(back.detail) == 8192 and back.detail.endswith("...") and detail.startswith(back.detail[:-3])


# --- wrong types ------------------------------------------------------------------------------------------------


@given(with_metrics, st.data())
def test_a_metric_of_the_wrong_type_is_refused_naming_it(reply: Reply, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(INT_METRICS | FLOAT_METRICS)))
    wrong = data.draw(st.sampled_from(WRONG_WHOLE if key in INT_METRICS else WRONG_FLOAT))
    _refused(type(reply), _metric_record(reply.to_records(), **{key: wrong}), key)


@given(st.one_of(train_replies(), evaluate_replies, query_replies), st.data())
def test_a_device_value_of_the_wrong_type_is_refused_naming_it(reply: Reply, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(WRONG_DEVICE)))
    wrong = data.draw(st.sampled_from(WRONG_DEVICE[key]))
    _refused(type(reply), {**reply.to_records(), Record.DEVICE: ConfigRecord({key: wrong})}, key)


@given(train_replies(), st.sampled_from([Record.UPDATE_SIGNATURE, Record.UPDATE_KEY]), st.sampled_from(["s", 1, [b""]]))
def test_a_signature_value_of_the_wrong_type_is_refused(reply: TrainReply, key: str, wrong: Any) -> None:
    rec = {Record.UPDATE_SIGNATURE: b"s", Record.UPDATE_KEY: b"k", key: wrong}
    _refused(TrainReply, {**reply.to_records(), Record.SIGNATURE: ConfigRecord(rec)}, key)


@given(secagg_replies, st.sampled_from(["r", 1, True, [b"r"]]))
def test_a_secagg_reply_of_the_wrong_type_is_refused(reply: SecAggReply, wrong: Any) -> None:
    content = {**reply.to_records(), Record.SECAGG: ConfigRecord({Record.SECAGG_REPLY: wrong})}
    _refused(SecAggReply, content, Record.SECAGG_REPLY)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (np.zeros(4, np.float32), Record.PAYLOAD),
        (np.zeros((2, 2), np.uint8), Record.PAYLOAD),
        (np.zeros((), np.uint8), Record.PAYLOAD),
    ],
)
def test_an_update_payload_must_be_1d_uint8(payload: np.ndarray, key: str) -> None:
    _refused(TrainReply, {Record.UPDATE: ArrayRecord({Record.PAYLOAD: payload}), **_metrics()}, key)


def _metrics() -> RecordDict:
    return {Record.METRICS: ReplyMetrics(num_examples=1).to_record()}


@given(stats_replies(), st.data())
def test_broken_stats_are_refused(reply: StatsReply, data: st.DataObject) -> None:
    width = reply.sum.shape[0]
    good = {Record.SUM: reply.sum, Record.SUMSQ: reply.sumsq, Record.COUNT: np.array([reply.count], np.int64)}
    name, wrong, key = data.draw(
        st.sampled_from(
            [
                (Record.COUNT, np.array([1.0]), Record.COUNT),
                (Record.COUNT, np.array([1, 2]), Record.COUNT),
                (Record.COUNT, np.array([], np.int64), Record.COUNT),
                (Record.COUNT, np.array(["1"]), Record.COUNT),
                (Record.COUNT, np.array([-1]), Record.STATS),
                (Record.SUM, np.zeros((width, 1)), Record.STATS),
                (Record.SUM, np.zeros(width + 1), Record.STATS),
                (Record.SUMSQ, np.array(["x"] * width + ["y"]), Record.STATS),
                (Record.SUM, np.zeros(()), Record.STATS),
                (Record.SUM, np.full(width, np.nan), Record.STATS),
                (Record.SUMSQ, np.full(width, np.inf), Record.STATS),
                (Record.SUM, np.zeros(width, np.complex128), Record.STATS),
            ]
        )
    )
    if name != Record.COUNT and wrong.shape == (width,) and wrong.dtype.kind == "f":
        assume(width > 0)  # a NaN or infinity needs a column to sit in
    stats = ArrayRecord({**good, name: wrong})
    _refused(StatsReply, {**reply.to_records(), Record.STATS: stats}, key)


# --- missing records and keys -----------------------------------------------------------------------------------


@given(with_metrics)
def test_a_reply_needs_its_metrics_and_num_examples(reply: Reply) -> None:
    content = reply.to_records()
    _refused(type(reply), _metric_record(content, **{Metric.NUM_EXAMPLES: None}), Metric.NUM_EXAMPLES)
    if not isinstance(reply, SecAggReply):  # a SecAgg reply's metrics are optional
        _refused(type(reply), {k: v for k, v in content.items() if k != Record.METRICS}, Record.METRICS)
    _refused(type(reply), {**content, Record.METRICS: ConfigRecord({Metric.NUM_EXAMPLES: 1})}, Record.METRICS)


@given(train_replies())
def test_a_train_reply_carries_exactly_one_of_arrays_and_update(reply: TrainReply) -> None:
    content = reply.to_records()
    bare = {k: v for k, v in content.items() if k not in (Record.ARRAYS, Record.UPDATE)}
    _refused(TrainReply, bare, Record.ARRAYS)
    both = {**bare, Record.ARRAYS: ArrayRecord({}), Record.UPDATE: ArrayRecord({Record.PAYLOAD: np.zeros(1, np.uint8)})}
    _refused(TrainReply, both, Record.ARRAYS)
    _refused(TrainReply, {**bare, Record.ARRAYS: ConfigRecord({})}, Record.ARRAYS)
    _refused(TrainReply, {**bare, Record.UPDATE: ArrayRecord({})}, Record.UPDATE)
    _refused(TrainReply, {**bare, Record.UPDATE: ConfigRecord({Record.PAYLOAD: b""})}, Record.UPDATE)


@given(train_replies(), st.sampled_from([Record.UPDATE_SIGNATURE, Record.UPDATE_KEY]))
def test_a_signature_needs_both_halves(reply: TrainReply, present: str) -> None:
    err = _refused(TrainReply, {**reply.to_records(), Record.SIGNATURE: ConfigRecord({present: b"x"})}, "signature")
    assert Record.UPDATE_SIGNATURE in str(err) and Record.UPDATE_KEY in str(err)
    _refused(TrainReply, {**reply.to_records(), Record.SIGNATURE: MetricRecord({})}, Record.SIGNATURE)


@given(st.one_of(train_replies(), evaluate_replies, query_replies))
def test_the_device_record_must_be_a_config_record(reply: Reply) -> None:
    _refused(type(reply), {**reply.to_records(), Record.DEVICE: MetricRecord({})}, Record.DEVICE)


@given(secagg_replies)
def test_a_secagg_reply_needs_its_bytes(reply: SecAggReply) -> None:
    content = reply.to_records()
    _refused(SecAggReply, {**content, Record.SECAGG: ConfigRecord({})}, Record.SECAGG_REPLY)
    _refused(SecAggReply, {k: v for k, v in content.items() if k != Record.SECAGG}, Record.SECAGG)
    _refused(SecAggReply, {**content, Record.SECAGG: MetricRecord({})}, Record.SECAGG)


@given(stats_replies(), st.sampled_from([Record.SUM, Record.SUMSQ, Record.COUNT]))
def test_stats_need_sum_sumsq_and_count(reply: StatsReply, name: str) -> None:
    content = reply.to_records()
    stats = content[Record.STATS]
    assert isinstance(stats, ArrayRecord)
    partial = ArrayRecord({k: v for k, v in stats.arrays.items() if k != name})
    _refused(StatsReply, {**content, Record.STATS: partial}, Record.STATS)
    _refused(StatsReply, {k: v for k, v in content.items() if k != Record.STATS}, Record.STATS)


# --- unknown records and keys -----------------------------------------------------------------------------------


@given(replies, unknown_names)
def test_an_unknown_record_is_refused_naming_it(reply: Reply, name: str) -> None:
    content = reply.to_records()
    allowed = {Record.ARRAYS, Record.UPDATE, Record.METRICS, Record.DEVICE, Record.SIGNATURE, Record.STATS}
    if name in content or name in allowed | {Record.SECAGG}:
        name = "x-" + name
    _refused(type(reply), {**content, name: ConfigRecord({})}, name)


@given(with_metrics, unknown_names)
def test_an_unknown_metric_is_refused_naming_it(reply: Reply, name: str) -> None:
    if name in INT_METRICS | FLOAT_METRICS:
        name = "x-" + name
    err = _refused(type(reply), _metric_record(reply.to_records(), **{name: 1}), name)
    assert "release" in str(err)


@given(st.one_of(train_replies(), evaluate_replies, query_replies), devices, unknown_names)
def test_an_unknown_device_value_is_refused_naming_it(reply: Reply, info: DeviceInfo, name: str) -> None:
    if name in WRONG_DEVICE:
        name = "x-" + name
    rec = ConfigRecord({**info.to_record().values, name: "x"})
    _refused(type(reply), {**reply.to_records(), Record.DEVICE: rec}, name)


@given(train_replies(), signatures, unknown_names)
def test_an_unknown_signature_value_is_refused_naming_it(reply: TrainReply, sig: UpdateSignature, name: str) -> None:
    if name in (Record.UPDATE_SIGNATURE, Record.UPDATE_KEY):
        name = "x-" + name
    rec = ConfigRecord({**sig.to_record().values, name: b""})
    _refused(TrainReply, {**reply.to_records(), Record.SIGNATURE: rec}, name)


@given(secagg_replies, unknown_names)
def test_an_unknown_secagg_value_is_refused_naming_it(reply: SecAggReply, name: str) -> None:
    if name == Record.SECAGG_REPLY:
        name = "x-" + name
    rec = ConfigRecord({Record.SECAGG_REPLY: reply.reply, name: b""})
    _refused(SecAggReply, {**reply.to_records(), Record.SECAGG: rec}, name)


@given(stats_replies(), unknown_names)
def test_an_unknown_stats_array_is_refused(reply: StatsReply, name: str) -> None:
    content = reply.to_records()
    stats = content[Record.STATS]
    assert isinstance(stats, ArrayRecord)
    if name in stats.arrays:
        name = "x-" + name
    _refused(StatsReply, {**content, Record.STATS: ArrayRecord({**stats.arrays, name: np.zeros(1)})}, Record.STATS)


@given(train_replies().filter(lambda r: r.payload is not None), unknown_names)
def test_an_unknown_update_array_is_refused(reply: TrainReply, name: str) -> None:
    content = reply.to_records()
    update = content[Record.UPDATE]
    assert isinstance(update, ArrayRecord)
    if name == Record.PAYLOAD:
        name = "x-" + name
    arrays = {**update.arrays, name: np.zeros(1, np.uint8)}
    _refused(TrainReply, {**content, Record.UPDATE: ArrayRecord(arrays)}, Record.UPDATE)


# --- error replies ----------------------------------------------------------------------------------------------


_DELETE = object()


def _reason(err: ErrorReply, **changes: Any) -> str:
    raw = json.loads(err.to_reason())
    for k, v in changes.items():
        if v is _DELETE:
            raw.pop(k, None)
        else:
            raw[k] = v
    return json.dumps(raw)


WRONG_REASON: dict[str, list[Any]] = {
    "kind": [3, True, ["declined"], "exploded", {}, None],
    "code": [3, True, ["x"], "", "x" * 65, {}, None],
    "detail": [3, True, ["x"], "x" * 8193, {}, None],
    "reasons": ["x", 3, [1], [["x"]], [True]],
}


@given(error_replies, st.data())
def test_a_broken_error_reason_is_refused_naming_the_field(err: ErrorReply, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(WRONG_REASON)))
    wrong = data.draw(st.sampled_from(WRONG_REASON[key]))
    with pytest.raises(ProtocolError) as info:
        ErrorReply.from_reason(_reason(err, **{key: wrong}))
    assert info.value.key == key and names(info.value, key)


@given(error_replies, st.sampled_from(["kind", "code"]))
def test_an_error_reason_needs_its_kind_and_code(err: ErrorReply, key: str) -> None:
    with pytest.raises(ProtocolError) as info:
        ErrorReply.from_reason(_reason(err, **{key: _DELETE}))
    assert info.value.key == key and names(info.value, key)


@given(error_replies, unknown_names)
def test_an_unknown_error_field_is_refused_naming_it(err: ErrorReply, name: str) -> None:
    if name in WRONG_REASON:
        name = "x-" + name
    with pytest.raises(ProtocolError) as info:
        ErrorReply.from_reason(_reason(err, **{name: "x"}))
    assert info.value.key == name and names(info.value, name)


HOSTILE_REASONS = [
    "[" * 100_000,
    "{" * 100_000,
    '{"kind": ' * 100_000,
    '{"kind": "failed", "code": "x", "detail": ' + "[" * 100_000 + "]" * 100_000 + "}",
    " " * (5 * 1024 * 1024) + "{}",
    "[]",
    '"failed"',
    "null",
    "",
    "not json",
    "NaN",
    '{"kind": "failed", "code": NaN}',
    '{"kind": "failed", "code": "x", "detail": Infinity}',
    '{"kind": "failed", "code": "x", "reasons": [-Infinity]}',
    '{"kind": "failed", "code": "x", "detail": ' + "9" * 5000 + "}",
]


@pytest.mark.parametrize("text", HOSTILE_REASONS, ids=range(len(HOSTILE_REASONS)))
def test_a_hostile_error_reason_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        ErrorReply.from_reason(text)


@given(st.text(alphabet='[]{}",:\\ 0a-eE.nulltrfs', max_size=60))
def test_an_error_reason_never_raises_anything_but_protocol_error(text: str) -> None:
    try:
        err = ErrorReply.from_reason(text)
    except ProtocolError as exc:
        assert exc.key and str(exc)
    else:
        assert ErrorReply.from_reason(err.to_reason()) == err


# --- whatever a constructor accepts, decoding gives back ---------------------------------------------------------

# Boundaries first: the int64 wire, 2^64 run ids, and ranges starting at 0 or 1.
any_int = st.sampled_from([-1, 0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**400]) | st.integers()
any_number = st.floats() | any_int  # ReplyMetrics refuses 10**400 with a ValueError


def _built(build: Any, **fields: Any) -> Any:
    """``build(**fields)``, or None when its constructor refuses them (a ValueError naming the problem)."""
    try:
        return build(**fields)
    except ValueError as exc:
        assert str(exc)
        return None


metric_fields = st.fixed_dictionaries(
    {"num_examples": any_int},
    optional={
        **{f: any_int for f in ("eval_examples", "model_version", "update_bytes")},
        **{f: any_number for f in ("eval_loss", "train_loss", "device_s")},
    },
)


lengths = st.sampled_from([0, 64, 65, 128, 129]).map(lambda n: "d" * n) | st.text(max_size=10)


@given(metric_fields, lengths, lengths, any_int)
def test_every_reply_a_constructor_accepts_round_trips(
    fields: dict[str, Any], device_class: str, runtime: str, count: int
) -> None:
    m = _built(ReplyMetrics, **fields)
    if m is not None:
        back = ReplyMetrics.from_record(m.to_record()).to_dict()
        assert set(back) == set(m.to_dict())
        for key, value in m.to_dict().items():
            assert back[key] == value or (math.isnan(value) and math.isnan(back[key]))
    info = _built(DeviceInfo, device_class=device_class, runtime_version=runtime)
    if info is not None:
        assert DeviceInfo.from_record(info.to_record()) == info
    stats = _built(StatsReply, sum=np.zeros(1), sumsq=np.ones(1), count=count, metrics=ReplyMetrics())
    if stats is not None:
        assert StatsReply.from_records(through_wire(stats.to_records())).count == count


def test_a_nan_metric_is_refused_when_built_as_the_wire_would_refuse_it() -> None:
    with pytest.raises(ValueError, match="train-loss"):
        ReplyMetrics(num_examples=0, train_loss=math.nan)
    with pytest.raises(ProtocolError) as info:
        ReplyMetrics.from_record(MetricRecord({"num-examples": 0, "train-loss": math.nan}))
    assert info.value.key == "train-loss"
