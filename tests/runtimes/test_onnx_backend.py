"""ONNX Runtime backend: frozen backbone + cached activations + numpy head, and LoRA with merged export."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from runtimes import (
    BackboneModel,
    BackendOptions,
    BackendUnavailableError,
    BudgetExceededError,
    DenseLayer,
    DenseStack,
    LoRAConfig,
    ModelLoadError,
    ParameterError,
    TrainConfig,
    TrainingBudget,
    TrainingData,
    UnsupportedFeatureError,
    create_backend,
    init_parameters,
)

pytest.importorskip("onnxruntime", reason="onnxruntime (extra 'onnx') is not installed")

from runtimes._backbone import _CHUNK
from runtimes._onnx_backend import OnnxBackend

from .conftest import Abandon, CountingCheckpoint

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason="the onnx package (extra 'onnx') is not installed"
)

HEAD = DenseStack(
    layers=(DenseLayer(in_features=32, out_features=16, activation="gelu"), DenseLayer(in_features=16, out_features=10))
)


def _head_params() -> dict[str, np.ndarray]:
    return init_parameters(HEAD, rng=np.random.Generator(np.random.PCG64(4)))


def _numpy_equivalent(fixtures_dir: Path) -> tuple[DenseStack, dict[str, np.ndarray]]:
    """The backbone as a frozen numpy layer under the same head."""
    weights = np.load(fixtures_dir / "backbone_64_32.npz")
    spec = DenseStack(
        layers=(DenseLayer(in_features=64, out_features=32, activation="relu", trainable=False), *HEAD.layers)
    )
    params = {"dense0_weight": weights["weight"], "dense0_bias": weights["bias"]}
    params.update({f"dense{int(n[5]) + 1}{n[6:]}": v for n, v in _head_params().items()})
    return spec, params


def test_backbone_plus_head_equals_the_numpy_only_equivalent(digits: TrainingData, fixtures_dir: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=0.1, momentum=0.9)
    with create_backend("onnx") as onnx_backend:
        onnx_backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), _head_params())
        before = onnx_backend.evaluate(digits)
        onnx_result = onnx_backend.fit(digits, config)
        onnx_out = onnx_backend.predict(digits.x[:50])
        after = onnx_backend.evaluate(digits)
    spec, params = _numpy_equivalent(fixtures_dir)
    with create_backend("numpy") as numpy_backend:
        numpy_backend.load(spec, params)
        numpy_result = numpy_backend.fit(digits, config)
        numpy_out = numpy_backend.predict(digits.x[:50])
    np.testing.assert_allclose(onnx_result.loss_curve, numpy_result.loss_curve, atol=1e-4)
    np.testing.assert_allclose(onnx_out, numpy_out, atol=1e-4)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.85


def test_cached_uncached_and_spilled_runs_agree(digits: TrainingData, fixtures_dir: Path, tmp_path: Path) -> None:
    model = BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD)
    config = TrainConfig(epochs=2, learning_rate=0.1)
    curves = []
    for options in (
        BackendOptions(),
        BackendOptions(cache_activations=False),
        BackendOptions(cache_ram_bytes=0, spill_dir=tmp_path),
    ):
        backend = OnnxBackend(options)
        backend.load(model, _head_params())
        result = backend.fit(digits, config)
        curves.append(result.loss_curve)
        if options.cache_ram_bytes == 0:
            assert result.metadata["cache_spilled"] is True
            assert len(list(tmp_path.iterdir())) == 1
        backend.close()
    assert list(tmp_path.iterdir()) == []  # close removes the spill file
    np.testing.assert_allclose(curves[0], curves[1], atol=1e-6)
    np.testing.assert_allclose(curves[0], curves[2], atol=1e-6)


@needs_onnx
def test_lora_on_extracted_layers_and_merged_export(digits: TrainingData, fixtures_dir: Path, tmp_path: Path) -> None:
    model = BackboneModel(
        path=fixtures_dir / "mlp_64_32_32_10.onnx", extract_final_linear=2, lora=LoRAConfig(rank=4, alpha=8.0)
    )
    backend = OnnxBackend()
    backend.load(model)
    assert backend._model is not None
    spec = backend._model.spec
    assert [(layer.in_features, layer.out_features, layer.activation) for layer in spec.layers] == [
        (32, 32, "relu"),
        (32, 10, "none"),
    ]
    frozen_before = {n: p.tobytes() for n, p in backend._model.parameters.items() if "lora" not in n}
    untrained = backend.predict(digits.x[:64])
    original = Path(model.path).read_bytes()
    assert backend.verify_export(backend.export_merged(), digits.x[:64]) <= 1e-5  # B = 0: merge is a no-op

    result = backend.fit(digits, TrainConfig(epochs=3, optimizer="adam", learning_rate=0.01))
    assert set(result.parameters) == {"dense0_lora_a", "dense0_lora_b", "dense1_lora_a", "dense1_lora_b"}
    assert np.mean(result.loss_curve[-10:]) < np.mean(result.loss_curve[:10])
    frozen_after = {n: p.tobytes() for n, p in backend._model.parameters.items() if "lora" not in n}
    assert frozen_after == frozen_before
    trained = backend.predict(digits.x[:64])
    assert not np.allclose(trained, untrained)

    exported = backend.export_merged()
    assert backend.verify_export(exported, digits.x) <= 1e-5
    assert Path(model.path).read_bytes() == original

    # Loaded again with fresh (zero-B) adapters, the exported file alone gives the trained outputs.
    path = tmp_path / "merged.onnx"
    path.write_bytes(exported)
    other = OnnxBackend()
    other.load(BackboneModel(path=path, extract_final_linear=2, lora=LoRAConfig(rank=4, alpha=8.0)))
    np.testing.assert_allclose(other.predict(digits.x[:64]), trained, atol=1e-5)


@needs_onnx
def test_extraction_rejects_layers_it_cannot_lift(fixtures_dir: Path) -> None:
    backend = OnnxBackend()
    model = BackboneModel(
        path=fixtures_dir / "backbone_64_32.onnx", extract_final_linear=2, lora=LoRAConfig(rank=2, alpha=2.0)
    )
    with pytest.raises(ModelLoadError, match="graph input, not the output of a linear layer"):
        backend.load(model)
    with pytest.raises(UnsupportedFeatureError, match="merged export needs"):
        backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), _head_params())
        backend.export_merged()
    with pytest.raises(ParameterError, match="come from the ONNX graph"):
        backend.load(
            BackboneModel(
                path=fixtures_dir / "mlp_64_32_32_10.onnx", extract_final_linear=1, lora=LoRAConfig(rank=2, alpha=2)
            ),
            {"dense0_weight": np.zeros((32, 10), np.float32)},
        )


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\x01\x02" * 10)
    backend = OnnxBackend()
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        backend.load(BackboneModel(path=junk, head=HEAD), _head_params())
    with pytest.raises(ModelLoadError, match="cannot read"):
        backend.load(BackboneModel(path=tmp_path / "absent.onnx", head=HEAD), _head_params())


def test_wrong_head_width_and_wrong_parameters(fixtures_dir: Path) -> None:
    backend = OnnxBackend()
    wide = DenseStack(layers=(DenseLayer(in_features=48, out_features=10),))
    with pytest.raises(ModelLoadError, match="gives 32 features but the head takes 48"):
        backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=wide), None)
    params = _head_params()
    params["dense0_weight"] = params["dense0_weight"][:, :8]
    with pytest.raises(ParameterError, match=r"dense0_weight.*shape \(32, 8\)"):
        backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), params)


def test_ram_budget_counts_the_activation_cache(digits: TrainingData, fixtures_dir: Path) -> None:
    backend = OnnxBackend()
    backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), _head_params())
    result = backend.fit(digits, TrainConfig(max_steps=1))
    cache_bytes = len(digits) * 32 * 4
    assert result.memory_estimate_bytes > cache_bytes
    with pytest.raises(BudgetExceededError):
        backend.fit(digits, TrainConfig(), budget=TrainingBudget(ram_bytes=cache_bytes))


def test_missing_onnxruntime_fails_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    create_backend("numpy")  # unaffected
    with pytest.raises(BackendUnavailableError, match=r"pip install 'flclient\[onnx\]'"):
        create_backend("onnx")


def test_missing_onnx_package_fails_only_for_extraction(
    monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path, digits: TrainingData
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    backend = OnnxBackend()
    backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), _head_params())
    backend.fit(digits, TrainConfig(max_steps=2))
    model = BackboneModel(
        path=fixtures_dir / "mlp_64_32_32_10.onnx", extract_final_linear=1, lora=LoRAConfig(rank=2, alpha=2.0)
    )
    with pytest.raises(BackendUnavailableError, match=r"onnx package: pip install 'flclient\[onnx\]'"):
        backend.load(model)


def test_checkpoint_runs_per_backbone_chunk_and_per_step(digits: TrainingData, fixtures_dir: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=0.1)
    chunks = math.ceil(len(digits) / _CHUNK)
    backend = OnnxBackend()
    with backend:
        backend.load(BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD), _head_params())
        cold, warm = CountingCheckpoint(), CountingCheckpoint()
        first = backend.fit(digits, config, checkpoint=cold)  # fills the activation cache
        second = backend.fit(digits, config, checkpoint=warm)  # reads it
    assert first.steps == second.steps == 2 * math.ceil(len(digits) / 32)
    assert warm.calls >= config.epochs
    assert warm.calls == second.steps + 1
    assert cold.calls == first.steps + 1 + chunks


def test_a_raising_checkpoint_while_filling_the_cache_leaves_it_empty(
    digits: TrainingData, fixtures_dir: Path, tmp_path: Path
) -> None:
    model = BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD)
    config = TrainConfig(epochs=1, learning_rate=0.1)
    checkpoint = CountingCheckpoint(fail_at=3)  # the third of four backbone chunks
    backend = OnnxBackend(BackendOptions(cache_ram_bytes=0, spill_dir=tmp_path))
    with backend:
        backend.load(model, _head_params())
        with pytest.raises(Abandon) as info:
            backend.fit(digits, config, checkpoint=checkpoint)
        assert info.value is checkpoint.raised
        assert checkpoint.calls == 3
        assert backend._cache.lookup(digits.x) is None
        assert list(tmp_path.iterdir()) == []  # the half-written spill file is gone
        untouched = backend.parameters()
        for name, value in _head_params().items():
            np.testing.assert_array_equal(untouched[name], value)  # no step had run
        retried = backend.fit(digits, config)
    with create_backend("onnx") as fresh:
        fresh.load(model, _head_params())
        np.testing.assert_allclose(retried.loss_curve, fresh.fit(digits, config).loss_curve, atol=1e-6)


def test_a_raising_checkpoint_between_steps_stops_training(digits: TrainingData, fixtures_dir: Path) -> None:
    model = BackboneModel(path=fixtures_dir / "backbone_64_32.onnx", head=HEAD)
    config = TrainConfig(epochs=2, learning_rate=0.1)
    checkpoint = CountingCheckpoint(fail_at=3)
    with create_backend("onnx", BackendOptions(cache_activations=False)) as backend:  # each checkpoint: a step
        backend.load(model, _head_params())
        with pytest.raises(Abandon) as info:
            backend.fit(digits, config, checkpoint=checkpoint)
        assert info.value is checkpoint.raised
        assert checkpoint.calls == 3
        aborted = backend.parameters()
    with create_backend("onnx", BackendOptions(cache_activations=False)) as two_steps:
        two_steps.load(model, _head_params())
        expected = two_steps.fit(digits, dataclasses.replace(config, max_steps=2)).parameters
    for name, value in expected.items():
        np.testing.assert_array_equal(aborted[name], value)
