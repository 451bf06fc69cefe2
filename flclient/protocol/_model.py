"""The model specification: a tagged union of model kinds, carried as JSON in a task's ``model-spec``.

Today's kind is ``dense`` (a stack of dense layers trained in numpy). Each kind names the backend that trains it
and the model format a device must support, so the device picks its backend from the model it is given and the
server can plan which devices can take the task. New kinds (frozen backbones with heads or LoRA adapters) are new
members of :data:`ModelSpec` and new branches of :func:`model_spec_from_json`; nothing else changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Union

from .._errors import ProtocolError
from ._names import Key
from ._values import ValueReader, loads_json

if TYPE_CHECKING:
    import runtimes

__all__ = ["ACTIVATIONS", "LOSSES", "DenseLayerSpec", "DenseModelSpec", "ModelSpec", "model_spec_from_json"]

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

    def to_json(self) -> str:
        """The ``model-spec`` value."""
        layers = [[ly.in_features, ly.out_features, ly.activation] for ly in self.layers]
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


ModelSpec = Union[DenseModelSpec]  # noqa: UP007 - the tagged union; new model kinds join it here
"""Every model kind a task can carry (tagged by ``kind`` in its JSON)."""


def model_spec_from_json(text: str) -> ModelSpec:
    """Parse a ``model-spec`` JSON value; ``kind`` defaults to ``dense``. Raises :class:`~flclient.ProtocolError`."""
    raw: Any = loads_json(text, where=Key.MODEL_SPEC)
    if not isinstance(raw, dict):
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec must be a JSON object, got {type(raw).__name__}")
    reader = ValueReader(raw, where=Key.MODEL_SPEC)
    try:
        kind = reader.choice("kind", ("dense",), default="dense")
        if kind == "dense":
            return _dense(reader, raw)
    except ProtocolError as exc:  # the key is the config's; the message names the field inside the JSON
        raise ProtocolError(Key.MODEL_SPEC, exc.detail) from exc
    raise AssertionError(kind)  # pragma: no cover - choice() allows only the kinds above


def _dense(reader: ValueReader, raw: dict[str, Any]) -> DenseModelSpec:
    reader.has("layers")
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ProtocolError(Key.MODEL_SPEC, "model-spec 'layers' must be a non-empty list of [in, out, activation]")
    specs = []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, list) and len(layer) in (2, 3)):
            raise ProtocolError(Key.MODEL_SPEC, f"model-spec layer {i} must be [in, out, activation], got {layer!r}")
        n_in, n_out, *act = layer
        try:
            specs.append(DenseLayerSpec(in_features=n_in, out_features=n_out, activation=act[0] if act else "none"))
        except ValueError as exc:
            raise ProtocolError(Key.MODEL_SPEC, f"model-spec layer {i}: {exc}") from exc
    loss = reader.choice("loss", LOSSES, default="cross_entropy")
    reader.finish()
    try:
        return DenseModelSpec(layers=tuple(specs), loss=loss)
    except ValueError as exc:
        raise ProtocolError(Key.MODEL_SPEC, f"model-spec: {exc}") from exc
