"""The training loop shared by every backend that trains in numpy: seeded batching, optimizers, budgets."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np

from ._dense import DenseModel
from ._exceptions import BudgetExceededError, TrainingDivergedError
from ._spec import DenseStack, FitResult, Parameters, TrainConfig, TrainingBudget

Clock = Callable[[], float]
#: Called between training steps; raising from it stops training at once (see ``TrainingBackend.fit``).
Checkpoint = Callable[[], None]
#: Gives the (inputs, targets) of the examples at the given indices, inputs already in the model's space.
BatchSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[None]:
    """Cap BLAS threads for the ``with`` block only; the previous limits come back on exit.

    Tiny matmuls are several times slower with more than one OpenBLAS thread on a loaded CPU.
    """
    if limit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="blas"):
        yield


class Optimizer:
    """SGD (with momentum) or Adam over a set of arrays updated in place, with L2 decay and FedProx.

    The FedProx anchor is a copy of the trainable parameters when the optimizer is created.
    """

    def __init__(self, config: TrainConfig, params: Parameters) -> None:
        self._config = config
        self._params = params
        self._anchor = {n: p.copy() for n, p in params.items()} if config.prox_mu > 0 else {}
        self._m = {n: np.zeros_like(p) for n, p in params.items()}
        self._v = {n: np.zeros_like(p) for n, p in params.items()} if config.optimizer == "adam" else {}
        self._t = 0

    def step(self, grads: Parameters) -> None:
        """Apply one update from ``grads`` (same names as the parameters)."""
        c = self._config
        self._t += 1
        for name, w in self._params.items():
            g = grads[name]
            f = w.dtype.type
            if c.weight_decay:
                g = g + f(c.weight_decay) * w
            if c.prox_mu:
                g = g + f(c.prox_mu) * (w - self._anchor[name])
            if c.optimizer == "sgd":
                if c.momentum:
                    m = self._m[name]
                    m *= f(c.momentum)
                    m += g
                    g = m
                w -= f(c.learning_rate) * g
            else:
                b1, b2 = c.adam_betas
                m, v = self._m[name], self._v[name]
                m *= f(b1)
                m += f(1 - b1) * g
                v *= f(b2)
                v += f(1 - b2) * (g * g)
                step = c.learning_rate * math.sqrt(1 - b2**self._t) / (1 - b1**self._t)
                w -= f(step) * m / (np.sqrt(v) + f(c.adam_eps))


def estimate_training_bytes(spec: DenseStack, config: TrainConfig, *, itemsize: int = 4, extra_bytes: int = 0) -> int:
    """Bytes one ``fit`` allocates beyond the caller's data: parameters, gradients, optimizer state, the
    FedProx anchor, one batch's activations, plus ``extra_bytes`` (a backend's activation cache)."""
    shapes = spec.parameter_shapes()
    trainable = set(spec.trainable_names())
    total = sum(math.prod(s) for s in shapes.values())
    n_train = sum(math.prod(s) for n, s in shapes.items() if n in trainable)
    copies = 2  # gradient + temporary for the update
    copies += 1 if (config.momentum or config.optimizer == "adam") else 0
    copies += 1 if config.optimizer == "adam" else 0
    copies += 1 if config.prox_mu else 0
    rank = spec.lora.rank if spec.lora is not None else 0
    widths = sum(layer.out_features + rank for layer in spec.layers) + spec.in_features
    activations = 4 * config.batch_size * widths  # z, output, activation derivative, backward buffer
    return (total + copies * n_train + activations) * itemsize + extra_bytes


def check_ram_budget(estimate: int, budget: TrainingBudget | None) -> None:
    """Refuse up front, before anything is allocated, when the estimate is above the RAM budget."""
    if budget is not None and budget.ram_bytes is not None and estimate > budget.ram_bytes:
        raise BudgetExceededError(
            f"training needs an estimated {estimate} bytes but the RAM budget is {budget.ram_bytes} bytes; "
            "use a smaller batch, model or activation cache",
            estimate_bytes=estimate,
            budget_bytes=budget.ram_bytes,
        )


def batch_indices(n: int, config: TrainConfig) -> Iterator[np.ndarray]:
    """Mini-batch index arrays for all epochs, shuffled by ``PCG64(config.seed)`` and capped at max_steps."""
    rng = np.random.Generator(np.random.PCG64(config.seed))
    steps = 0
    for _ in range(config.epochs):
        order = rng.permutation(n) if config.shuffle else np.arange(n)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            if config.drop_last and idx.shape[0] < config.batch_size:
                break
            if config.max_steps is not None and steps >= config.max_steps:
                return
            steps += 1
            yield idx


def run_steps(
    step: Callable[[np.ndarray], float],
    *,
    n: int,
    config: TrainConfig,
    budget: TrainingBudget | None,
    clock: Clock,
    checkpoint: Checkpoint | None = None,
) -> tuple[list[float], int, bool, str | None, float]:
    """Call ``step(indices) -> loss`` over seeded batches until done or the wall-time budget would be overrun.

    Before each step the loop predicts the finish time from the mean step time so far and stops when that
    would pass the budget. ``checkpoint`` is called before every step and once after the last; whatever it
    raises propagates unchanged, with the steps before it applied. Returns (losses, examples seen, partial,
    stop reason, elapsed seconds).
    """
    limit = budget.wall_time_s if budget is not None else None
    start = clock()
    losses: list[float] = []
    seen = 0
    for idx in batch_indices(n, config):
        # Every step, not every k: RoundMonitor.checkpoint costs ~0.13 us between checks, under 0.5 % of the
        # cheapest step measured (30-65 us for the digits head), so a coarser cadence would save nothing.
        if checkpoint is not None:
            checkpoint()
        if limit is not None:
            elapsed = clock() - start
            mean_step = elapsed / len(losses) if losses else 0.0
            if elapsed + mean_step > limit:
                return (
                    losses,
                    seen,
                    True,
                    f"wall-time budget of {limit} s reached after {len(losses)} steps",
                    (clock() - start),
                )
        loss = step(idx)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"the loss became {loss} at step {len(losses) + 1}; lower learning_rate")
        losses.append(loss)
        seen += int(idx.shape[0])
    if checkpoint is not None:
        checkpoint()
    return losses, seen, False, None, clock() - start


def fit_dense(
    model: DenseModel,
    source: BatchSource,
    *,
    n: int,
    config: TrainConfig,
    budget: TrainingBudget | None,
    clock: Clock,
    estimate: int,
    metadata: dict[str, object] | None = None,
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Train ``model``'s trainable parameters in place on batches from ``source`` and report the result.

    When ``checkpoint`` raises, the exception propagates and ``model`` keeps the steps completed before it.
    """
    check_ram_budget(estimate, budget)
    optimizer = Optimizer(config, model.trainable())

    def step(idx: np.ndarray) -> float:
        x, y = source(idx)
        loss, grads = model.loss_and_gradients(x, y)
        if math.isfinite(loss):
            optimizer.step(grads)
        return loss

    with blas_threads(config.blas_threads):
        losses, seen, partial, reason, elapsed = run_steps(
            step, n=n, config=config, budget=budget, clock=clock, checkpoint=checkpoint
        )
    return FitResult(
        parameters={name: p.copy() for name, p in model.trainable().items()},
        num_examples=n,
        examples_seen=seen,
        steps=len(losses),
        loss_curve=tuple(losses),
        wall_time_s=elapsed,
        partial=partial,
        stop_reason=reason,
        memory_estimate_bytes=estimate,
        metadata=metadata or {},
    )
