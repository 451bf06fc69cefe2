"""LiteRT / TFLite backend: frozen .tflite backbones with a numpy head, and models with train signatures.

The interpreter comes from ``ai_edge_litert`` and, when that is absent, from the frozen ``tflite_runtime``
2.14 wheel, which is built against numpy 1 and fails to import under numpy 2; that case is detected and
reported instead of surfacing as an ``_ARRAY_API not found`` crash.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from ._backbone import ActivationCache, evaluate_on_backbone, fit_on_backbone, predict_on_backbone, run_features
from ._dense import evaluate_outputs
from ._exceptions import (
    BackendUnavailableError,
    ModelLoadError,
    ParameterError,
    SignatureError,
    UnsupportedFeatureError,
)
from ._protocol import (
    ACTIVATION_CACHE,
    CROSS_ENTROPY,
    FROZEN_BACKBONE,
    MSE,
    NUMPY_TRAINING,
    SGD,
    TRAIN_SIGNATURE,
    WALL_TIME_BUDGET,
    BackendBase,
    bind_dense,
    not_loaded,
)
from ._registry import BackendOptions
from ._spec import (
    BackboneModel,
    FitResult,
    ModelSource,
    Parameters,
    TrainConfig,
    TrainingBudget,
    TrainingData,
    TrainSignatureModel,
)
from ._training import Clock, check_ram_budget, run_steps

_HINT = "pip install 'flclient[litert]'"
REQUIRED_SIGNATURES = ("infer", "restore", "save", "train")
#: What the train signature itself can do: plain SGD on its own loss (no momentum, decay or FedProx).
SIGNATURE_TRAINING = frozenset({SGD, CROSS_ENTROPY, MSE, WALL_TIME_BUDGET})

ImportModule = Callable[[str], ModuleType]


def load_interpreter_class(import_module: ImportModule = importlib.import_module) -> Any:
    """The ``Interpreter`` class from ai_edge_litert, else tflite_runtime; raise with the install hint."""
    try:
        return import_module("ai_edge_litert.interpreter").Interpreter
    except ImportError:
        pass
    try:
        return import_module("tflite_runtime.interpreter").Interpreter
    except ImportError as exc:
        text = str(exc)
        if "tflite_runtime" in text and "No module named" in text:
            raise BackendUnavailableError(
                f"the litert backend needs ai-edge-litert (or tflite-runtime): {_HINT}"
            ) from exc
        numpy_major = int(np.__version__.split(".")[0])
        if numpy_major >= 2:
            raise BackendUnavailableError(
                f"tflite-runtime is installed but cannot load under numpy {np.__version__} (it is built for "
                f"numpy 1: {text}); install ai-edge-litert instead: {_HINT}"
            ) from exc
        raise BackendUnavailableError(f"tflite-runtime failed to import ({text}): {_HINT}") from exc
    except AttributeError as exc:  # numpy 2 ABI mismatch can surface as AttributeError: _ARRAY_API not found
        raise BackendUnavailableError(
            f"tflite-runtime cannot load under numpy {np.__version__} ({exc}); install ai-edge-litert: {_HINT}"
        ) from exc


class LiteRTBackend(BackendBase):
    """LiteRT interpreter for frozen backbones (numpy head on top) and for train-signature models."""

    name = "litert"
    capabilities = NUMPY_TRAINING | {FROZEN_BACKBONE, ACTIVATION_CACHE, TRAIN_SIGNATURE}

    def __init__(
        self, options: BackendOptions | None = None, *, import_module: ImportModule = importlib.import_module
    ) -> None:
        super().__init__()
        self._interpreter_class = load_interpreter_class(import_module)
        self._options = options or BackendOptions()
        self._cache = ActivationCache(
            ram_bytes=self._options.cache_ram_bytes,
            spill_dir=self._options.spill_dir,
            store=self._options.activation_store,
            namespace=self._options.cache_namespace,
        )
        self._interpreter: Any = None
        self._runners: dict[str, Any] = {}
        self._feature_output = ""
        self._signature_model: TrainSignatureModel | None = None
        self._train_batch = 0
        self._param_shapes: dict[str, tuple[int, ...]] = {}

    def _open(self, path: Any) -> Any:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read the .tflite model {path}: {exc}") from exc
        try:
            return self._interpreter_class(model_content=data, num_threads=self._options.threads)
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError with its own message
            raise ModelLoadError(f"LiteRT cannot load {path}: {exc}") from exc

    def _runner(self, interpreter: Any, key: str, path: Any) -> Any:
        try:
            return interpreter.get_signature_runner(key)
        except Exception as exc:
            if "Select TensorFlow op" in str(exc) or "Flex" in str(exc):
                raise SignatureError(
                    f"{path} uses TensorFlow (Flex) ops, which LiteRT cannot run; convert with builtin ops only"
                ) from exc
            raise ModelLoadError(f"LiteRT cannot prepare signature {key!r} of {path}: {exc}") from exc

    def load(self, model: ModelSource, parameters: Mapping[str, np.ndarray] | None = None) -> None:
        """Load a :class:`BackboneModel` (.tflite backbone + numpy head) or a :class:`TrainSignatureModel`."""
        self._check_open()
        self._cache.clear()
        self._model, self._signature_model, self._runners = None, None, {}
        if isinstance(model, BackboneModel):
            self._load_backbone(model, parameters)
        elif isinstance(model, TrainSignatureModel):
            self._load_signature_model(model, parameters)
        else:
            raise UnsupportedFeatureError(
                f"the litert backend loads BackboneModel or TrainSignatureModel, not {type(model).__name__}"
            )

    def _load_backbone(self, model: BackboneModel, parameters: Mapping[str, np.ndarray] | None) -> None:
        if model.head is None or model.extract_final_linear:
            raise UnsupportedFeatureError("the litert backend cannot lift layers out of a .tflite graph")
        interpreter = self._open(model.path)
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ModelLoadError(
                f"a .tflite backbone needs exactly one signature, {model.path} has {sorted(signatures)}"
            )
        ((key, io),) = signatures.items()
        if len(io["inputs"]) != 1:
            raise ModelLoadError(f"the backbone signature {key!r} must take one input, it takes {io['inputs']}")
        output = model.output_name or io["outputs"][0]
        if output not in io["outputs"]:
            raise ModelLoadError(f"the backbone has no output {output!r}; it has {io['outputs']}")
        flex = _flex_ops(interpreter)
        if flex:
            raise SignatureError(f"{model.path} uses non-builtin ops {flex}; convert with builtin ops only")
        self._interpreter = interpreter
        self._runners = {"backbone": self._runner(interpreter, key, model.path)}
        self._backbone_input = io["inputs"][0]
        self._feature_output = output
        self._model = bind_dense(model.head, parameters)

    def _features(self, x: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(x, dtype=np.float32)
        try:
            out = self._runners["backbone"](**{self._backbone_input: batch})[self._feature_output]
        except Exception as exc:
            raise ModelLoadError(f"LiteRT failed on an input of shape {batch.shape}: {exc}") from exc
        return np.array(out, dtype=np.float32).reshape(batch.shape[0], -1)

    def _load_signature_model(self, model: TrainSignatureModel, parameters: Mapping[str, np.ndarray] | None) -> None:
        interpreter = self._open(model.path)
        signatures = interpreter.get_signature_list()
        missing = [s for s in REQUIRED_SIGNATURES if s not in signatures]
        if missing:
            raise SignatureError(
                f"{model.path} lacks the signatures {missing}; a trainable .tflite needs {list(REQUIRED_SIGNATURES)}"
            )
        flex = _flex_ops(interpreter)
        if flex:
            raise SignatureError(f"{model.path} uses non-builtin ops {flex}; convert with builtin ops only")
        runners = {key: self._runner(interpreter, key, model.path) for key in REQUIRED_SIGNATURES}
        train_in = runners["train"].get_input_details()
        if not {"x", "y", "lr"} <= set(train_in):
            raise SignatureError(f"the train signature must take x, y and lr; it takes {sorted(train_in)}")
        if "loss" not in signatures["train"]["outputs"] or "output" not in signatures["infer"]["outputs"]:
            raise SignatureError("the train signature must return 'loss' and infer must return 'output'")
        shapes = {n: tuple(int(d) for d in v["shape"]) for n, v in runners["restore"].get_input_details().items()}
        if sorted(shapes) != sorted(signatures["save"]["outputs"]):
            raise SignatureError("save must return exactly the tensors restore takes")
        unknown = sorted(set(model.frozen) - set(shapes))
        if unknown:
            raise SignatureError(f"frozen names {unknown} are not variables of {model.path}")
        self._interpreter, self._runners = interpreter, runners
        self._signature_model = model
        self._train_batch = int(train_in["x"]["shape"][0])
        self._param_shapes = shapes
        self._restore(parameters)

    def _restore(self, parameters: Mapping[str, np.ndarray] | None) -> None:
        if parameters is None:
            raise ParameterError("a train-signature model needs parameters for every variable restore takes")
        missing = sorted(set(self._param_shapes) - set(parameters))
        unexpected = sorted(set(parameters) - set(self._param_shapes))
        if missing or unexpected:
            raise ParameterError(f"parameters missing: {missing}; not in this model: {unexpected}")
        values: dict[str, np.ndarray] = {}
        for name, shape in self._param_shapes.items():
            value = parameters[name]
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise ParameterError(f"parameter {name!r} must be a floating numpy array")
            if value.shape != shape:
                raise ParameterError(f"parameter {name!r} has shape {value.shape}; this model needs {shape}")
            if not np.all(np.isfinite(value)):
                raise ParameterError(f"parameter {name!r} contains NaN or infinite values")
            values[name] = np.ascontiguousarray(value, dtype=np.float32)
        self._runners["restore"](**values)

    def _saved(self) -> Parameters:
        out = self._runners["save"]()
        return {name: np.array(value, dtype=np.float32) for name, value in out.items()}

    def _check_model(self) -> None:
        self._check_open()
        if self._model is None and self._signature_model is None:
            raise not_loaded(self.name)

    def fit(
        self,
        data: TrainingData,
        config: TrainConfig,
        *,
        budget: TrainingBudget | None = None,
        clock: Clock = time.perf_counter,
        checkpoint: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train the numpy head on cached backbone activations, or run the model's own train signature.

        A train signature has a fixed batch size: ``config.batch_size`` must equal it, and a last partial
        batch is skipped (as with ``drop_last=True``), so the numpy backend reproduces its batches.

        ``checkpoint`` is called before every step and after the last (for a backbone also before each
        512-row chunk of the backbone pass). When it raises, the exception propagates: a half-filled
        activation cache is dropped, and the numpy head, or the interpreter's variables of a train-signature
        model, keep the steps completed so far (see ``TrainingBackend.fit``).
        """
        self._check_model()
        if self._model is not None:
            self._require(config, self._model.spec.loss)
            cache = self._cache if self._options.cache_activations else None
            return fit_on_backbone(
                self._model, self._features, cache, data, config, budget=budget, clock=clock, checkpoint=checkpoint
            )
        return self._fit_signature(data, config, budget=budget, clock=clock, checkpoint=checkpoint)

    def _fit_signature(
        self,
        data: TrainingData,
        config: TrainConfig,
        *,
        budget: TrainingBudget | None,
        clock: Clock,
        checkpoint: Callable[[], None] | None,
    ) -> FitResult:
        model = self._signature_model
        assert model is not None
        needed = {config.optimizer, model.loss} | ({"momentum"} if config.momentum else set())
        needed |= {"weight_decay"} if config.weight_decay else set()
        needed |= {"fedprox"} if config.prox_mu else set()
        missing = sorted(needed - SIGNATURE_TRAINING)
        if missing:
            raise UnsupportedFeatureError(f"a train signature runs plain SGD on its own loss; it cannot do {missing}")
        if config.batch_size != self._train_batch:
            raise UnsupportedFeatureError(
                f"this model's train signature has a fixed batch of {self._train_batch}, not {config.batch_size}"
            )
        x = np.ascontiguousarray(data.x.reshape(len(data), -1), dtype=np.float32)
        if model.loss == "cross_entropy":
            y = np.ascontiguousarray(data.y, dtype=np.int32)
        else:
            y = np.ascontiguousarray(data.y, dtype=np.float32)
        param_bytes = 4 * sum(math.prod(s) for s in self._param_shapes.values())
        estimate = 3 * param_bytes + 8 * self._train_batch * x.shape[1] * 4
        check_ram_budget(estimate, budget)
        train = self._runners["train"]
        lr = np.float32(config.learning_rate)

        def step(idx: np.ndarray) -> float:
            return float(train(x=x[idx], y=y[idx], lr=lr)["loss"])

        sig_config = dataclasses.replace(config, drop_last=True)
        losses, seen, partial, reason, elapsed = run_steps(
            step, n=len(data), config=sig_config, budget=budget, clock=clock, checkpoint=checkpoint
        )
        return FitResult(
            parameters=self.parameters(),
            num_examples=len(data),
            examples_seen=seen,
            steps=len(losses),
            loss_curve=tuple(losses),
            wall_time_s=elapsed,
            partial=partial,
            stop_reason=reason,
            memory_estimate_bytes=estimate,
        )

    def _infer(self, x: np.ndarray) -> np.ndarray:
        out = self._runners["infer"](x=np.ascontiguousarray(x, dtype=np.float32))["output"]
        return np.array(out, dtype=np.float32)

    def evaluate(self, data: TrainingData) -> dict[str, float]:
        """Mean loss (and accuracy) on ``data``."""
        self._check_model()
        if self._model is not None:
            return evaluate_on_backbone(self._model, self._features, data)
        assert self._signature_model is not None
        spec_loss = self._signature_model.loss
        x = data.x.reshape(len(data), -1)
        y = data.y
        if spec_loss == "cross_entropy":
            y = y.astype(np.int64)
        return evaluate_outputs(
            spec_loss, [(self._infer(x[i : i + 512]), y[i : i + 512]) for i in range(0, len(data), 512)]
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for ``x``."""
        self._check_model()
        if self._model is not None:
            return predict_on_backbone(self._model, self._features, x)
        return run_features(self._infer, x.reshape(x.shape[0], -1))

    def parameters(self) -> Parameters:
        """Copies of the trainable parameters (read back through ``save`` for train-signature models)."""
        self._check_model()
        if self._model is not None:
            return {name: p.copy() for name, p in self._model.trainable().items()}
        assert self._signature_model is not None
        frozen = set(self._signature_model.frozen)
        return {name: value for name, value in self._saved().items() if name not in frozen}

    def _release(self) -> None:
        self._cache.clear()
        self._runners = {}
        self._interpreter = None
        self._model = None
        self._signature_model = None


def _flex_ops(interpreter: Any) -> list[str]:
    """Names of Flex/custom ops in the main graph (best effort: the listing API is private in LiteRT)."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return []
    try:
        names = {str(op.get("op_name", "")) for op in details()}
    except Exception:
        return []
    return sorted(n for n in names if n.startswith("Flex") or n == "CUSTOM")
