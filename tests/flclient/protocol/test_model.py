"""The model spec: a JSON round trip, and every broken or hostile model-spec refused naming 'model-spec'."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.protocol import DenseLayerSpec, DenseModelSpec, Key, model_spec_from_json

from .strategies import dense_models

MODEL_SPEC = Key.MODEL_SPEC


def _refused(text: str, *named: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        model_spec_from_json(text)
    assert info.value.key == MODEL_SPEC and MODEL_SPEC in str(info.value)
    for name in named:
        assert name in str(info.value), (name, str(info.value))
    return info.value


@given(dense_models())
def test_a_model_spec_round_trips_through_json(model: DenseModelSpec) -> None:
    assert model_spec_from_json(model.to_json()) == model
    assert json.loads(model.to_json())["kind"] == "dense"


@given(dense_models())
def test_parameter_names_and_shapes_agree(model: DenseModelSpec) -> None:
    shapes = model.parameter_shapes()
    assert tuple(shapes) == model.parameter_names()
    assert shapes["dense0_weight"][0] == model.in_features
    for p in range(len(model.layers)):
        head = model.personal_parameter_names(p)
        assert len(head) == 2 * p and head <= set(shapes)


@given(dense_models())
def test_personal_layers_must_leave_a_shared_layer(model: DenseModelSpec) -> None:
    for p in (len(model.layers), len(model.layers) + 1, -1):
        with pytest.raises(ProtocolError) as info:
            model.personal_parameter_names(p)
        assert info.value.key == Key.PERSONAL_LAYERS


def test_kind_and_activation_default() -> None:
    model = model_spec_from_json('{"layers": [[4, 2]]}')
    assert model == DenseModelSpec(layers=(DenseLayerSpec(in_features=4, out_features=2),))


def _mutated(model: DenseModelSpec, **changes: Any) -> str:
    raw = json.loads(model.to_json())
    for k, v in changes.items():
        if v is _DELETE:
            raw.pop(k)
        else:
            raw[k] = v
    return json.dumps(raw)


_DELETE = object()
WRONG: dict[str, list[Any]] = {
    "kind": [3, True, ["dense"], "cnn", "Dense", None],
    "loss": [3, True, ["mse"], "hinge", None],
    "layers": [
        _DELETE,
        None,
        [],
        "[[1, 2]]",
        3,
        {"0": [1, 2]},
        [[1]],
        [[1, 2, "relu", 0]],
        [[0, 2]],
        [[1, 2**24 + 1]],
        [[1.0, 2]],
        [[True, 2]],
        [["1", 2]],
        [[1, 2, "tanh"]],
        [[1, 2, 3]],
        [[1, 2, None]],
        [[1, 2], [3, 4]],
        [[1, 1]] * 257,
        [1, 2],
    ],
}


@given(dense_models(), st.data())
def test_a_broken_model_spec_is_refused_naming_model_spec(model: DenseModelSpec, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(WRONG)))
    wrong = data.draw(st.sampled_from(WRONG[key]))
    _refused(_mutated(model, **{key: wrong}))


@given(dense_models(), st.text(min_size=1, max_size=10).filter(lambda k: k not in ("kind", "loss", "layers")))
def test_an_unknown_model_spec_field_is_refused_naming_it(model: DenseModelSpec, name: str) -> None:
    _refused(_mutated(model, **{name: 1}), repr(name))


HOSTILE = [
    "[" * 100_000,
    "{" * 100_000,
    '{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"layers": [[1, 2, ' + '{"a": ' * 100_000 + "}",
    " " * (5 * 1024 * 1024) + "{}",
    '{"layers": [' + "[1, 1]," * 700_000 + "[1, 1]]}",
    "[]",
    "3",
    '"dense"',
    "null",
    "true",
    "",
    "{",
    "NaN",
    "Infinity",
    '{"layers": [[NaN, 2]]}',
    '{"layers": [[1, Infinity]]}',
    '{"layers": [[1, -Infinity]]}',
    '{"layers": [[1e999, 2]]}',
    '{"layers": [[' + "9" * 4000 + ", 2]]}",
    '{"layers": [[' + "9" * 5000 + ", 2]]}",
    '{"layers": [[1, 2]], "loss": NaN}',
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_model_spec_json_is_a_protocol_error(text: str) -> None:
    _refused(text)


@given(st.text(alphabet='[]{}",:\\ 0-9.eElayersknd', max_size=80))
def test_any_text_is_a_model_or_a_protocol_error(text: str) -> None:
    try:
        model = model_spec_from_json(text)
    except ProtocolError as exc:
        assert exc.key == MODEL_SPEC
    else:
        assert model_spec_from_json(model.to_json()) == model
