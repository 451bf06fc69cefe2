"""The exception family of :mod:`featurec`::

    FeaturecError
    ├── ToolchainError      no Rust toolchain that can target wasm32 (message says what to install)
    ├── BuildError          cargo failed, or the built module is not a valid ABI v1 module
    ├── CrateError          the directory is not a feature crate, or its golden vectors are malformed
    ├── GoldenMismatch      outputs differ from the golden vectors or from the native build
    ├── KeyFileError        a key or signature file is missing or malformed
    └── PublishError        a TUF repository cannot be created or updated (missing key, threshold, reuse)

Errors from flclient's feature host (``flclient.FeatureError``) pass through unchanged: they already
name the module and the reason.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "CrateError",
    "FeaturecError",
    "GoldenMismatch",
    "KeyFileError",
    "PublishError",
    "ToolchainError",
]


class FeaturecError(Exception):
    """Root of every runtime error raised by featurec."""


class ToolchainError(FeaturecError):
    """No usable Rust toolchain for wasm32-unknown-unknown."""


class BuildError(FeaturecError):
    """cargo failed, or the artifact is not a valid feature module."""


class CrateError(FeaturecError):
    """The directory is not a feature crate, or its golden vectors are malformed."""


class GoldenMismatch(FeaturecError):
    """A module's outputs differ from the expected ones."""


class KeyFileError(FeaturecError):
    """A key or signature file is missing or malformed."""


class PublishError(FeaturecError):
    """A TUF repository cannot be created or updated: a key is missing, a threshold is not met, a version reused."""
