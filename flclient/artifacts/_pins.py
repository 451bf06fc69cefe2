"""What a task pins: an artifact's kind, name, version and sha256, and the TUF target path that names it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["ArtifactKind", "ArtifactPin"]

ArtifactKind = Literal["module", "checkpoint", "backbone"]
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PREFIX = {"module": "modules", "checkpoint": "checkpoints", "backbone": "backbones"}


@dataclass(frozen=True, kw_only=True)
class ArtifactPin:
    """Exactly one artifact: a device given a pin gets these bytes or a refusal, never a near match.

    Example::

        pin = ArtifactPin.parse("module", "device_context@1.0.0", sha256="9f2c...")
        pin.target_path   # 'modules/device_context/1.0.0'
    """

    kind: ArtifactKind
    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        if self.kind not in _PREFIX:
            raise ValueError(f"artifact kind must be 'module', 'checkpoint' or 'backbone', got {self.kind!r}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"artifact name must match {_NAME.pattern}, got {self.name!r}")
        if not isinstance(self.version, str) or not _VERSION.fullmatch(self.version):
            raise ValueError(f"artifact version must match {_VERSION.pattern}, got {self.version!r}")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"artifact sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    @property
    def target_path(self) -> str:
        """The TUF target path: ``modules/``, ``checkpoints/`` or ``backbones/<name>/<version>``."""
        return f"{_PREFIX[self.kind]}/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name}@{self.version} ({self.sha256[:12]})"

    @classmethod
    def parse(cls, kind: ArtifactKind, spec: str, *, sha256: str) -> ArtifactPin:
        """From a task's ``"name@version"`` and sha256; a malformed value raises ``ValueError`` with a sentence."""
        name, sep, version = spec.partition("@")
        if not sep:
            raise ValueError(f"an artifact pin is 'name@version', got {spec!r}")
        return cls(kind=kind, name=name, version=version, sha256=sha256)

    @classmethod
    def from_target_path(cls, target_path: str, *, sha256: str) -> ArtifactPin:
        """The pin for a target path of this layout (inverse of :attr:`target_path`)."""
        parts = target_path.split("/")
        kinds = {v: k for k, v in _PREFIX.items()}
        if len(parts) != 3 or parts[0] not in kinds:
            raise ValueError(f"not an artifact target path (modules/<name>/<version>): {target_path!r}")
        kind: ArtifactKind = kinds[parts[0]]  # type: ignore[assignment]
        return cls(kind=kind, name=parts[1], version=parts[2], sha256=sha256)
