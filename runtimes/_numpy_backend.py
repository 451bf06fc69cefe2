"""The always-available backend: every layer runs and trains in numpy."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from ._exceptions import UnsupportedFeatureError
from ._protocol import DENSE_STACK, LORA, NUMPY_TRAINING, BackendBase, bind_dense, check_targets
from ._spec import DenseStack, FitResult, ModelSource, Parameters, TrainConfig, TrainingBudget, TrainingData
from ._training import Clock, blas_threads, estimate_training_bytes, fit_dense


class NumpyBackend(BackendBase):
    """Trains a :class:`DenseStack` (linear or MLP head, or LoRA adapters on a frozen stack) in numpy."""

    name = "numpy"
    capabilities = NUMPY_TRAINING | {DENSE_STACK, LORA}

    def __init__(self) -> None:
        super().__init__()

    def load(self, model: ModelSource, parameters: Mapping[str, np.ndarray] | None = None) -> None:
        """Bind ``model`` (a :class:`DenseStack`) to a private copy of ``parameters``."""
        self._check_open()
        if not isinstance(model, DenseStack):
            raise UnsupportedFeatureError(
                f"the numpy backend trains DenseStack models, not {type(model).__name__}; "
                "use the onnx or litert backend for model files"
            )
        self._model = bind_dense(model, parameters)

    def fit(
        self,
        data: TrainingData,
        config: TrainConfig,
        *,
        budget: TrainingBudget | None = None,
        clock: Clock = time.perf_counter,
        checkpoint: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train in place; see :class:`TrainConfig` for the knobs and :class:`TrainingBudget` for the limits.

        ``checkpoint`` is called before every step and after the last; when it raises, the exception
        propagates and the loaded parameters keep the steps completed so far (see ``TrainingBackend.fit``).
        """
        model = self._bound()
        self._require(config, model.spec.loss)
        y = check_targets(model.spec, data)
        x = data.x.reshape(len(data), -1)
        if x.shape[1] != model.spec.in_features:
            raise ValueError(f"x has {x.shape[1]} features but the model takes {model.spec.in_features}")
        dtype = model.dtype
        y_dtype = y.dtype if model.spec.loss == "cross_entropy" else dtype

        def source(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return x[idx].astype(dtype, copy=False), y[idx].astype(y_dtype, copy=False)

        estimate = estimate_training_bytes(model.spec, config, itemsize=dtype.itemsize)
        return fit_dense(
            model,
            source,
            n=len(data),
            config=config,
            budget=budget,
            clock=clock,
            estimate=estimate,
            checkpoint=checkpoint,
        )

    def evaluate(self, data: TrainingData) -> dict[str, float]:
        """Mean loss (and accuracy for cross-entropy) on ``data``."""
        model = self._bound()
        y = check_targets(model.spec, data)
        with blas_threads(1):
            return model.evaluate(data.x.reshape(len(data), -1), y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for ``x`` (n, in_features)."""
        model = self._bound()
        with blas_threads(1):
            return model.forward(x.reshape(x.shape[0], -1))

    def parameters(self) -> Parameters:
        """Copies of the trainable parameters."""
        return {name: p.copy() for name, p in self._bound().trainable().items()}

    def all_parameters(self) -> Parameters:
        """Copies of every parameter, frozen ones included."""
        return {name: p.copy() for name, p in self._bound().parameters.items()}
