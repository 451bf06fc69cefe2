"""Artifact pins: the exact feature module and model a task names (by version and sha256)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .._errors import ProtocolError
from ..gate._compat import FeaturePin
from ._names import Key
from ._values import ValueReader

__all__ = ["ArtifactPins", "BackbonePin", "FeaturePin", "ModelPin"]

T = TypeVar("T")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class ModelPin:
    """The global model as a TUF checkpoint: ``name@version`` (``global@<model version>``) with its sha256."""

    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or not _NAME.fullmatch(self.version):
            raise ValueError(f"a model pin is name@version of letters, digits, '.', '_' or '-', got {self}")
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError("a model pin's sha256 must be 64 lower-case hex digits")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, kw_only=True)
class BackbonePin(ModelPin):
    """A frozen backbone file (ONNX or TFLite) as ``name@version`` with its sha256: found among the device's local
    backbones by sha256, or fetched once through TUF by exactly this pin. It never travels in a task's arrays."""


@dataclass(frozen=True, kw_only=True)
class ArtifactPins:
    """What a task pins: its feature module, when the model travels through TUF the model checkpoint, and the
    frozen backbone of a backbone model."""

    feature_module: FeaturePin | None = None
    model: ModelPin | None = None
    backbone: BackbonePin | None = None

    def __post_init__(self) -> None:
        # What read() can split back: "name@version" at the first '@', at most 300 characters.
        pin = self.feature_module
        if pin is not None and (not pin.name or "@" in pin.name or len(pin.name) + 1 + len(pin.version) > 300):
            raise ValueError(f"a feature pin is name@version, 300 characters at most, with no '@' in the name: {pin}")

    def to_values(self) -> dict[str, object]:
        """The task-config values of the pins."""
        out: dict[str, object] = {}
        if self.feature_module is not None:
            out[Key.FEATURE_MODULE] = f"{self.feature_module.name}@{self.feature_module.version}"
            out[Key.FEATURE_MODULE_SHA256] = self.feature_module.sha256
        if self.model is not None:
            out[Key.MODEL_PIN] = str(self.model)
            out[Key.MODEL_SHA256] = self.model.sha256
        if self.backbone is not None:
            out[Key.BACKBONE] = str(self.backbone)
            out[Key.BACKBONE_SHA256] = self.backbone.sha256
        return out

    @classmethod
    def read(cls, reader: ValueReader) -> ArtifactPins:
        """Read the pins (a pin's two keys go together)."""
        return cls(
            feature_module=_pair(reader, Key.FEATURE_MODULE, Key.FEATURE_MODULE_SHA256, _feature),
            model=_pair(reader, Key.MODEL_PIN, Key.MODEL_SHA256, _model),
            backbone=_pair(reader, Key.BACKBONE, Key.BACKBONE_SHA256, _backbone),
        )


def _feature(name: str, version: str, sha: str) -> FeaturePin:
    return FeaturePin(name=name, version=version, sha256=sha)


def _model(name: str, version: str, sha: str) -> ModelPin:
    return ModelPin(name=name, version=version, sha256=sha)


def _backbone(name: str, version: str, sha: str) -> BackbonePin:
    return BackbonePin(name=name, version=version, sha256=sha)


def _pair(reader: ValueReader, pin_key: str, sha_key: str, make: Callable[[str, str, str], T]) -> T | None:
    pin, sha = reader.optional_text(pin_key, max_len=300), reader.optional_text(sha_key, max_len=64)
    if pin is None and sha is None:
        return None
    if pin is None or sha is None:
        raise ProtocolError(pin_key, f"{pin_key!r} (name@version) and {sha_key!r} go together")
    name, at, version = pin.partition("@")
    if not at or not name or not version:
        raise ProtocolError(pin_key, f"{pin_key!r} must be name@version, got {pin!r}")
    try:
        return make(name, version, sha)
    except ValueError as exc:
        raise ProtocolError(pin_key, f"{pin_key!r}: {exc}") from exc
