"""Frozen, keyword-only descriptions of models, training configurations, budgets, data and results."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Activation = Literal["none", "relu", "gelu"]
LossName = Literal["cross_entropy", "mse"]
OptimizerName = Literal["sgd", "adam"]
FloatArray = npt.NDArray[np.floating]
Parameters = dict[str, npt.NDArray[np.floating]]

_ACTIVATIONS = ("none", "relu", "gelu")
_LOSSES = ("cross_entropy", "mse")
_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True, kw_only=True)
class DenseLayer:
    """One fully connected layer ``y = act(x @ weight + bias)``; ``weight`` has shape (in, out).

    ``trainable=False`` freezes the layer (a backbone layer run in numpy). GELU is the tanh approximation, the
    same as ONNX ``Gelu(approximate="tanh")``.
    """

    in_features: int
    out_features: int
    activation: Activation = "none"
    trainable: bool = True

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(
                f"a dense layer needs at least one input and one output feature, got "
                f"{self.in_features} -> {self.out_features}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")


@dataclass(frozen=True, kw_only=True)
class LoRAConfig:
    """Low-rank adapters ``x @ (W + (alpha / rank) * A @ B)`` on the chosen layers of a :class:`DenseStack`.

    On a targeted layer the base weight and bias are frozen and only ``A`` (in, rank) and ``B`` (rank, out) are
    trained. ``targets`` are layer indices; ``None`` means every layer. ``init_seed`` seeds ``A`` when the caller
    does not provide adapter parameters (``B`` starts at zero, so an untrained adapter changes nothing).
    ``train_a=False`` freezes ``A`` too (FFA-LoRA): only ``B`` is trained, so a federated average of the ``B``
    factors is exactly the average of the products ``A @ B``.
    """

    rank: int
    alpha: float
    targets: tuple[int, ...] | None = None
    init_seed: int = 0
    train_a: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be a positive finite number, got {self.alpha}")
        if self.targets is not None and len(set(self.targets)) != len(self.targets):
            raise ValueError(f"LoRA targets must not repeat a layer, got {self.targets}")

    @property
    def scale(self) -> float:
        """The factor ``alpha / rank`` applied to ``A @ B``."""
        return self.alpha / self.rank


@dataclass(frozen=True, kw_only=True)
class DenseStack:
    """A stack of dense layers with a loss: a linear or MLP head, or a frozen stack carrying LoRA adapters.

    Parameter names are ``dense{i}_weight``, ``dense{i}_bias``, ``dense{i}_lora_a`` and ``dense{i}_lora_b``
    (identifiers, so they can be TFLite signature argument names too).

    Example::

        head = DenseStack(layers=(DenseLayer(in_features=64, out_features=64, activation="relu"),
                                  DenseLayer(in_features=64, out_features=10)),
                          loss="cross_entropy")
    """

    layers: tuple[DenseLayer, ...]
    loss: LossName = "cross_entropy"
    lora: LoRAConfig | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a dense stack needs at least one layer")
        for i in range(1, len(self.layers)):
            if self.layers[i].in_features != self.layers[i - 1].out_features:
                raise ValueError(
                    f"layer {i} takes {self.layers[i].in_features} features but layer {i - 1} gives "
                    f"{self.layers[i - 1].out_features}"
                )
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.lora is not None and self.lora.targets is not None:
            bad = [t for t in self.lora.targets if not 0 <= t < len(self.layers)]
            if bad:
                raise ValueError(f"LoRA targets {bad} are not layer indices of a {len(self.layers)}-layer stack")
        if not self.trainable_names():
            raise ValueError("the stack has nothing to train: every layer is frozen and no LoRA is set")

    @property
    def in_features(self) -> int:
        """Width of the input."""
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        """Width of the output (classes for cross-entropy)."""
        return self.layers[-1].out_features

    def lora_targets(self) -> tuple[int, ...]:
        """Indices of the layers that carry adapters."""
        if self.lora is None:
            return ()
        return tuple(range(len(self.layers))) if self.lora.targets is None else tuple(sorted(self.lora.targets))

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape, frozen ones included, in layer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        targets = self.lora_targets()
        for i, layer in enumerate(self.layers):
            shapes[f"dense{i}_weight"] = (layer.in_features, layer.out_features)
            shapes[f"dense{i}_bias"] = (layer.out_features,)
            if i in targets and self.lora is not None:
                shapes[f"dense{i}_lora_a"] = (layer.in_features, self.lora.rank)
                shapes[f"dense{i}_lora_b"] = (self.lora.rank, layer.out_features)
        return shapes

    def trainable_names(self) -> tuple[str, ...]:
        """Names of the parameters that training changes."""
        names: list[str] = []
        targets = self.lora_targets()
        for i, layer in enumerate(self.layers):
            if i in targets:
                names += (
                    [f"dense{i}_lora_a", f"dense{i}_lora_b"]
                    if self.lora and self.lora.train_a
                    else [f"dense{i}_lora_b"]
                )
            elif layer.trainable:
                names += [f"dense{i}_weight", f"dense{i}_bias"]
        return tuple(names)


@dataclass(frozen=True, kw_only=True)
class BackboneModel:
    """A frozen backbone model file (ONNX or .tflite) whose output feeds a numpy-trained part.

    Either ``head`` is a :class:`DenseStack` trained on the backbone's output ``output_name`` (default: the first
    output), or ``extract_final_linear`` lifts that many final linear layers (Gemm, or MatMul + Add, with ReLU
    between) out of an ONNX graph and trains ``lora`` adapters on them; the rest of the graph is the backbone.
    Both together: the lifted layers carry the adapters and ``head``'s layers follow them, trained in full
    (numbered after the lifted ones).
    """

    path: Path
    head: DenseStack | None = None
    extract_final_linear: int = 0
    lora: LoRAConfig | None = None
    loss: LossName = "cross_entropy"
    output_name: str | None = None

    def __post_init__(self) -> None:
        if self.head is None and self.extract_final_linear == 0:
            raise ValueError("give a head, extract_final_linear > 0, or both")
        if self.extract_final_linear < 0:
            raise ValueError(f"extract_final_linear must be >= 0, got {self.extract_final_linear}")
        if self.extract_final_linear and self.lora is None:
            raise ValueError("extracting the final linear layers needs a LoRAConfig to train them")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")


@dataclass(frozen=True, kw_only=True)
class TrainSignatureModel:
    """A .tflite model that carries ``train``, ``infer``, ``save`` and ``restore`` signatures.

    ``train`` takes ``x``, ``y`` and ``lr`` and returns ``loss``; ``infer`` takes ``x`` and returns ``output``;
    ``save`` returns every variable by name; ``restore`` takes them by the same names. Names in ``frozen`` are
    restored but not reported as trained parameters (a LoRA base).
    """

    path: Path
    loss: LossName = "cross_entropy"
    frozen: tuple[str, ...] = ()


ModelSource = DenseStack | BackboneModel | TrainSignatureModel


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: epochs or a step cap, batch size, optimizer and regularisers.

    ``weight_decay`` is an L2 term added to the gradient (``g += wd * w``) for both optimizers; ``prox_mu`` is
    FedProx's proximal term ``mu/2 * ||w - w_global||^2`` anchored at the parameters given to ``load``.
    Mini-batch order comes from ``numpy.random.Generator(PCG64(seed))``. ``blas_threads`` caps BLAS threads
    for the duration of a call (``None`` leaves them alone).
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    optimizer: OptimizerName = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 when given, got {self.max_steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must both be in [0, 1), got {self.adam_betas}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.prox_mu) and self.prox_mu >= 0):
            raise ValueError(f"prox_mu must be a finite number >= 0, got {self.prox_mu}")
        if self.blas_threads is not None and self.blas_threads < 1:
            raise ValueError(f"blas_threads must be at least 1 or None, got {self.blas_threads}")


@dataclass(frozen=True, kw_only=True)
class TrainingBudget:
    """Limits from the device profile: refuse configurations whose memory estimate exceeds ``ram_bytes``;
    stop early (with a partial result) before ``wall_time_s`` would be overrun."""

    ram_bytes: int | None = None
    wall_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.ram_bytes is not None and self.ram_bytes < 1:
            raise ValueError(f"ram_bytes must be positive when given, got {self.ram_bytes}")
        if self.wall_time_s is not None and not (self.wall_time_s > 0 and math.isfinite(self.wall_time_s)):
            raise ValueError(f"wall_time_s must be a positive finite number when given, got {self.wall_time_s}")


@dataclass(frozen=True, kw_only=True, eq=False)
class TrainingData:
    """Examples ``x`` of shape (n, features) and targets ``y``: int class labels (n,) or float targets (n, k)."""

    x: npt.NDArray[np.generic]
    y: npt.NDArray[np.generic]

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise ValueError(f"x must have shape (n, ...), got shape {self.x.shape}")
        if self.y.shape[:1] != self.x.shape[:1]:
            raise ValueError(f"x has {self.x.shape[0]} examples but y has shape {self.y.shape}")
        if self.x.shape[0] == 0:
            raise ValueError("training data is empty")

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, kw_only=True, eq=False)
class FitResult:
    """What one ``fit`` call produced.

    ``parameters`` holds the new trainable parameters only. ``partial`` is true when the wall-time budget
    stopped training early; the parameters are then those after the last completed step, still valid.
    """

    parameters: Parameters
    num_examples: int
    examples_seen: int
    steps: int
    loss_curve: tuple[float, ...]
    wall_time_s: float
    partial: bool = False
    stop_reason: str | None = None
    memory_estimate_bytes: int = 0
    metadata: Mapping[str, object] = field(default_factory=dict)
