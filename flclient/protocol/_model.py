"""The model specification: a tagged union of model kinds, carried as JSON in a task's ``model-spec``.

Today's kind is ``dense`` (a stack of dense layers trained in numpy). Each kind names the backend that trains it
and the model format a device must support, so the device picks its backend from the model it is given and the
server can plan which devices can take the task. New kinds (frozen backbones with heads or LoRA adapters) are new
members of :data:`ModelSpec` and new branches of :func:`model_spec_from_json`; nothing else changes.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Union

import numpy as np

from .._errors import ProtocolError
from ._names import Key
from ._values import ValueReader, loads_json

if TYPE_CHECKING:
    import runtimes

__all__ = [
    "ACTIVATIONS",
    "BACKBONE_FORMATS",
    "LOSSES",
    "BackboneHeadSpec",
    "BackboneLoRASpec",
    "DenseLayerSpec",
    "DenseModelSpec",
    "ModelSpec",
    "model_spec_from_json",
]

ACTIVATIONS: Final[tuple[Literal["none", "relu", "gelu"], ...]] = ("none", "relu", "gelu")
LOSSES: Final[tuple[Literal["cross_entropy", "mse"], ...]] = ("cross_entropy", "mse")
_MAX_LAYERS = 256
_MAX_WIDTH = 1 << 24


@dataclass(frozen=True, kw_only=True)
class DenseLayerSpec:
    """One dense layer: ``in_features`` -> ``out_features`` then ``activation``."""

    in_features: int
    out_features: int
    activation: Literal["none", "relu", "gelu"] = "none"

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_WIDTH:
                raise ValueError(f"{name} must be a whole number in [1, {_MAX_WIDTH}], got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")


@dataclass(frozen=True, kw_only=True)
class DenseModelSpec:
    """A stack of dense layers with a loss, trained in numpy (parameters ``dense{i}_weight`` / ``dense{i}_bias``)."""

    layers: tuple[DenseLayerSpec, ...]
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"

    kind: ClassVar[Literal["dense"]] = "dense"
    backend: ClassVar[str] = "numpy"  # the runtimes backend that trains this kind
    model_format: ClassVar[str] = "dense-v1"  # what a device must support to load it

    def __post_init__(self) -> None:
        if not self.layers or len(self.layers) > _MAX_LAYERS:
            raise ValueError(f"a dense model needs 1 to {_MAX_LAYERS} layers, got {len(self.layers)}")
        for a, b in zip(self.layers, self.layers[1:], strict=False):
            if a.out_features != b.in_features:
                raise ValueError(f"layer widths do not chain: {a.out_features} outputs feed {b.in_features} inputs")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def in_features(self) -> int:
        """Input width: the number of feature columns the model reads."""
        return self.layers[0].in_features

    def parameter_names(self) -> tuple[str, ...]:
        """The names of the model's parameters, in layer order."""
        return tuple(f"dense{i}_{p}" for i in range(len(self.layers)) for p in ("weight", "bias"))

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter."""
        out: dict[str, tuple[int, ...]] = {}
        for i, layer in enumerate(self.layers):
            out[f"dense{i}_weight"] = (layer.in_features, layer.out_features)
            out[f"dense{i}_bias"] = (layer.out_features,)
        return out

    def personal_parameter_names(self, personal_layers: int) -> frozenset[str]:
        """The parameters of the last ``personal_layers`` layers (a device's private head); empty for 0."""
        if personal_layers == 0:
            return frozenset()
        n = len(self.layers)
        if not 0 < personal_layers < n:
            raise ProtocolError(
                Key.PERSONAL_LAYERS, f"personal-layers must be a whole number in [0, {n}), got {personal_layers}"
            )
        return frozenset(f"dense{i}_{p}" for i in range(n - personal_layers, n) for p in ("weight", "bias"))

    def initial_parameters(self, seed: int) -> dict[str, np.ndarray]:
        """The initial model: Glorot-normal weights from ``seed``, zero biases."""
        return _dense_init(self.layers, seed)

    def to_json(self) -> str:
        """The ``model-spec`` value."""
        layers = _layers_json(self.layers)
        return json.dumps({"kind": self.kind, "layers": layers, "loss": self.loss}, sort_keys=True)

    def to_runtime(self) -> runtimes.DenseStack:
        """The :mod:`runtimes` model this specification describes."""
        import runtimes

        return runtimes.DenseStack(
            layers=tuple(
                runtimes.DenseLayer(in_features=ly.in_features, out_features=ly.out_features, activation=ly.activation)
                for ly in self.layers
            ),
            loss=self.loss,
        )


BACKBONE_FORMATS: Final[tuple[Literal["onnx", "litert"], ...]] = ("onnx", "litert")
LORA_A_MODES: Final[tuple[Literal["frozen", "trained"], ...]] = ("frozen", "trained")
_MAX_RANK = 4096
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def _chain(layers: tuple[DenseLayerSpec, ...], what: str) -> None:
    for a, b in itertools.pairwise(layers):
        if a.out_features != b.in_features:
            raise ValueError(f"{what} widths do not chain: {a.out_features} outputs feed {b.in_features} inputs")


def _glorot(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    weight: np.ndarray = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out))).astype(np.float32)
    return weight


def _dense_init(layers: tuple[DenseLayerSpec, ...], seed: int) -> dict[str, np.ndarray]:
    """``dense{i}_weight`` (Glorot-normal from ``seed``) and ``dense{i}_bias`` (zeros) of a stack of layers."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, ly in enumerate(layers):
        out[f"dense{i}_weight"] = _glorot(rng, ly.in_features, ly.out_features)
        out[f"dense{i}_bias"] = np.zeros(ly.out_features, dtype=np.float32)
    return out


def _head_personal(head_offset: int, n_head: int, personal_layers: int) -> frozenset[str]:
    if personal_layers == 0:
        return frozenset()
    if not 0 < personal_layers <= n_head:
        raise ProtocolError(
            Key.PERSONAL_LAYERS,
            f"personal-layers must be a whole number in [0, {n_head}] (the head), got {personal_layers}",
        )
    first = head_offset + n_head - personal_layers
    return frozenset(f"dense{i}_{p}" for i in range(first, head_offset + n_head) for p in ("weight", "bias"))


@dataclass(frozen=True, kw_only=True)
class BackboneHeadSpec:
    """A frozen backbone (an ONNX or TFLite file, pinned by sha256 in the task's ``backbone`` pin) whose feature
    output ``output_name`` (``None``: its first output) feeds a trainable dense ``head`` (``dense{i}_*``).

    Only the head travels; the backbone runs in ONNX Runtime (``onnx``) or LiteRT (``litert``) on the device.
    """

    backbone_format: Literal["onnx", "litert"]
    head: tuple[DenseLayerSpec, ...]
    output_name: str | None = None
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"

    kind: ClassVar[Literal["backbone-head"]] = "backbone-head"
    model_format: ClassVar[str] = "backbone-head-v1"

    def __post_init__(self) -> None:
        if self.backbone_format not in BACKBONE_FORMATS:
            raise ValueError(f"backbone format must be one of {BACKBONE_FORMATS}, got {self.backbone_format!r}")
        if not self.head or len(self.head) > _MAX_LAYERS:
            raise ValueError(f"a head needs 1 to {_MAX_LAYERS} layers, got {len(self.head)}")
        _chain(self.head, "head layer")
        if self.output_name is not None and not _OUTPUT_NAME.fullmatch(self.output_name):
            raise ValueError(f"output name must be 1 to 128 letters, digits or _.:/-, got {self.output_name!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def backend(self) -> str:
        """The runtimes backend that runs the backbone: ``onnx`` or ``litert``."""
        return self.backbone_format

    @property
    def in_features(self) -> int:
        """The width of the backbone's feature output (what the head reads)."""
        return self.head[0].in_features

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter that travels (the head's)."""
        return DenseModelSpec(layers=self.head, loss=self.loss).parameter_shapes()

    def parameter_names(self) -> tuple[str, ...]:
        """The names of the parameters that travel."""
        return tuple(self.parameter_shapes())

    def personal_parameter_names(self, personal_layers: int) -> frozenset[str]:
        """The parameters of the head's last ``personal_layers`` layers; empty for 0."""
        if personal_layers >= len(self.head):
            raise ProtocolError(
                Key.PERSONAL_LAYERS,
                f"personal-layers must leave a shared head layer: in [0, {len(self.head)}), got {personal_layers}",
            )
        return _head_personal(0, len(self.head), personal_layers)

    def initial_parameters(self, seed: int) -> dict[str, np.ndarray]:
        """Glorot-normal head weights from ``seed``, zero biases."""
        return _dense_init(self.head, seed)

    def to_json(self) -> str:
        """The ``model-spec`` value."""
        body: dict[str, Any] = {
            "kind": self.kind,
            "backbone": self.backbone_format,
            "head": _layers_json(self.head),
            "loss": self.loss,
        }
        if self.output_name is not None:
            body["output"] = self.output_name
        return json.dumps(body, sort_keys=True)

    def to_runtime(self, backbone: Path) -> runtimes.BackboneModel:
        """The :mod:`runtimes` model: ``backbone`` is the verified local file of the pinned backbone."""
        import runtimes

        return runtimes.BackboneModel(
            path=backbone, head=_runtime_stack(self.head, self.loss), output_name=self.output_name
        )


@dataclass(frozen=True, kw_only=True)
class BackboneLoRASpec:
    """A frozen ONNX backbone whose final linear layers ``adapted`` (``in -> out``, Gemm or MatMul + Add with
    ReLU between, lifted out of the graph) carry LoRA adapters of ``rank`` and ``alpha`` on the layers ``targets``
    (indices into ``adapted``), followed by a trainable dense ``head`` (may be empty).

    Parameters are ``dense{t}_lora_a`` (in, rank) / ``dense{t}_lora_b`` (rank, out) for each target ``t`` and
    ``dense{i}_weight`` / ``dense{i}_bias`` for the head layers, numbered after the adapted ones. With
    ``lora_a="frozen"`` (FFA-LoRA, the default) ``A`` is drawn from ``seed`` on every device and never travels:
    only ``B`` is trained, so averaging the ``B`` updates averages the products ``A @ B`` exactly. ``"trained"``
    trains and sends both factors (plain FedAvg of A and B).
    """

    backbone_format: Literal["onnx", "litert"]
    adapted: tuple[DenseLayerSpec, ...]
    rank: int
    alpha: float
    targets: tuple[int, ...] | None = None
    head: tuple[DenseLayerSpec, ...] = ()
    seed: int = 0
    lora_a: Literal["frozen", "trained"] = "frozen"
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"

    kind: ClassVar[Literal["backbone-lora"]] = "backbone-lora"
    model_format: ClassVar[str] = "backbone-lora-v1"

    def __post_init__(self) -> None:
        if self.backbone_format != "onnx":
            raise ValueError(
                f"LoRA adapters are lifted out of an ONNX graph; backbone format must be 'onnx', got "
                f"{self.backbone_format!r} (train a head on a TFLite backbone with kind 'backbone-head')"
            )
        if not self.adapted or len(self.adapted) + len(self.head) > _MAX_LAYERS:
            raise ValueError(f"LoRA needs 1 to {_MAX_LAYERS} adapted layers, got {len(self.adapted)}")
        _chain(self.adapted + self.head, "adapted/head layer")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 1 <= self.rank <= _MAX_RANK:
            raise ValueError(f"rank must be a whole number in [1, {_MAX_RANK}], got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha!r}")
        if self.targets is not None:
            if not self.targets or len(set(self.targets)) != len(self.targets):
                raise ValueError(f"targets must be distinct indices of the adapted layers, got {self.targets}")
            bad = [t for t in self.targets if not 0 <= t < len(self.adapted)]
            if bad:
                raise ValueError(f"targets {bad} are not indices of the {len(self.adapted)} adapted layers")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")
        if self.lora_a not in LORA_A_MODES:
            raise ValueError(f"lora-a must be one of {LORA_A_MODES}, got {self.lora_a!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def backend(self) -> str:
        """The runtimes backend that runs the backbone (``onnx``)."""
        return self.backbone_format

    @property
    def lora_targets(self) -> tuple[int, ...]:
        """The adapted layers that carry adapters, sorted."""
        return tuple(range(len(self.adapted))) if self.targets is None else tuple(sorted(self.targets))

    def frozen_a(self) -> dict[str, np.ndarray]:
        """The factors ``A`` drawn from ``seed`` (the same on the server and every device): uniform in
        ``±1/sqrt(in)`` per target, in target order."""
        rng = np.random.default_rng(self.seed)
        out: dict[str, np.ndarray] = {}
        for t in self.lora_targets:
            n_in = self.adapted[t].in_features
            bound = 1.0 / math.sqrt(n_in)
            out[f"dense{t}_lora_a"] = rng.uniform(-bound, bound, (n_in, self.rank)).astype(np.float32)
        return out

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter that travels (``B``, ``A`` only when trained, the head)."""
        out: dict[str, tuple[int, ...]] = {}
        for t in self.lora_targets:
            if self.lora_a == "trained":
                out[f"dense{t}_lora_a"] = (self.adapted[t].in_features, self.rank)
            out[f"dense{t}_lora_b"] = (self.rank, self.adapted[t].out_features)
        base = len(self.adapted)
        for i, ly in enumerate(self.head):
            out[f"dense{base + i}_weight"] = (ly.in_features, ly.out_features)
            out[f"dense{base + i}_bias"] = (ly.out_features,)
        return out

    def parameter_names(self) -> tuple[str, ...]:
        """The names of the parameters that travel."""
        return tuple(self.parameter_shapes())

    def personal_parameter_names(self, personal_layers: int) -> frozenset[str]:
        """The parameters of the head's last ``personal_layers`` layers (the adapters stay shared)."""
        return _head_personal(len(self.adapted), len(self.head), personal_layers)

    def initial_parameters(self, seed: int) -> dict[str, np.ndarray]:
        """``B`` at zero (an untrained adapter changes nothing), ``A`` from :meth:`frozen_a` when it travels, and
        Glorot-normal head weights from ``seed``."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        a = self.frozen_a()
        for name, shape in self.parameter_shapes().items():
            if name.endswith("_lora_a"):
                out[name] = a[name]
            elif name.endswith("_weight"):
                out[name] = _glorot(rng, *shape)
            else:
                out[name] = np.zeros(shape, dtype=np.float32)
        return out

    def to_json(self) -> str:
        """The ``model-spec`` value."""
        body: dict[str, Any] = {
            "kind": self.kind,
            "backbone": self.backbone_format,
            "adapted": _layers_json(self.adapted),
            "head": _layers_json(self.head),
            "rank": self.rank,
            "alpha": self.alpha,
            "seed": self.seed,
            "lora-a": self.lora_a,
            "loss": self.loss,
        }
        if self.targets is not None:
            body["targets"] = list(self.targets)
        return json.dumps(body, sort_keys=True)

    def to_runtime(self, backbone: Path) -> runtimes.BackboneModel:
        """The :mod:`runtimes` model: ``backbone`` is the verified local file of the pinned backbone."""
        import runtimes

        lora = runtimes.LoRAConfig(
            rank=self.rank,
            alpha=float(self.alpha),
            targets=self.lora_targets,
            init_seed=self.seed,
            train_a=self.lora_a == "trained",
        )
        head = _runtime_stack(self.head, self.loss) if self.head else None
        return runtimes.BackboneModel(
            path=backbone, head=head, extract_final_linear=len(self.adapted), lora=lora, loss=self.loss
        )


def _runtime_stack(layers: tuple[DenseLayerSpec, ...], loss: str) -> runtimes.DenseStack:
    import runtimes

    return runtimes.DenseStack(
        layers=tuple(
            runtimes.DenseLayer(in_features=ly.in_features, out_features=ly.out_features, activation=ly.activation)
            for ly in layers
        ),
        loss=loss,  # type: ignore[arg-type]
    )


ModelSpec = Union[DenseModelSpec, BackboneHeadSpec, BackboneLoRASpec]  # noqa: UP007 - the tagged union
"""Every model kind a task can carry (tagged by ``kind`` in its JSON)."""


def model_spec_from_json(text: str) -> ModelSpec:
    """Parse a ``model-spec`` JSON value; ``kind`` defaults to ``dense``. Raises :class:`~flclient.ProtocolError`."""
    raw: Any = loads_json(text, where=Key.MODEL_SPEC)
    if not isinstance(raw, dict):
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec must be a JSON object, got {type(raw).__name__}")
    reader = ValueReader(raw, where=Key.MODEL_SPEC)
    try:
        kind = reader.choice("kind", ("dense", "backbone-head", "backbone-lora"), default="dense")
        if kind == "dense":
            return _dense(reader, raw)
        if kind == "backbone-head":
            return _backbone_head(reader, raw)
        if kind == "backbone-lora":
            return _backbone_lora(reader, raw)
    except ProtocolError as exc:  # the key is the config's; the message names the field inside the JSON
        raise ProtocolError(Key.MODEL_SPEC, exc.detail) from exc
    raise AssertionError(kind)  # pragma: no cover - choice() allows only the kinds above


def _layers_json(layers: tuple[DenseLayerSpec, ...]) -> list[list[Any]]:
    """Layers as ``model-spec`` JSON writes them (:func:`_layers` reads them back)."""
    return [[ly.in_features, ly.out_features, ly.activation] for ly in layers]


def _layers(raw: dict[str, Any], key: str, *, required: bool = True) -> tuple[DenseLayerSpec, ...]:
    layers = raw.get(key, None if required else [])
    if not isinstance(layers, list) or (required and not layers):
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec {key!r} must be a non-empty list of [in, out, activation]")
    specs = []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, list) and len(layer) in (2, 3)):
            raise ProtocolError(
                Key.MODEL_SPEC, f"model-spec {key!r} layer {i} must be [in, out, activation], got {layer!r}"
            )
        n_in, n_out, *act = layer
        try:
            specs.append(DenseLayerSpec(in_features=n_in, out_features=n_out, activation=act[0] if act else "none"))
        except ValueError as exc:
            raise ProtocolError(Key.MODEL_SPEC, f"model-spec {key!r} layer {i}: {exc}") from exc
    return tuple(specs)


def _dense(reader: ValueReader, raw: dict[str, Any]) -> DenseModelSpec:
    reader.has("layers")
    specs = _layers(raw, "layers")
    loss = reader.choice("loss", LOSSES, default="cross_entropy")
    reader.finish()
    try:
        return DenseModelSpec(layers=specs, loss=loss)
    except ValueError as exc:
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec: {exc}") from exc


def _backbone_head(reader: ValueReader, raw: dict[str, Any]) -> BackboneHeadSpec:
    backbone = reader.choice("backbone", BACKBONE_FORMATS)
    reader.has("head")
    head = _layers(raw, "head")
    output = reader.optional_text("output", max_len=128)
    loss = reader.choice("loss", LOSSES, default="cross_entropy")
    reader.finish()
    try:
        return BackboneHeadSpec(backbone_format=backbone, head=head, output_name=output, loss=loss)
    except ValueError as exc:
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec: {exc}") from exc


def _backbone_lora(reader: ValueReader, raw: dict[str, Any]) -> BackboneLoRASpec:
    backbone = reader.choice("backbone", BACKBONE_FORMATS)
    reader.has("adapted")
    adapted = _layers(raw, "adapted")
    reader.has("head")
    head = _layers(raw, "head", required=False)
    rank = reader.whole("rank", minimum=1, maximum=_MAX_RANK)
    alpha = reader.number("alpha", above=0.0)
    targets = reader.wholes("targets") if reader.has("targets") else None
    seed = reader.whole("seed", 0, minimum=0, maximum=2**63 - 1)
    lora_a = reader.choice("lora-a", LORA_A_MODES, default="frozen")
    loss = reader.choice("loss", LOSSES, default="cross_entropy")
    reader.finish()
    try:
        return BackboneLoRASpec(
            backbone_format=backbone,
            adapted=adapted,
            rank=rank,
            alpha=alpha,
            targets=targets,
            head=head,
            seed=seed,
            lora_a=lora_a,
            loss=loss,
        )
    except ValueError as exc:
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec: {exc}") from exc
