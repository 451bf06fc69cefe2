"""The numpy engine: gradients against finite differences, losses, LoRA merge/unmerge, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtimes import (
    DenseLayer,
    DenseStack,
    LoRAConfig,
    ParameterError,
    init_lora,
    init_parameters,
    merge_lora,
    unmerge_lora,
)
from runtimes._dense import DenseModel, mean_squared_error, softmax_cross_entropy, validate_parameters


def _stack(activation: str, loss: str, lora: LoRAConfig | None = None, frozen_first: bool = False) -> DenseStack:
    return DenseStack(
        layers=(
            DenseLayer(in_features=5, out_features=7, activation=activation, trainable=not frozen_first),  # type: ignore[arg-type]
            DenseLayer(in_features=7, out_features=6, activation=activation),  # type: ignore[arg-type]
            DenseLayer(in_features=6, out_features=3),
        ),
        loss=loss,  # type: ignore[arg-type]
        lora=lora,
    )


def _model(spec: DenseStack, seed: int = 0) -> DenseModel:
    rng = np.random.Generator(np.random.PCG64(seed))
    params = init_parameters(spec, rng=rng, dtype=np.float64)
    for name in params:  # non-zero B and biases so every path carries gradient
        params[name] = params[name] + rng.normal(0, 0.3, params[name].shape)
    return DenseModel(spec, validate_parameters(spec, params))


def _batch(loss: str, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    x = rng.normal(size=(8, 5))
    y = rng.integers(0, 3, 8) if loss == "cross_entropy" else rng.normal(size=(8, 3))
    return x, y


def _check_gradients(model: DenseModel, x: np.ndarray, y: np.ndarray) -> None:
    _, grads = model.loss_and_gradients(x, y)
    assert set(grads) == set(model.spec.trainable_names())
    eps = 1e-6
    for name, grad in grads.items():
        w = model.parameters[name]
        numeric = np.zeros_like(w)
        for i in np.ndindex(w.shape):
            old = w[i]
            w[i] = old + eps
            up = model.loss(x, y)
            w[i] = old - eps
            down = model.loss(x, y)
            w[i] = old
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("activation", ["none", "relu", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mlp_gradients_match_finite_differences(activation: str, loss: str) -> None:
    model = _model(_stack(activation, loss))
    _check_gradients(model, *_batch(loss))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_lora_gradients_match_finite_differences(activation: str, loss: str) -> None:
    spec = _stack(activation, loss, lora=LoRAConfig(rank=2, alpha=3.0, targets=(0, 1)))
    model = _model(spec)
    assert set(spec.trainable_names()) == {
        "dense0_lora_a",
        "dense0_lora_b",
        "dense1_lora_a",
        "dense1_lora_b",
        "dense2_weight",
        "dense2_bias",
    }
    # Frozen base weights cannot be written through the model.
    assert not model.parameters["dense0_weight"].flags.writeable
    _check_gradients(model, *_batch(loss))


def test_frozen_first_layer_gets_no_gradient() -> None:
    model = _model(_stack("relu", "cross_entropy", frozen_first=True))
    _, grads = model.loss_and_gradients(*_batch("cross_entropy"))
    assert "dense0_weight" not in grads
    _check_gradients(model, *_batch("cross_entropy"))


def test_softmax_cross_entropy_is_stable_and_correct() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 2]))
    assert loss == pytest.approx((0.0 + np.log(3.0)) / 2)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)


def test_mse_value_and_gradient() -> None:
    loss, grad = mean_squared_error(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    assert loss == pytest.approx(2.5)
    np.testing.assert_allclose(grad, [[1.0, 2.0]])


@given(
    rank=st.integers(1, 4),
    alpha=st.floats(0.5, 16.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_merge_gives_the_unmerged_forward_and_unmerge_restores_the_base(rank: int, alpha: float, seed: int) -> None:
    spec = _stack("gelu", "mse", lora=LoRAConfig(rank=rank, alpha=alpha))
    rng = np.random.Generator(np.random.PCG64(seed))
    params = init_parameters(spec, rng=rng, dtype=np.float64)
    for name in params:
        if name.endswith("_lora_b"):
            params[name] = rng.normal(0, 0.5, params[name].shape)
    before = {n: p.copy() for n, p in params.items()}
    merged = merge_lora(spec, params)
    assert not any(n.endswith(("_lora_a", "_lora_b")) for n in merged)
    plain = DenseStack(layers=spec.layers, loss=spec.loss)
    x = rng.normal(size=(4, 5))
    with_adapters = DenseModel(spec, validate_parameters(spec, params)).forward(x)
    folded = DenseModel(plain, validate_parameters(plain, merged)).forward(x)
    np.testing.assert_allclose(folded, with_adapters, rtol=1e-10, atol=1e-10)
    adapters = {n: p for n, p in params.items() if n.endswith(("_lora_a", "_lora_b"))}
    restored = unmerge_lora(spec, merged, adapters)
    for name, value in before.items():
        np.testing.assert_allclose(restored[name], value, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(params[name], value)  # inputs untouched


def test_untrained_adapters_change_nothing() -> None:
    spec = _stack("relu", "cross_entropy", lora=LoRAConfig(rank=2, alpha=4.0, targets=(1,)))
    rng = np.random.Generator(np.random.PCG64(3))
    params = init_parameters(spec, rng=rng)
    adapters = init_lora(spec, rng=rng)
    assert set(adapters) == {"dense1_lora_a", "dense1_lora_b"}
    assert not np.any(adapters["dense1_lora_b"])
    merged = merge_lora(spec, params)
    np.testing.assert_array_equal(merged["dense1_weight"], params["dense1_weight"])


class TestParameterValidation:
    spec = _stack("relu", "cross_entropy")

    def _good(self) -> dict[str, np.ndarray]:
        return init_parameters(self.spec, rng=np.random.default_rng(0))

    def test_missing(self) -> None:
        params = self._good()
        del params["dense1_bias"]
        with pytest.raises(ParameterError, match="missing.*dense1_bias"):
            validate_parameters(self.spec, params)

    def test_unexpected(self) -> None:
        with pytest.raises(ParameterError, match="not in this model.*extra"):
            validate_parameters(self.spec, {**self._good(), "extra": np.zeros(1)})

    def test_wrong_shape(self) -> None:
        params = self._good()
        params["dense0_weight"] = params["dense0_weight"].T
        with pytest.raises(ParameterError, match=r"dense0_weight.*shape \(7, 5\).*\(5, 7\)"):
            validate_parameters(self.spec, params)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_not_finite(self, bad: float) -> None:
        params = self._good()
        params["dense2_weight"][0, 0] = bad
        with pytest.raises(ParameterError, match="dense2_weight.*NaN or infinite"):
            validate_parameters(self.spec, params)

    def test_not_a_float_array(self) -> None:
        params = self._good()
        params["dense1_bias"] = np.zeros(6, dtype=np.int32)
        with pytest.raises(ParameterError, match="dtype int32"):
            validate_parameters(self.spec, params)
        with pytest.raises(ParameterError, match="list"):
            validate_parameters(self.spec, {**self._good(), "dense1_bias": [0.0] * 6})

    def test_copies_are_private(self) -> None:
        params = self._good()
        checked = validate_parameters(self.spec, params)
        checked["dense0_weight"] += 1
        assert not np.shares_memory(checked["dense0_weight"], params["dense0_weight"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ()}, "at least one layer"),
        (
            {
                "layers": (
                    DenseLayer(in_features=2, out_features=3),
                    DenseLayer(in_features=4, out_features=1),
                )
            },
            "layer 1 takes 4 features but layer 0 gives 3",
        ),
        ({"layers": (DenseLayer(in_features=2, out_features=3, trainable=False),)}, "nothing to train"),
        (
            {"layers": (DenseLayer(in_features=2, out_features=3),), "lora": LoRAConfig(rank=1, alpha=1, targets=(3,))},
            "not layer indices",
        ),
    ],
)
def test_stack_validation_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DenseStack(**kwargs)  # type: ignore[arg-type]
