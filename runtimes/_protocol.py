"""The backend protocol, the capability names backends declare, and the lifetime base they share."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from ._dense import DenseModel, init_lora, validate_parameters
from ._exceptions import BackendClosedError, ModelLoadError, ParameterError, UnsupportedFeatureError
from ._spec import DenseStack, FitResult, ModelSource, Parameters, TrainConfig, TrainingBudget, TrainingData
from ._training import Clock

# Capability names (python-zstandard style feature set).
DENSE_STACK: Final = "dense_stack"
LORA: Final = "lora"
FROZEN_BACKBONE: Final = "frozen_backbone"
ACTIVATION_CACHE: Final = "activation_cache"
GRAPH_EXTRACTION: Final = "graph_extraction"
MERGED_EXPORT: Final = "merged_export"
TRAIN_SIGNATURE: Final = "train_signature"
SGD: Final = "sgd"
MOMENTUM: Final = "momentum"
ADAM: Final = "adam"
WEIGHT_DECAY: Final = "weight_decay"
FEDPROX: Final = "fedprox"
CROSS_ENTROPY: Final = "cross_entropy"
MSE: Final = "mse"
WALL_TIME_BUDGET: Final = "wall_time_budget"
RAM_BUDGET: Final = "ram_budget"

NUMPY_TRAINING: Final = frozenset(
    {SGD, MOMENTUM, ADAM, WEIGHT_DECAY, FEDPROX, CROSS_ENTROPY, MSE, WALL_TIME_BUDGET, RAM_BUDGET}
)


class TrainingBackend(Protocol):
    """What every training backend offers. Choose one by name with :func:`runtimes.create_backend`.

    Example::

        with create_backend("numpy") as backend:
            backend.load(head, init_parameters(head, rng=np.random.default_rng(0)))
            result = backend.fit(TrainingData(x=x, y=y), TrainConfig(epochs=5, learning_rate=0.1))
    """

    @property
    def name(self) -> str:
        """The registry name of the backend."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """Feature names this backend supports (``runtimes.CAPABILITIES`` lists them all)."""
        ...

    def load(self, model: ModelSource, parameters: Mapping[str, np.ndarray] | None = None) -> None:
        """Load a model description and its parameters (the global model of this round)."""
        ...

    def fit(
        self,
        data: TrainingData,
        config: TrainConfig,
        *,
        budget: TrainingBudget | None = None,
        clock: Clock = time.perf_counter,
        checkpoint: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train the trainable parameters on ``data`` and return them with the loss curve.

        ``checkpoint`` lets the caller stop a round while it trains: it is called before every mini-batch
        step and once after the last (so at least once per epoch), and by backbone backends also before each
        chunk of the backbone pass that fills the activation cache. When it raises, training stops at once
        and the exception propagates unchanged; ``fit`` returns no :class:`FitResult`. The backend's loaded
        parameters are then those after the last completed step (trained in part): call ``load`` with the
        global model again before training or evaluating the next round. A device wires its participation
        gate here, e.g. ``backend.fit(data, config, checkpoint=monitor.checkpoint)``.
        """
        ...

    def evaluate(self, data: TrainingData) -> dict[str, float]:
        """Mean loss (and accuracy for classification) on ``data``."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs (logits or regression values) for ``x``."""
        ...

    def parameters(self) -> Parameters:
        """Copies of the current trainable parameters."""
        ...

    def close(self) -> None:
        """Release native resources; idempotent."""
        ...


class BackendBase:
    """Lifetime shared by the backends: ``close()`` is idempotent, ``with`` closes, use after close raises."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._closed = False
        self._model: DenseModel | None = None  # the trainable numpy model, once loaded

    def close(self) -> None:
        """Release native resources; calling it again does nothing."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Free backend resources (overridden by backends that hold any)."""

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(f"the {self.name} backend was used after close()")

    def _bound(self) -> DenseModel:
        """The loaded numpy model; raises when closed or nothing is loaded."""
        self._check_open()
        if self._model is None:
            raise not_loaded(self.name)
        return self._model

    def __enter__(self) -> BackendBase:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require(self, config: TrainConfig, loss: str) -> None:
        """Raise when ``config`` or ``loss`` needs a capability this backend lacks."""
        needed = {config.optimizer, loss}
        if config.momentum:
            needed.add(MOMENTUM)
        if config.weight_decay:
            needed.add(WEIGHT_DECAY)
        if config.prox_mu:
            needed.add(FEDPROX)
        missing = sorted(needed - self.capabilities)
        if missing:
            raise UnsupportedFeatureError(f"the {self.name} backend does not support {missing}")


def bind_dense(spec: DenseStack, parameters: Mapping[str, object] | None) -> DenseModel:
    """Validate parameters for ``spec`` (initialising absent LoRA adapters from ``lora.init_seed``)."""
    if parameters is None:
        raise ParameterError("this model needs parameters: pass the global model's (see init_parameters)")
    params = dict(parameters)
    if spec.lora is not None and not any(name.endswith(("_lora_a", "_lora_b")) for name in params):
        first = next(iter(params.values()), None)
        dtype = first.dtype if isinstance(first, np.ndarray) and first.dtype.kind == "f" else np.float32
        params.update(init_lora(spec, rng=np.random.Generator(np.random.PCG64(spec.lora.init_seed)), dtype=dtype))
    return DenseModel(spec, validate_parameters(spec, params))


def check_targets(spec: DenseStack, data: TrainingData) -> npt.NDArray[np.generic]:
    """Targets in the form the loss needs: int labels in range for cross-entropy, floats (n, out) for MSE."""
    y = data.y
    if spec.loss == "cross_entropy":
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"cross-entropy needs integer labels of shape (n,), got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= spec.out_features:
            raise ValueError(f"labels must be in [0, {spec.out_features}), got [{y.min()}, {y.max()}]")
        return y
    if y.shape != (len(data), spec.out_features):
        raise ValueError(f"MSE needs float targets of shape (n, {spec.out_features}), got {y.shape}")
    return y


def not_loaded(name: str) -> ModelLoadError:
    """The error for using a backend before ``load``."""
    return ModelLoadError(f"the {name} backend has no model: call load() first")
