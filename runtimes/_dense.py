"""The numpy engine: dense layers with optional LoRA adapters, losses, gradients, initialisation and merging.

Everything here is pure numpy on arrays the caller owns or that were copied on the way in; nothing reads a
clock, a file or a global random generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from ._exceptions import ParameterError
from ._spec import DenseStack, FloatArray, LossName, Parameters

_GELU_C = math.sqrt(2.0 / math.pi)


def init_parameters(spec: DenseStack, *, rng: np.random.Generator, dtype: npt.DTypeLike = np.float32) -> Parameters:
    """Fresh parameters for ``spec``: He-uniform weights, zero biases, LoRA ``A`` uniform and ``B`` zero.

    Example::

        params = init_parameters(head, rng=np.random.default_rng(7))
    """
    params: Parameters = {}
    targets = spec.lora_targets()
    for i, layer in enumerate(spec.layers):
        bound = math.sqrt(6.0 / layer.in_features)
        params[f"dense{i}_weight"] = rng.uniform(-bound, bound, (layer.in_features, layer.out_features)).astype(dtype)
        params[f"dense{i}_bias"] = np.zeros(layer.out_features, dtype=dtype)
        if i in targets:
            params.update(_init_lora_layer(spec, i, rng, dtype))
    return params


def init_lora(spec: DenseStack, *, rng: np.random.Generator, dtype: npt.DTypeLike = np.float32) -> Parameters:
    """Fresh adapter parameters (``A`` uniform in +-1/sqrt(in), ``B`` zero) for every LoRA target of ``spec``."""
    params: Parameters = {}
    for i in spec.lora_targets():
        params.update(_init_lora_layer(spec, i, rng, dtype))
    return params


def _init_lora_layer(spec: DenseStack, i: int, rng: np.random.Generator, dtype: npt.DTypeLike) -> Parameters:
    assert spec.lora is not None
    layer = spec.layers[i]
    bound = 1.0 / math.sqrt(layer.in_features)
    return {
        f"dense{i}_lora_a": rng.uniform(-bound, bound, (layer.in_features, spec.lora.rank)).astype(dtype),
        f"dense{i}_lora_b": np.zeros((spec.lora.rank, layer.out_features), dtype=dtype),
    }


def validate_parameters(spec: DenseStack, parameters: Mapping[str, object]) -> Parameters:
    """Check names, shapes, dtypes and finiteness against ``spec`` and return private contiguous copies.

    All copies share one floating dtype (float64 only when every input is float64, else float32).
    Raises :class:`ParameterError` with the first problem found.
    """
    expected = spec.parameter_shapes()
    missing = sorted(set(expected) - set(parameters))
    unexpected = sorted(set(parameters) - set(expected))
    if missing:
        raise ParameterError(f"parameters missing for this model: {missing}")
    if unexpected:
        raise ParameterError(f"parameters not in this model: {unexpected}")
    arrays: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        value = parameters[name]
        if not isinstance(value, np.ndarray):
            raise ParameterError(f"parameter {name!r} is a {type(value).__name__}, not a numpy array")
        if value.dtype.kind != "f":
            raise ParameterError(f"parameter {name!r} has dtype {value.dtype}; a floating dtype is required")
        if value.shape != shape:
            raise ParameterError(f"parameter {name!r} has shape {value.shape}; this model needs {shape}")
        if not np.all(np.isfinite(value)):
            raise ParameterError(f"parameter {name!r} contains NaN or infinite values")
        arrays[name] = value
    dtype = np.float64 if all(a.dtype == np.float64 for a in arrays.values()) else np.float32
    return {name: np.array(a, dtype=dtype, order="C", copy=True) for name, a in arrays.items()}


def merge_lora(spec: DenseStack, parameters: Mapping[str, FloatArray]) -> Parameters:
    """Base parameters with each adapter folded in (``W + scale * A @ B``); adapter entries are dropped.

    The inputs are not modified. The result fits ``DenseStack(layers=spec.layers, loss=spec.loss)``.
    """
    merged: Parameters = {}
    scale = spec.lora.scale if spec.lora is not None else 0.0
    targets = spec.lora_targets()
    for i in range(len(spec.layers)):
        w = parameters[f"dense{i}_weight"]
        if i in targets:
            delta = (parameters[f"dense{i}_lora_a"] @ parameters[f"dense{i}_lora_b"]) * w.dtype.type(scale)
            merged[f"dense{i}_weight"] = w + delta
        else:
            merged[f"dense{i}_weight"] = w.copy()
        merged[f"dense{i}_bias"] = parameters[f"dense{i}_bias"].copy()
    return merged


def unmerge_lora(spec: DenseStack, merged: Mapping[str, FloatArray], adapters: Mapping[str, FloatArray]) -> Parameters:
    """Undo :func:`merge_lora`: subtract ``scale * A @ B`` and put the adapters back.

    Floating-point rounding means the base weights come back equal to within a few ulps, not bit for bit;
    backends keep the frozen base untouched and never need this round trip to restore it.
    """
    params: Parameters = {}
    scale = spec.lora.scale if spec.lora is not None else 0.0
    targets = spec.lora_targets()
    for i in range(len(spec.layers)):
        w = merged[f"dense{i}_weight"]
        if i in targets:
            a, b = adapters[f"dense{i}_lora_a"], adapters[f"dense{i}_lora_b"]
            params[f"dense{i}_weight"] = w - (a @ b) * w.dtype.type(scale)
            params[f"dense{i}_lora_a"] = a.copy()
            params[f"dense{i}_lora_b"] = b.copy()
        else:
            params[f"dense{i}_weight"] = w.copy()
        params[f"dense{i}_bias"] = merged[f"dense{i}_bias"].copy()
    return params


def _gelu(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU (tanh approximation) and its derivative at ``z``."""
    c = z.dtype.type(_GELU_C)
    k = z.dtype.type(0.044715)
    half = z.dtype.type(0.5)
    t = np.tanh(c * (z + k * z * z * z))
    out = half * z * (1 + t)
    grad = half * (1 + t) + half * z * (1 - t * t) * c * (1 + 3 * k * z * z)
    return out, grad


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch and its gradient with respect to ``logits``."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, labels]))
    grad = exp / sums
    grad[rows, labels] -= 1
    grad *= logits.dtype.type(1.0 / n)
    return loss, grad


def mean_squared_error(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over all elements of ``(pred - target) ** 2`` and its gradient with respect to ``pred``."""
    diff = pred - target
    loss = float(np.mean(diff * diff))
    return loss, diff * pred.dtype.type(2.0 / diff.size)


def _loss(name: LossName, out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    if name == "cross_entropy":
        return softmax_cross_entropy(out, y)
    return mean_squared_error(out, y)


class DenseModel:
    """A :class:`DenseStack` bound to validated parameters: forward pass, loss and gradients.

    The parameter arrays are held by reference so an optimizer can update them in place; frozen arrays are
    made read-only, so nothing can change them by accident.
    """

    def __init__(self, spec: DenseStack, parameters: Parameters) -> None:
        self.spec = spec
        self.parameters = parameters
        self.dtype = next(iter(parameters.values())).dtype
        trainable = set(spec.trainable_names())
        for name, array in parameters.items():
            if name not in trainable:
                array.flags.writeable = False
        targets = spec.lora_targets()
        self._scale = self.dtype.type(spec.lora.scale if spec.lora is not None else 0.0)
        self._layers = [
            (
                parameters[f"dense{i}_weight"],
                parameters[f"dense{i}_bias"],
                parameters.get(f"dense{i}_lora_a") if i in targets else None,
                parameters.get(f"dense{i}_lora_b") if i in targets else None,
                layer.activation,
                layer.trainable and i not in targets,
            )
            for i, layer in enumerate(spec.layers)
        ]
        # A layer needs the gradient of its input only when something below it is trainable.
        first_trainable = min(i for i, (_, _, a, _, _, full) in enumerate(self._layers) if full or a is not None)
        self._first_trainable = first_trainable

    def trainable(self) -> Parameters:
        """The trainable arrays, by reference."""
        return {name: self.parameters[name] for name in self.spec.trainable_names()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs (logits for cross-entropy) for a batch ``x``."""
        h = np.asarray(x, dtype=self.dtype)
        for w, b, a, bb, act, _ in self._layers:
            z = h @ w
            z += b
            if a is not None and bb is not None:
                z += ((h @ a) @ bb) * self._scale
            if act == "relu":
                h = np.maximum(z, 0, out=z)
            elif act == "gelu":
                h = _gelu(z)[0]
            else:
                h = z
        return h

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """The data loss on a batch, no regularisers."""
        return _loss(self.spec.loss, self.forward(x), y)[0]

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Parameters]:
        """Data loss on a batch and the gradient of every trainable parameter."""
        h = np.asarray(x, dtype=self.dtype)
        # Per layer: its input, the LoRA bottleneck x @ A, and the activation's derivative (None: identity).
        tape: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        for w, b, a, bb, act, _ in self._layers:
            z = h @ w
            z += b
            t = None
            if a is not None and bb is not None:
                t = h @ a
                z += (t @ bb) * self._scale
            dact: np.ndarray | None
            if act == "relu":
                dact = z > 0
                out = z * dact
            elif act == "gelu":
                out, dact = _gelu(z)
            else:
                out, dact = z, None
            tape.append((h, t, dact))
            h = out
        loss, dh = _loss(self.spec.loss, h, y)
        grads: Parameters = {}
        for i in range(len(self._layers) - 1, self._first_trainable - 1, -1):
            w, _, a, bb, _, full = self._layers[i]
            inp, t, dact = tape[i]
            dz = dh if dact is None else dh * dact
            if full:
                grads[f"dense{i}_weight"] = inp.T @ dz
                grads[f"dense{i}_bias"] = dz.sum(axis=0)
            dt = None
            if a is not None and bb is not None and t is not None:
                grads[f"dense{i}_lora_b"] = (t.T @ dz) * self._scale
                dt = (dz @ bb.T) * self._scale
                grads[f"dense{i}_lora_a"] = inp.T @ dt
            if i > self._first_trainable:
                dh = dz @ w.T
                if dt is not None and a is not None:
                    dh += dt @ a.T
        return loss, grads

    def evaluate(self, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024) -> dict[str, float]:
        """Mean loss (and accuracy for cross-entropy) over a whole dataset, in batches."""
        return evaluate_outputs(
            self.spec.loss,
            [(self.forward(x[i : i + batch_size]), y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)],
        )


def evaluate_outputs(loss_name: LossName, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Example-weighted mean loss (and accuracy for cross-entropy) over ``(outputs, targets)`` batches."""
    total = 0.0
    correct = 0
    n = 0
    for out, y in batches:
        total += _loss(loss_name, out, y)[0] * out.shape[0]
        if loss_name == "cross_entropy":
            correct += int(np.sum(np.argmax(out, axis=1) == y))
        n += out.shape[0]
    metrics = {"loss": total / n, "num_examples": float(n)}
    if loss_name == "cross_entropy":
        metrics["accuracy"] = correct / n
    return metrics
