"""The always-available backend on real data (scikit-learn digits)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from runtimes import (
    BackendClosedError,
    BudgetExceededError,
    DenseLayer,
    DenseStack,
    LoRAConfig,
    ModelLoadError,
    ParameterError,
    TrainConfig,
    TrainingBudget,
    TrainingData,
    TrainingDivergedError,
    UnknownBackendError,
    UnsupportedFeatureError,
    create_backend,
    init_parameters,
    merge_lora,
)
from runtimes._numpy_backend import NumpyBackend
from runtimes._protocol import TrainingBackend

from .conftest import Abandon, CountingCheckpoint, digits_mlp, digits_mlp_parameters


def _fit(data: TrainingData, config: TrainConfig, spec: DenseStack | None = None, seed: int = 0) -> list[float]:
    spec = spec or digits_mlp()
    with create_backend("numpy") as backend:
        backend.load(spec, init_parameters(spec, rng=np.random.Generator(np.random.PCG64(seed))))
        return list(backend.fit(data, config).loss_curve)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(epochs=3, learning_rate=0.1),
        TrainConfig(epochs=3, learning_rate=0.05, momentum=0.9, weight_decay=1e-4),
        TrainConfig(epochs=3, optimizer="adam", learning_rate=0.005),
        TrainConfig(epochs=3, learning_rate=0.1, prox_mu=0.01),
    ],
    ids=["sgd", "momentum+decay", "adam", "fedprox"],
)
def test_loss_decreases_on_digits(digits: TrainingData, config: TrainConfig) -> None:
    curve = _fit(digits, config)
    assert np.mean(curve[-10:]) < 0.5 * np.mean(curve[:10])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_heads_learn_digits(digits: TrainingData, activation: str) -> None:
    linear = DenseStack(layers=(DenseLayer(in_features=64, out_features=10),))
    mlp = DenseStack(
        layers=(
            DenseLayer(in_features=64, out_features=32, activation=activation),  # type: ignore[arg-type]
            DenseLayer(in_features=32, out_features=10),
        )
    )
    for spec in (linear, mlp):
        with create_backend("numpy") as backend:
            backend.load(spec, init_parameters(spec, rng=np.random.default_rng(1)))
            backend.fit(digits, TrainConfig(epochs=5, learning_rate=0.1, momentum=0.9))
            assert backend.evaluate(digits)["accuracy"] > 0.9
            assert backend.predict(digits.x[:7]).shape == (7, 10)


def test_same_seed_same_trajectory_other_seed_differs(digits: TrainingData) -> None:
    config = TrainConfig(epochs=1, learning_rate=0.1, seed=11)
    first, second = _fit(digits, config), _fit(digits, config)
    assert np.round(first, 4).tolist() == np.round(second, 4).tolist()
    assert first != _fit(digits, TrainConfig(epochs=1, learning_rate=0.1, seed=12))


def test_mse_regression_loss_decreases() -> None:
    rng = np.random.Generator(np.random.PCG64(0))
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 2))).astype(np.float32)
    spec = DenseStack(layers=(DenseLayer(in_features=8, out_features=2),), loss="mse")
    with create_backend("numpy") as backend:
        backend.load(spec, init_parameters(spec, rng=rng))
        result = backend.fit(TrainingData(x=x, y=y), TrainConfig(epochs=20, learning_rate=0.05))
        assert result.loss_curve[-1] < 0.01 * result.loss_curve[0]
        assert "accuracy" not in backend.evaluate(TrainingData(x=x, y=y))


def test_lora_keeps_frozen_weights_bit_identical(digits: TrainingData) -> None:
    spec = DenseStack(
        layers=(
            DenseLayer(in_features=64, out_features=64, activation="relu"),
            DenseLayer(in_features=64, out_features=10),
        ),
        lora=LoRAConfig(rank=4, alpha=8.0),
    )
    params = init_parameters(spec, rng=np.random.default_rng(2))
    original = {name: value.copy() for name, value in params.items()}
    backend = NumpyBackend()
    backend.load(spec, params)
    result = backend.fit(digits, TrainConfig(epochs=2, optimizer="adam", learning_rate=0.01, weight_decay=0.01))
    assert set(result.parameters) == {"dense0_lora_a", "dense0_lora_b", "dense1_lora_a", "dense1_lora_b"}
    after = backend.all_parameters()
    for name in ("dense0_weight", "dense0_bias", "dense1_weight", "dense1_bias"):
        assert after[name].tobytes() == original[name].tobytes(), name
        assert params[name].tobytes() == original[name].tobytes()  # the caller's arrays are untouched
    assert result.loss_curve[-1] < result.loss_curve[0]
    assert np.any(result.parameters["dense1_lora_b"])
    # The merged model gives the trained (unmerged) forward.
    plain = DenseStack(layers=spec.layers, loss=spec.loss)
    merged_backend = NumpyBackend()
    merged_backend.load(plain, merge_lora(spec, after))
    np.testing.assert_allclose(merged_backend.predict(digits.x), backend.predict(digits.x), atol=1e-5)


def test_lora_adapters_default_to_the_seeded_init() -> None:
    spec = DenseStack(layers=(DenseLayer(in_features=4, out_features=2),), lora=LoRAConfig(rank=2, alpha=2.0))
    base = {"dense0_weight": np.ones((4, 2), np.float32), "dense0_bias": np.zeros(2, np.float32)}
    one, two = NumpyBackend(), NumpyBackend()
    one.load(spec, base)
    two.load(spec, base)
    np.testing.assert_array_equal(one.parameters()["dense0_lora_a"], two.parameters()["dense0_lora_a"])


def test_ram_budget_refuses_up_front(digits: TrainingData) -> None:
    with create_backend("numpy") as backend:
        backend.load(digits_mlp(), digits_mlp_parameters())
        before = backend.parameters()
        with pytest.raises(BudgetExceededError, match="RAM budget is 1000 bytes") as info:
            backend.fit(digits, TrainConfig(), budget=TrainingBudget(ram_bytes=1000))
        assert info.value.estimate_bytes > 1000
        after = backend.parameters()
        assert all(np.array_equal(before[n], after[n]) for n in before)
        result = backend.fit(digits, TrainConfig(max_steps=2), budget=TrainingBudget(ram_bytes=10**8))
        assert 1000 < result.memory_estimate_bytes <= 10**8


def test_wall_time_budget_gives_a_partial_but_valid_result(digits: TrainingData) -> None:
    ticks = itertools.count()
    with create_backend("numpy") as backend:
        backend.load(digits_mlp(), digits_mlp_parameters())
        result = backend.fit(
            digits,
            TrainConfig(epochs=3, learning_rate=0.1),
            budget=TrainingBudget(wall_time_s=20.0),
            clock=lambda: float(next(ticks)),
        )
        assert result.partial and result.stop_reason is not None
        assert 0 < result.steps < 3 * 57
        assert result.examples_seen == 32 * result.steps
        assert result.num_examples == len(digits)
        assert result.parameters.keys() == backend.parameters().keys()
        assert all(np.all(np.isfinite(p)) for p in result.parameters.values())
        full = backend.fit(digits, TrainConfig(max_steps=3))
        assert not full.partial and full.stop_reason is None


def test_checkpoint_is_called_every_step_and_leaves_training_unchanged(digits: TrainingData) -> None:
    config = TrainConfig(epochs=3, learning_rate=0.1, seed=4)
    checkpoint = CountingCheckpoint()
    with create_backend("numpy") as backend:
        backend.load(digits_mlp(), digits_mlp_parameters())
        result = backend.fit(digits, config, checkpoint=checkpoint)
    assert result.steps == 3 * 57
    assert checkpoint.calls >= config.epochs
    assert checkpoint.calls == result.steps + 1  # before every batch (k = 1) and once after the last
    with create_backend("numpy") as plain:
        plain.load(digits_mlp(), digits_mlp_parameters())
        assert plain.fit(digits, config).loss_curve == result.loss_curve


def test_a_raising_checkpoint_stops_training_and_propagates(digits: TrainingData) -> None:
    config = TrainConfig(epochs=3, learning_rate=0.1, momentum=0.9, seed=4)
    checkpoint = CountingCheckpoint(fail_at=3)
    with create_backend("numpy") as backend:
        backend.load(digits_mlp(), digits_mlp_parameters())
        with pytest.raises(Abandon) as info:
            backend.fit(digits, config, checkpoint=checkpoint)
        assert info.value is checkpoint.raised  # the very exception, not wrapped
        assert checkpoint.calls == 3
        aborted = backend.parameters()
    # As documented: the loaded parameters keep the two steps completed before the third checkpoint.
    with create_backend("numpy") as two_steps:
        two_steps.load(digits_mlp(), digits_mlp_parameters())
        expected = two_steps.fit(digits, dataclasses.replace(config, max_steps=2)).parameters
    assert aborted.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(aborted[name], value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_is_reported(digits: TrainingData) -> None:
    spec = DenseStack(layers=(DenseLayer(in_features=64, out_features=10),), loss="cross_entropy")
    params = init_parameters(spec, rng=np.random.default_rng(0))
    params["dense0_weight"] *= 1e37
    with create_backend("numpy") as backend:
        backend.load(spec, params)
        with pytest.raises(TrainingDivergedError, match="lower learning_rate"):
            backend.fit(digits, TrainConfig(learning_rate=1e30))


def test_wrong_parameters_and_targets_give_specific_errors(digits: TrainingData) -> None:
    backend = create_backend("numpy")
    bad = digits_mlp_parameters()
    bad["dense1_weight"] = np.zeros((10, 64), np.float32)
    with pytest.raises(ParameterError, match="dense1_weight"):
        backend.load(digits_mlp(), bad)
    with pytest.raises(ParameterError, match="needs parameters"):
        backend.load(digits_mlp(), None)
    with pytest.raises(ModelLoadError, match="call load"):
        backend.fit(digits, TrainConfig())
    backend.load(digits_mlp(), digits_mlp_parameters())
    with pytest.raises(ValueError, match="integer labels"):
        backend.fit(TrainingData(x=digits.x, y=digits.y.astype(np.float32)), TrainConfig())
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        backend.fit(TrainingData(x=digits.x, y=digits.y + 1), TrainConfig())
    with pytest.raises(ValueError, match="x has 32 features"):
        backend.fit(TrainingData(x=digits.x[:, :32], y=digits.y), TrainConfig())


def test_backend_choice_lifetime_and_capabilities() -> None:
    with pytest.raises(UnknownBackendError, match="'torch'.*litert, numpy, onnx"):
        create_backend("torch")
    backend: TrainingBackend = create_backend("numpy")
    assert backend.name == "numpy"
    assert {"lora", "adam", "fedprox", "dense_stack"} <= backend.capabilities
    assert "train_signature" not in backend.capabilities
    with pytest.raises(UnsupportedFeatureError, match="DenseStack"):
        backend.load("model.onnx", None)  # type: ignore[arg-type]
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendClosedError):
        backend.load(digits_mlp(), digits_mlp_parameters())


def test_training_data_validation() -> None:
    with pytest.raises(ValueError, match="3 examples but y has shape"):
        TrainingData(x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        TrainingData(x=np.zeros((0, 2)), y=np.zeros(0))
