"""LiteRT backend: frozen .tflite backbone + numpy head, and models with train/infer/save/restore signatures."""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path

import numpy as np
import pytest

from runtimes import (
    BackboneModel,
    BackendUnavailableError,
    DenseLayer,
    DenseStack,
    ModelLoadError,
    ParameterError,
    SignatureError,
    TrainConfig,
    TrainingData,
    TrainSignatureModel,
    UnsupportedFeatureError,
    create_backend,
    init_parameters,
)
from runtimes._litert_backend import load_interpreter_class

from .conftest import Abandon, CountingCheckpoint, digits_mlp, digits_mlp_parameters


def _litert_available() -> str | None:
    try:
        load_interpreter_class()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


_UNAVAILABLE = _litert_available()
needs_litert = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"LiteRT unavailable: {_UNAVAILABLE}")


def _fake_importer(failures: dict[str, Exception]) -> types.FunctionType:
    def import_module(name: str) -> types.ModuleType:
        if name in failures:
            raise failures[name]
        module = types.ModuleType(name)
        module.Interpreter = object  # type: ignore[attr-defined]
        return module

    return import_module  # type: ignore[return-value]


def test_interpreter_import_prefers_ai_edge_litert_then_tflite_runtime() -> None:
    assert load_interpreter_class(_fake_importer({})) is object
    fallback = _fake_importer({"ai_edge_litert.interpreter": ModuleNotFoundError("No module named 'ai_edge_litert'")})
    assert load_interpreter_class(fallback) is object


def test_missing_package_gives_the_install_hint() -> None:
    neither = _fake_importer(
        {
            "ai_edge_litert.interpreter": ModuleNotFoundError("No module named 'ai_edge_litert'"),
            "tflite_runtime.interpreter": ModuleNotFoundError("No module named 'tflite_runtime'"),
        }
    )
    with pytest.raises(BackendUnavailableError, match=r"pip install 'flclient\[litert\]'"):
        load_interpreter_class(neither)


def test_tflite_runtime_under_numpy_2_is_detected() -> None:
    broken = _fake_importer(
        {
            "ai_edge_litert.interpreter": ModuleNotFoundError("No module named 'ai_edge_litert'"),
            "tflite_runtime.interpreter": ImportError("numpy.core.multiarray failed to import"),
        }
    )
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(BackendUnavailableError, match="built for numpy 1.*ai-edge-litert"):
            load_interpreter_class(broken)
    abi = _fake_importer(
        {
            "ai_edge_litert.interpreter": ModuleNotFoundError("No module named 'ai_edge_litert'"),
            "tflite_runtime.interpreter": AttributeError("_ARRAY_API not found"),
        }
    )
    with pytest.raises(BackendUnavailableError, match="_ARRAY_API"):
        load_interpreter_class(abi)


@needs_litert
def test_train_signature_matches_numpy_trajectory_to_4_decimals(digits: TrainingData, fixtures_dir: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=0.1, batch_size=32, drop_last=True, seed=3)
    params = digits_mlp_parameters(seed=5)
    with create_backend("numpy") as numpy_backend:
        numpy_backend.load(digits_mlp(), params)
        expected = numpy_backend.fit(digits, config)
    with create_backend("litert") as backend:
        backend.load(TrainSignatureModel(path=fixtures_dir / "digits_mlp_train.tflite"), params)
        before = backend.evaluate(digits)
        result = backend.fit(digits, config)
        after = backend.evaluate(digits)
        assert np.round(result.loss_curve, 4).tolist() == np.round(expected.loss_curve, 4).tolist()
        assert result.steps == expected.steps == 2 * (len(digits) // 32)
        assert after["loss"] < 0.5 * before["loss"]
        # Read back through the save signature.
        assert set(result.parameters) == set(expected.parameters)
        for name, value in expected.parameters.items():
            np.testing.assert_allclose(result.parameters[name], value, atol=1e-4)
        predicted = backend.predict(digits.x[:10])
    with create_backend("numpy") as trained:
        trained.load(digits_mlp(), expected.parameters)
        np.testing.assert_allclose(predicted, trained.predict(digits.x[:10]), atol=1e-4)


@needs_litert
def test_train_signature_rejects_what_it_cannot_do(digits: TrainingData, fixtures_dir: Path) -> None:
    backend = create_backend("litert")
    backend.load(TrainSignatureModel(path=fixtures_dir / "digits_mlp_train.tflite"), digits_mlp_parameters())
    with pytest.raises(UnsupportedFeatureError, match="fixed batch of 32"):
        backend.fit(digits, TrainConfig(batch_size=16))
    with pytest.raises(UnsupportedFeatureError, match="adam"):
        backend.fit(digits, TrainConfig(optimizer="adam"))
    with pytest.raises(UnsupportedFeatureError, match="momentum"):
        backend.fit(digits, TrainConfig(momentum=0.9))


@needs_litert
def test_signature_validation_on_load(fixtures_dir: Path, tmp_path: Path) -> None:
    backend = create_backend("litert")
    with pytest.raises(SignatureError, match=r"lacks the signatures \['restore', 'save', 'train'\]"):
        backend.load(TrainSignatureModel(path=fixtures_dir / "backbone_64_32.tflite"), {})
    with pytest.raises(SignatureError, match=r"non-builtin ops \['FlexMatrixInverse'\]"):
        backend.load(BackboneModel(path=fixtures_dir / "flex_op.tflite", head=digits_mlp()), digits_mlp_parameters())
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00not a flatbuffer" * 8)
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        backend.load(TrainSignatureModel(path=junk), {})


@needs_litert
def test_wrong_or_corrupted_parameters(fixtures_dir: Path) -> None:
    backend = create_backend("litert")
    model = TrainSignatureModel(path=fixtures_dir / "digits_mlp_train.tflite")
    params = digits_mlp_parameters()
    with pytest.raises(ParameterError, match="missing.*dense1_bias"):
        backend.load(model, {n: v for n, v in params.items() if n != "dense1_bias"})
    with pytest.raises(ParameterError, match=r"dense0_weight.*shape \(64, 10\)"):
        backend.load(model, {**params, "dense0_weight": np.zeros((64, 10), np.float32)})
    with pytest.raises(ParameterError, match="NaN"):
        backend.load(model, {**params, "dense1_bias": np.full(10, np.nan, np.float32)})


@needs_litert
def test_tflite_backbone_plus_head_equals_onnx_and_numpy(digits: TrainingData, fixtures_dir: Path) -> None:
    head = DenseStack(layers=(DenseLayer(in_features=32, out_features=10),))
    params = init_parameters(head, rng=np.random.default_rng(8))
    config = TrainConfig(epochs=2, learning_rate=0.1, momentum=0.9)
    with create_backend("litert") as backend:
        backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.tflite", head=head), params)
        result = backend.fit(digits, config)
        assert np.mean(result.loss_curve[-10:]) < 0.5 * np.mean(result.loss_curve[:10])
    weights = np.load(fixtures_dir / "backbone_64_32.npz")
    spec = DenseStack(
        layers=(DenseLayer(in_features=64, out_features=32, activation="relu", trainable=False), head.layers[0])
    )
    with create_backend("numpy") as numpy_backend:
        numpy_backend.load(
            spec,
            {
                "dense0_weight": weights["weight"],
                "dense0_bias": weights["bias"],
                "dense1_weight": params["dense0_weight"],
                "dense1_bias": params["dense0_bias"],
            },
        )
        expected = numpy_backend.fit(digits, config)
    np.testing.assert_allclose(result.loss_curve, expected.loss_curve, atol=1e-4)


@needs_litert
def test_train_signature_checkpoints_every_step(digits: TrainingData, fixtures_dir: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=0.1, batch_size=32, seed=3)
    checkpoint = CountingCheckpoint()
    with create_backend("litert") as backend:
        backend.load(TrainSignatureModel(path=fixtures_dir / "digits_mlp_train.tflite"), digits_mlp_parameters())
        result = backend.fit(digits, config, checkpoint=checkpoint)
    assert result.steps == 2 * (len(digits) // 32)
    assert checkpoint.calls >= config.epochs
    assert checkpoint.calls == result.steps + 1


@needs_litert
def test_train_signature_stops_at_a_raising_checkpoint(digits: TrainingData, fixtures_dir: Path) -> None:
    model = TrainSignatureModel(path=fixtures_dir / "digits_mlp_train.tflite")
    config = TrainConfig(epochs=2, learning_rate=0.1, batch_size=32, seed=3)
    checkpoint = CountingCheckpoint(fail_at=3)
    with create_backend("litert") as backend:
        backend.load(model, digits_mlp_parameters())
        with pytest.raises(Abandon) as info:
            backend.fit(digits, config, checkpoint=checkpoint)
        assert info.value is checkpoint.raised
        assert checkpoint.calls == 3
        aborted = backend.parameters()  # the interpreter's variables after the two completed steps
    with create_backend("litert") as two_steps:
        two_steps.load(model, digits_mlp_parameters())
        expected = two_steps.fit(digits, dataclasses.replace(config, max_steps=2)).parameters
    assert aborted.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(aborted[name], value)


@needs_litert
def test_tflite_backbone_checkpoints_and_stops(digits: TrainingData, fixtures_dir: Path) -> None:
    head = DenseStack(layers=(DenseLayer(in_features=32, out_features=10),))
    params = init_parameters(head, rng=np.random.default_rng(8))
    model = BackboneModel(path=fixtures_dir / "backbone_64_32.tflite", head=head)
    config = TrainConfig(epochs=2, learning_rate=0.1)
    counting = CountingCheckpoint()
    with create_backend("litert") as backend:
        backend.load(model, params)
        result = backend.fit(digits, config, checkpoint=counting)
        assert counting.calls >= config.epochs
        assert counting.calls == math.ceil(len(digits) / 512) + result.steps + 1  # backbone chunks, then steps
        backend.load(model, params)
        stopping = CountingCheckpoint(fail_at=3)
        with pytest.raises(Abandon) as info:
            backend.fit(digits, config, checkpoint=stopping)
        assert info.value is stopping.raised
        assert stopping.calls == 3
        again = backend.fit(digits, config)  # the aborted cache fill left nothing behind
    np.testing.assert_allclose(again.loss_curve, result.loss_curve, atol=1e-6)
