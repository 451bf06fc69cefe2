"""Tasks: every instruction round-trips exactly, and every broken encoding is refused naming the key."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.fleet._objects import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flclient.protocol import (
    DenseLayerSpec,
    DenseModelSpec,
    EvaluateTask,
    Key,
    QueryTask,
    Record,
    Scaler,
    SecAggStage,
    Task,
    TrainTask,
    decode_task,
)

from .strategies import (
    assert_same,
    dense_train_tasks,
    evaluate_tasks,
    query_tasks,
    scalers,
    secagg_stages,
    tasks,
    through_wire,
    train_tasks,
)

# Values of the wrong type for each kind of config value.
WRONG: dict[str, list[Any]] = {
    "whole": ["3", True, False, 3.5, [1], b"3", math.nan, math.inf, -1],
    "number": ["3", True, [1.0], b"3", math.nan, math.inf, -math.inf],
    "text": [3, 3.5, True, ["a"], b"a"],
    "blob": ["a", 3, True, [b"a"]],
    "numbers": ["1", 3, 1.0, [True], [math.nan], [math.inf], [b"x"], ["1"]],
    "texts": ["a", 3, [1], [b"a"], [True]],
    "choice": [3, True, b"x", ["x"], "no-such-choice"],
}
MODEL_KEYS = {
    Key.MODEL_SPEC: "text",
    Key.PERSONAL_LAYERS: "whole",
    Key.EPOCHS: "whole",
    Key.BATCH_SIZE: "whole",
    Key.LR: "number",
    Key.OPTIMIZER: "choice",
    Key.SEED: "whole",
    Key.EVAL_FRACTION: "number",
    Key.PROXIMAL_MU: "number",
    Key.SERVER_ROUND: "whole",
    Key.MODEL_VERSION: "whole",
    Key.RUN_ID: "text",
    Key.FEATURE_MODULE: "text",
    Key.FEATURE_MODULE_SHA256: "text",
    Key.MODEL_PIN: "text",
    Key.MODEL_SHA256: "text",
    Key.MODEL_SIGNATURE: "blob",
    Key.FEATURE_SCALE: "numbers",
    Key.SCALER: "text",
    Key.SCALER_VERSION: "whole",
    Key.MIN_RUNTIME_VERSION: "text",
    Key.MAX_RUNTIME_MAJOR: "whole",
    Key.FEATURE_ABI: "whole",
    Key.BACKEND: "texts",
    Key.MODEL_FORMAT: "text",
}
UPDATE_KEYS = {
    Key.UPDATE_CODEC: "choice",
    Key.CLIP_NORM: "number",
    Key.TOPK_FRACTION: "number",
    Key.DP_MODE: "choice",
    Key.DP_NOISE_MULTIPLIER: "number",
    Key.SECAGG_BITS: "whole",
}
QUERY_KEYS = {
    Key.QUERY: "choice",
    **{k: MODEL_KEYS[k] for k in (Key.SERVER_ROUND, Key.MODEL_VERSION, Key.RUN_ID)},
    **{k: MODEL_KEYS[k] for k in (Key.FEATURE_MODULE, Key.FEATURE_MODULE_SHA256, Key.MODEL_PIN, Key.MODEL_SHA256)},
}
KEYS: dict[type, dict[str, str]] = {
    TrainTask: {**MODEL_KEYS, **UPDATE_KEYS},
    EvaluateTask: MODEL_KEYS,
    QueryTask: QUERY_KEYS,
}
MODEL = DenseModelSpec(layers=(DenseLayerSpec(in_features=3, out_features=2),))
unknown_names = st.text(min_size=1, max_size=12)


def _refused(cls: type[Any], content: RecordDict, key: str) -> ProtocolError:
    """Decoding ``content`` raises a ProtocolError (nothing else) naming ``key``."""
    with pytest.raises(ProtocolError) as info:
        cls.from_records(content)
    assert info.value.key == key, (info.value.key, str(info.value))
    assert names(info.value, key)
    return info.value


def names(err: ProtocolError, key: str) -> bool:
    """Whether the message names ``key`` (as written, or quoted as repr() shows it)."""
    return key in str(err) or repr(key) in str(err)


def _with_config(content: RecordDict, **changes: Any) -> RecordDict:
    config = content[Record.CONFIG]
    assert isinstance(config, ConfigRecord)
    values = dict(config.values)
    for k, v in changes.items():
        if v is _DELETE:
            values.pop(k, None)
        else:
            values[k] = v
    return {**content, Record.CONFIG: ConfigRecord(values)}


_DELETE = object()


# --- round trips ------------------------------------------------------------------------------------------------


@given(tasks)
def test_every_task_round_trips_exactly(task: Task) -> None:
    assert_same(type(task).from_records(task.to_records()), task)
    assert_same(decode_task(task.kind, task.to_records()), task)


@given(tasks)
def test_every_task_round_trips_through_the_wire(task: Task) -> None:
    assert_same(decode_task(task.kind, through_wire(task.to_records())), task)


@given(tasks, st.sampled_from(["", ".v2", ".stats"]))
def test_decode_task_reads_the_kind_before_the_suffix(task: Task, suffix: str) -> None:
    assert_same(decode_task(task.kind + suffix, task.to_records()), task)


def test_decode_task_refuses_an_unknown_message_type() -> None:
    with pytest.raises(ValueError, match="'reconcile'"):
        decode_task("reconcile", TrainTask(model=MODEL).to_records())


def test_defaults_are_left_out_of_the_config() -> None:
    values = TrainTask(model=MODEL).to_records()[Record.CONFIG]
    assert isinstance(values, ConfigRecord)
    assert Key.UPDATE_CODEC not in values.values and Key.RUN_ID not in values.values
    assert TrainTask.from_records({Record.CONFIG: ConfigRecord({Key.MODEL_SPEC: MODEL.to_json()})}) == TrainTask(
        model=MODEL
    )


# --- wrong types ------------------------------------------------------------------------------------------------


@st.composite
def _wrongly_typed(draw: st.DrawFn) -> tuple[type[Any], RecordDict, str]:
    task = draw(st.one_of(train_tasks, evaluate_tasks, query_tasks))
    key, kind = draw(st.sampled_from(sorted(KEYS[type(task)].items())))
    wrong = draw(st.sampled_from(WRONG[kind]))
    return type(task), _with_config(task.to_records(), **{key: wrong}), key


@given(_wrongly_typed())
def test_a_value_of_the_wrong_type_is_refused_naming_its_key(case: tuple[type[Any], RecordDict, str]) -> None:
    cls, content, key = case
    _refused(cls, content, key)


@given(train_tasks, st.sampled_from(["", "abc", "-1", "1.0", " 1", "²", "٣", "1" * 21, str(2**64)]))
def test_run_id_must_be_a_decimal_uint64_string(task: TrainTask, run_id: str) -> None:
    _refused(TrainTask, _with_config(task.to_records(), **{Key.RUN_ID: run_id}), Key.RUN_ID)


@given(
    train_tasks,
    st.sampled_from([Key.FEATURE_MODULE, Key.MODEL_PIN, Key.BACKBONE]),
    st.sampled_from(["x", "@1", "x@", "a@b@c"]),
)
def test_a_pin_must_be_name_at_version(task: TrainTask, key: str, pin: str) -> None:
    sha = {Key.FEATURE_MODULE: Key.FEATURE_MODULE_SHA256, Key.MODEL_PIN: Key.MODEL_SHA256}.get(key, Key.BACKBONE_SHA256)
    content = _with_config(task.to_records(), **{key: pin, sha: "0" * 64})
    _refused(TrainTask, content, key)


@given(
    train_tasks,
    st.sampled_from([Key.FEATURE_MODULE_SHA256, Key.MODEL_SHA256, Key.BACKBONE_SHA256]),
    st.sampled_from(["", "A" * 64]),
)
def test_a_pin_sha256_must_be_lower_case_hex(task: TrainTask, key: str, sha: str) -> None:
    pin = {Key.FEATURE_MODULE_SHA256: Key.FEATURE_MODULE, Key.MODEL_SHA256: Key.MODEL_PIN}.get(key, Key.BACKBONE)
    _refused(TrainTask, _with_config(task.to_records(), **{pin: "m@1.0", key: sha}), pin)


@given(dense_train_tasks)
def test_personal_layers_must_leave_a_shared_layer(task: TrainTask) -> None:
    content = _with_config(task.to_records(), **{Key.PERSONAL_LAYERS: len(task.model.layers)})
    _refused(TrainTask, content, Key.PERSONAL_LAYERS)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({Key.UPDATE_CODEC: "int8", Key.SECAGG_BITS: 16}, Key.SECAGG_BITS),
        ({Key.DP_NOISE_MULTIPLIER: 1.0}, Key.DP_NOISE_MULTIPLIER),
        ({Key.UPDATE_CODEC: "topk", Key.TOPK_FRACTION: 0.0}, Key.TOPK_FRACTION),
        ({Key.SECAGG_BITS: 33}, Key.SECAGG_BITS),
        ({Key.EVAL_FRACTION: 1.0}, Key.EVAL_FRACTION),
        ({Key.LR: 0.0}, Key.LR),
        ({Key.EPOCHS: 0}, Key.EPOCHS),
        ({Key.MIN_RUNTIME_VERSION: "1.x"}, Key.MIN_RUNTIME_VERSION),
        ({Key.FEATURE_ABI: 0}, Key.FEATURE_ABI),
        ({Key.SCALER_VERSION: -1}, Key.SCALER_VERSION),
    ],
)
def test_a_value_out_of_range_is_refused_naming_its_key(changes: dict[str, Any], key: str) -> None:
    _refused(TrainTask, _with_config(TrainTask(model=MODEL).to_records(), **changes), key)


def test_records_of_the_wrong_kind_are_refused() -> None:
    content = TrainTask(model=MODEL).to_records()
    assert isinstance(content[Record.CONFIG], ConfigRecord)
    as_metrics = {Record.CONFIG: MetricRecord({"epochs": 1})}
    for cls in (TrainTask, EvaluateTask, QueryTask):
        _refused(cls, as_metrics, Record.CONFIG)  # type: ignore[arg-type]
    _refused(TrainTask, {**content, Record.ARRAYS: ConfigRecord({})}, Record.ARRAYS)


# --- missing keys -----------------------------------------------------------------------------------------------


@given(st.one_of(train_tasks, evaluate_tasks))
def test_a_model_task_needs_its_model_spec_and_config(task: TrainTask | EvaluateTask) -> None:
    content = task.to_records()
    _refused(type(task), _with_config(content, **{Key.MODEL_SPEC: _DELETE}), Key.MODEL_SPEC)
    _refused(type(task), {k: v for k, v in content.items() if k != Record.CONFIG}, Record.CONFIG)


@given(st.one_of(train_tasks, evaluate_tasks, query_tasks).filter(lambda t: t.pins.to_values() != {}), st.data())
def test_a_pin_without_its_other_half_is_refused(task: Task, data: st.DataObject) -> None:
    present = sorted(task.pins.to_values())  # type: ignore[union-attr]
    deleted = data.draw(st.sampled_from(present))
    pin = {
        Key.FEATURE_MODULE_SHA256: Key.FEATURE_MODULE,
        Key.MODEL_SHA256: Key.MODEL_PIN,
        Key.BACKBONE_SHA256: Key.BACKBONE,
    }.get(deleted, deleted)
    sha = {
        Key.FEATURE_MODULE: Key.FEATURE_MODULE_SHA256,
        Key.MODEL_PIN: Key.MODEL_SHA256,
        Key.BACKBONE: Key.BACKBONE_SHA256,
    }.get(pin, "")
    err = _refused(type(task), _with_config(task.to_records(), **{deleted: _DELETE}), pin)
    assert sha in str(err)


@given(secagg_stages)
def test_a_secagg_stage_needs_its_request(stage: SecAggStage) -> None:
    content = stage.to_records()
    _refused(SecAggStage, {**content, Record.SECAGG: ConfigRecord({})}, Record.SECAGG_REQUEST)
    _refused(SecAggStage, {k: v for k, v in content.items() if k != Record.SECAGG}, Record.SECAGG)
    _refused(SecAggStage, {**content, Record.SECAGG: MetricRecord({})}, Record.SECAGG)
    for wrong in WRONG["blob"]:
        _refused(SecAggStage, {**content, Record.SECAGG: ConfigRecord({Record.SECAGG_REQUEST: wrong})}, "request")


# --- unknown keys -----------------------------------------------------------------------------------------------


@given(st.one_of(train_tasks, evaluate_tasks, query_tasks), unknown_names, st.sampled_from([1, "x", b"x", [1.0]]))
def test_an_unknown_config_key_is_refused_naming_it(task: Task, name: str, value: Any) -> None:
    content = task.to_records()
    config = content[Record.CONFIG]
    assert isinstance(config, ConfigRecord)
    if name in config.values or name in KEYS[type(task)]:
        name = "x-" + name + "-unknown"
        assert name not in KEYS[type(task)]
    err = _refused(type(task), _with_config(content, **{name: value}), name)
    assert "release" in str(err)  # says what to do: run the same flclient release on both sides


@given(tasks, unknown_names)
def test_an_unknown_record_is_refused_naming_it(task: Task, name: str) -> None:
    content = task.to_records()
    if name in content or name in {Record.ARRAYS, Record.CONFIG, Record.SECAGG}:
        name = "x-" + name
    _refused(type(task), {**content, name: ConfigRecord({})}, name)


@given(secagg_stages, unknown_names)
def test_an_unknown_secagg_value_is_refused_naming_it(stage: SecAggStage, name: str) -> None:
    if name == Record.SECAGG_REQUEST:
        name = "x-" + name
    rec = ConfigRecord({Record.SECAGG_REQUEST: stage.request, name: b""})
    _refused(SecAggStage, {**stage.to_records(), Record.SECAGG: rec}, name)


# --- the scaler (JSON inside the config) ------------------------------------------------------------------------


@given(scalers())
def test_a_scaler_round_trips_exactly(scaler: Scaler) -> None:
    assert Scaler.from_json(scaler.to_json()) == scaler


def _scaler_json(scaler: Scaler, **changes: Any) -> str:
    raw = json.loads(scaler.to_json())
    for k, v in changes.items():
        if v is _DELETE:
            raw.pop(k)
        else:
            raw[k] = v
    return json.dumps(raw)


SCALER_WRONG: dict[str, list[Any]] = {
    "version": ["1", True, 1.5, 0, [1], 2**63, None],
    "module-sha256": [1, ["a"], True, "a" * 65],
    "mean": ["1", 1, [True], ["1"], [[1.0]]],
    "std": ["1", 1, [True], [0.0], [-1.0]],
    "count": ["1", True, 1.5, -1, None],
}


@given(scalers(), st.data())
def test_a_broken_scaler_is_refused_naming_the_scaler_key(scaler: Scaler, data: st.DataObject) -> None:
    inner = data.draw(st.sampled_from(sorted(SCALER_WRONG)))
    wrong = data.draw(st.sampled_from([*SCALER_WRONG[inner], _DELETE]))
    if wrong is _DELETE and inner == "count":
        wrong = "1"  # count is optional (default 0)
    if inner == "std" and isinstance(wrong, list) and wrong and isinstance(wrong[0], float) and not scaler.std:
        wrong = "1"  # an empty scaler has no std to make invalid
    text = _scaler_json(scaler, **{inner: wrong})
    with pytest.raises(ProtocolError) as info:
        Scaler.from_json(text)
    assert info.value.key == Key.SCALER and names(info.value, inner)
    content = _with_config(TrainTask(model=MODEL).to_records(), **{Key.SCALER: text})
    _refused(TrainTask, content, Key.SCALER)


@given(scalers(), unknown_names)
def test_an_unknown_scaler_key_is_refused(scaler: Scaler, name: str) -> None:
    if name in json.loads(scaler.to_json()):
        name = "x-" + name
    with pytest.raises(ProtocolError) as info:
        Scaler.from_json(_scaler_json(scaler, **{name: 1}))
    assert info.value.key == Key.SCALER and repr(name) in str(info.value)


HOSTILE_JSON = [
    "[" * 100_000,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    " " * (5 * 1024 * 1024) + "{}",
    "[]",
    "3",
    '"scaler"',
    "null",
    "",
    "{",
    "NaN",
    '{"version": 1, "module-sha256": "", "mean": [NaN], "std": [1.0]}',
    '{"version": 1, "module-sha256": "", "mean": [Infinity], "std": [1.0]}',
    '{"version": 1, "module-sha256": "", "mean": [-Infinity], "std": [1.0]}',
    '{"version": 1, "module-sha256": "", "mean": [1e999], "std": [1.0]}',
    '{"version": 1, "module-sha256": "", "mean": [' + "9" * 4000 + '], "std": [1.0]}',
    '{"version": ' + "9" * 5000 + ', "module-sha256": "", "mean": [], "std": []}',
    '{"version": 1e999, "module-sha256": "", "mean": [], "std": []}',
    '{"version": 1, "module-sha256": "", "mean": [' + "1.0," * 70_000 + '1.0], "std": []}',
]


@pytest.mark.parametrize("text", HOSTILE_JSON, ids=range(len(HOSTILE_JSON)))
def test_hostile_scaler_json_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Scaler.from_json(text)
    assert info.value.key == Key.SCALER
    if len(text) <= 4 * 1024 * 1024:  # the task config reads the scaler value up to 4 MiB
        _refused(TrainTask, _with_config(TrainTask(model=MODEL).to_records(), **{Key.SCALER: text}), Key.SCALER)


def test_arrays_travel_with_the_task_unchanged() -> None:
    arrays = {"dense0_weight": np.ones((3, 2), np.float32), "dense0_bias": np.zeros(2, np.float32)}
    content = TrainTask(model=MODEL, arrays=arrays).to_records()
    assert isinstance(content[Record.ARRAYS], ArrayRecord)
    decoded = TrainTask.from_records(content)
    assert decoded.arrays is not None and set(decoded.arrays) == set(arrays)
    for name, value in arrays.items():
        assert np.array_equal(decoded.arrays[name], value)


# --- whatever a constructor accepts, decoding gives back ---------------------------------------------------------

# Boundaries first: the int64 wire, 2^64 run ids, and ranges starting at 0 or 1.
any_int = st.sampled_from([-1, 0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**400]) | st.integers()
any_float = st.floats() | st.integers(-(2**65), 2**65)  # (a float field given 10**400 raises OverflowError)
any_text = st.sampled_from(["", "a" * 64, "a" * 65, "a" * 299, "@", "a@b"]) | st.text(max_size=20)


def _built(build: Any, **fields: Any) -> Any:
    """``build(**fields)``, or None when its constructor refuses them (a ValueError naming the problem)."""
    try:
        return build(**fields)
    except ValueError as exc:
        assert str(exc)
        return None


@given(
    st.fixed_dictionaries(
        {"server_round": any_int, "model_version": any_int, "run_id": any_int},
    ),
    st.fixed_dictionaries(
        {
            "epochs": any_int,
            "batch_size": any_int,
            "lr": any_float,
            "seed": any_int,
            "eval_fraction": any_float,
            "proximal_mu": any_float,
        }
    ),
    st.fixed_dictionaries(
        {
            "scale": st.none() | st.lists(any_float, max_size=3).map(tuple),
            "scaler_version": st.none() | any_int,
        }
    ),
    st.fixed_dictionaries(
        {
            "version": any_int,
            "module_sha256": any_text,
            "mean": st.lists(any_float, min_size=1, max_size=1).map(tuple),
            "std": st.lists(any_float, min_size=1, max_size=1).map(tuple),
            "count": any_int,
        }
    ),
    st.fixed_dictionaries({"name": any_text, "version": st.sampled_from(["1", "1.0.0", " 2.1"])}),
    st.fixed_dictionaries(
        {
            "codec": st.none() | st.sampled_from(["int8", "topk"]),
            "clip_norm": any_float,
            "topk_fraction": any_float,
            "dp_mode": st.sampled_from(["local", "central"]),
            "noise_multiplier": any_float,
            "secagg_bits": any_int,
        }
    ),
)
def test_every_value_a_constructor_accepts_round_trips(
    round_: dict[str, Any],
    settings: dict[str, Any],
    features: dict[str, Any],
    scaler: dict[str, Any],
    pin: dict[str, Any],
    update: dict[str, Any],
) -> None:
    from flclient.protocol import ArtifactPins, FeaturePin, FeatureSpec, RoundInfo, TrainingSettings, UpdateSpec

    built_scaler = _built(Scaler, **scaler)
    fields = dict(
        model=MODEL,
        round=_built(RoundInfo, **round_) or RoundInfo(),
        settings=_built(TrainingSettings, **settings) or TrainingSettings(),
        features=_built(FeatureSpec, **features, scaler=built_scaler) or FeatureSpec(),
        pins=_built(lambda **kw: ArtifactPins(feature_module=FeaturePin(**kw, sha256="0" * 64)), **pin)
        or ArtifactPins(),
        update=_built(UpdateSpec, **update) or UpdateSpec(),
    )
    task = TrainTask(**fields)
    assert_same(TrainTask.from_records(task.to_records()), task)
    assert_same(TrainTask.from_records(through_wire(task.to_records())), task)


@given(train_tasks)
def test_a_train_task_as_an_evaluation_keeps_all_but_the_update(task: TrainTask) -> None:
    evaluation = task.evaluation()
    assert isinstance(evaluation, EvaluateTask) and Key.UPDATE_CODEC not in evaluation.to_records()["config"].values  # type: ignore[union-attr]
    assert_same(EvaluateTask.from_records(evaluation.to_records()), evaluation)
    assert (evaluation.model, evaluation.round, evaluation.pins, evaluation.settings) == (
        task.model,
        task.round,
        task.pins,
        task.settings,
    )
