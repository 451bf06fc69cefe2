"""Seeded batching, the optimizers, the memory estimate and the budget loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtimes import BudgetExceededError, DenseLayer, DenseStack, TrainConfig, TrainingBudget
from runtimes._training import Optimizer, batch_indices, check_ram_budget, estimate_training_bytes, run_steps

from .conftest import Abandon, CountingCheckpoint


def test_batches_cover_every_example_once_per_epoch_in_seeded_order() -> None:
    config = TrainConfig(epochs=2, batch_size=4, seed=5)
    batches = list(batch_indices(10, config))
    assert [b.shape[0] for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3]).tolist()) == list(range(10))
    again = list(batch_indices(10, config))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(batch_indices(10, TrainConfig(epochs=2, batch_size=4, seed=6)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


def test_drop_last_max_steps_and_no_shuffle() -> None:
    assert [b.shape[0] for b in batch_indices(10, TrainConfig(batch_size=4, drop_last=True))] == [4, 4]
    assert len(list(batch_indices(10, TrainConfig(epochs=5, batch_size=4, max_steps=7)))) == 7
    ordered = list(batch_indices(5, TrainConfig(batch_size=2, shuffle=False)))
    assert [b.tolist() for b in ordered] == [[0, 1], [2, 3], [4]]


def _one_param(value: float = 1.0) -> dict[str, np.ndarray]:
    return {"w": np.array([value], dtype=np.float64)}


def test_sgd_momentum_weight_decay_and_prox_by_hand() -> None:
    params = _one_param()
    opt = Optimizer(TrainConfig(learning_rate=0.1, momentum=0.5, weight_decay=0.2, prox_mu=0.0), params)
    opt.step({"w": np.array([1.0])})  # g = 1 + 0.2 -> v = 1.2 -> w = 1 - 0.12
    assert params["w"][0] == pytest.approx(0.88)
    opt.step({"w": np.array([1.0])})  # g = 1 + 0.176 -> v = 0.6 + 1.176 -> w = 0.88 - 0.1776
    assert params["w"][0] == pytest.approx(0.88 - 0.1776)

    params = _one_param()
    opt = Optimizer(TrainConfig(learning_rate=0.1, prox_mu=2.0), params)
    params["w"][0] = 3.0  # drift from the anchor 1.0: prox adds 2 * (3 - 1)
    opt.step({"w": np.array([0.0])})
    assert params["w"][0] == pytest.approx(3.0 - 0.1 * 4.0)


def test_adam_first_step_moves_by_the_learning_rate() -> None:
    params = _one_param()
    opt = Optimizer(TrainConfig(optimizer="adam", learning_rate=0.01), params)
    opt.step({"w": np.array([123.0])})
    assert params["w"][0] == pytest.approx(1.0 - 0.01, rel=1e-6)


def test_memory_estimate_grows_with_what_training_keeps() -> None:
    head = DenseStack(layers=(DenseLayer(in_features=64, out_features=10),))
    sgd = estimate_training_bytes(head, TrainConfig())
    assert estimate_training_bytes(head, TrainConfig(optimizer="adam")) > sgd
    assert estimate_training_bytes(head, TrainConfig(prox_mu=0.1)) > sgd
    assert estimate_training_bytes(head, TrainConfig(batch_size=512)) > sgd
    assert sgd >= 650 * 4 * 3  # parameters, gradient and update temporaries at least
    check_ram_budget(sgd, TrainingBudget(ram_bytes=sgd))
    with pytest.raises(BudgetExceededError, match=f"estimated {sgd} bytes") as info:
        check_ram_budget(sgd, TrainingBudget(ram_bytes=sgd - 1))
    assert info.value.estimate_bytes == sgd


def test_wall_time_budget_stops_before_overrunning_with_an_injected_clock() -> None:
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731 - each call advances one second
    calls: list[int] = []

    def step(idx: np.ndarray) -> float:
        calls.append(idx.shape[0])
        return 1.0

    losses, seen, partial, reason, _ = run_steps(
        step, n=100, config=TrainConfig(batch_size=10), budget=TrainingBudget(wall_time_s=6.0), clock=clock
    )
    assert partial
    assert reason is not None and "wall-time budget" in reason
    assert 0 < len(losses) < 10
    assert seen == 10 * len(losses) == sum(calls)


def test_no_budget_runs_to_completion() -> None:
    losses, seen, partial, reason, _ = run_steps(
        lambda idx: 0.5, n=10, config=TrainConfig(batch_size=3), budget=None, clock=lambda: 0.0
    )
    assert (len(losses), seen, partial, reason) == (4, 10, False, None)


def test_checkpoint_runs_before_every_step_and_after_the_last() -> None:
    events: list[str] = []

    def step(idx: np.ndarray) -> float:
        events.append("step")
        return 0.5

    losses, *_ = run_steps(
        step,
        n=10,
        config=TrainConfig(epochs=2, batch_size=4),
        budget=None,
        clock=lambda: 0.0,
        checkpoint=lambda: events.append("checkpoint"),
    )
    assert len(losses) == 6
    assert events == ["checkpoint", "step"] * 6 + ["checkpoint"]


def test_a_raising_checkpoint_stops_before_the_next_step() -> None:
    steps: list[int] = []
    checkpoint = CountingCheckpoint(fail_at=3)

    def step(idx: np.ndarray) -> float:
        steps.append(idx.shape[0])
        return 0.5

    with pytest.raises(Abandon) as info:
        run_steps(step, n=100, config=TrainConfig(batch_size=10), budget=None, clock=lambda: 0.0, checkpoint=checkpoint)
    assert info.value is checkpoint.raised
    assert checkpoint.calls == 3
    assert len(steps) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"prox_mu": -0.1}, "prox_mu must be"),
        ({"blas_threads": 0}, "blas_threads"),
    ],
)
def test_config_validation_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="ram_bytes must be positive"):
        TrainingBudget(ram_bytes=0)
    with pytest.raises(ValueError, match="wall_time_s"):
        TrainingBudget(wall_time_s=float("inf"))
