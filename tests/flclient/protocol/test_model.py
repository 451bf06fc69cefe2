"""The model spec: a JSON round trip, and every broken or hostile model-spec refused naming 'model-spec'."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.protocol import (
    BackboneHeadSpec,
    BackboneLoRASpec,
    DenseLayerSpec,
    DenseModelSpec,
    Key,
    model_spec_from_json,
)

from .strategies import backbone_head_models, backbone_lora_models, dense_models

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


# -- the backbone kinds -------------------------------------------------------------------------------------------


@given(backbone_head_models() | backbone_lora_models())
def test_a_backbone_model_spec_round_trips_and_names_its_backend(model: BackboneHeadSpec | BackboneLoRASpec) -> None:
    assert model_spec_from_json(model.to_json()) == model
    assert json.loads(model.to_json())["kind"] == model.kind
    assert model.backend == model.backbone_format
    assert model.model_format.startswith(model.kind)


@given(backbone_lora_models())
def test_frozen_a_never_travels_and_trained_a_does(model: BackboneLoRASpec) -> None:
    shapes = model.parameter_shapes()
    a_names = {n for n in shapes if n.endswith("_lora_a")}
    b_names = {n for n in shapes if n.endswith("_lora_b")}
    assert len(b_names) == len(model.lora_targets)
    assert a_names == (set() if model.lora_a == "frozen" else {n.replace("_b", "_a") for n in b_names})
    assert not any(n.endswith("_lora_a") for n in model.personal_parameter_names(len(model.head)))


@given(backbone_lora_models(max_width=64), st.integers(0, 2**32))
def test_the_initial_lora_model_changes_nothing_and_a_comes_from_the_seed(model: BackboneLoRASpec, seed: int) -> None:
    params = model.initial_parameters(seed)
    assert {k: v.shape for k, v in params.items()} == model.parameter_shapes()
    for name, value in params.items():
        if name.endswith("_lora_b"):
            assert not value.any()
    again = model.frozen_a()
    for name, value in again.items():
        assert np.array_equal(value, dataclasses.replace(model, lora_a="trained").frozen_a()[name])
        if name in params:
            assert np.array_equal(params[name], value)


def test_personal_layers_of_a_backbone_head_leave_a_shared_head_layer() -> None:
    head = BackboneHeadSpec(backbone_format="onnx", head=(DenseLayerSpec(in_features=8, out_features=2),))
    with pytest.raises(ProtocolError) as info:
        head.personal_parameter_names(1)
    assert info.value.key == Key.PERSONAL_LAYERS


_LORA = {"kind": "backbone-lora", "backbone": "onnx", "adapted": [[8, 4]], "head": [[4, 2]], "rank": 2, "alpha": 4}
_HEAD = {"kind": "backbone-head", "backbone": "litert", "head": [[8, 2]]}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({**_HEAD, "backbone": "torch"}, "backbone"),
        ({k: v for k, v in _HEAD.items() if k != "backbone"}, "backbone"),
        ({k: v for k, v in _HEAD.items() if k != "head"}, "head"),
        ({**_HEAD, "head": [[8, 2], [3, 1]]}, "chain"),
        ({**_HEAD, "output": "bad name!"}, "output"),
        ({**_HEAD, "extra": 1}, "extra"),
        ({**_LORA, "backbone": "litert"}, "ONNX"),
        ({**_LORA, "rank": 0}, "rank"),
        ({**_LORA, "rank": True}, "rank"),
        ({**_LORA, "alpha": 0}, "alpha"),
        ({**_LORA, "alpha": "4"}, "alpha"),
        ({**_LORA, "targets": [1]}, "targets"),
        ({**_LORA, "targets": [0, 0]}, "targets"),
        ({**_LORA, "targets": []}, "targets"),
        ({**_LORA, "lora-a": "half"}, "lora-a"),
        ({**_LORA, "seed": -1}, "seed"),
        ({**_LORA, "adapted": []}, "adapted"),
        ({**_LORA, "head": [[5, 2]]}, "chain"),
        ({**_LORA, "head": "none"}, "head"),
        ({**_LORA, "kind": "lora"}, "kind"),
    ],
)
def test_a_broken_backbone_spec_is_refused_naming_the_field(raw: dict[str, Any], named: str) -> None:
    _refused(json.dumps(raw), named)


def test_backbone_specs_build_the_runtime_models(tmp_path: Any) -> None:
    lora = model_spec_from_json(json.dumps({**_LORA, "targets": [0]}))
    assert isinstance(lora, BackboneLoRASpec)
    runtime = lora.to_runtime(tmp_path / "b.onnx")
    assert runtime.extract_final_linear == 1 and runtime.lora is not None and not runtime.lora.train_a
    assert runtime.head is not None and runtime.head.in_features == 4
    head = model_spec_from_json(json.dumps(_HEAD))
    assert isinstance(head, BackboneHeadSpec)
    assert head.to_runtime(tmp_path / "b.tflite").head is not None
