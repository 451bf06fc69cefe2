"""The one exception family raised by :mod:`runtimes`.

Errors from the libraries underneath (onnxruntime, ai-edge-litert, onnx) are translated where they enter, so a
caller catches ``RuntimeBackendError`` and nothing else::

    RuntimeBackendError
    ├── BackendUnavailableError      an optional package is missing or broken (message has the install hint)
    ├── UnknownBackendError          a backend name that does not exist
    ├── UnsupportedFeatureError      the chosen backend lacks a capability the request needs
    ├── BackendClosedError           a backend used after close()
    ├── ModelLoadError               a model file that is not a model, or not one this backend can train
    │   └── SignatureError           a train-signature model lacks a signature or needs non-builtin ops
    ├── ParameterError               missing, unexpected, wrong-shaped or non-finite parameters
    ├── BudgetExceededError          the RAM estimate for a configuration is above the caller's budget
    ├── TrainingDivergedError        the loss became NaN or infinite
    └── ExportMismatchError          an exported model does not reproduce the numpy forward pass

``TypeError`` and ``ValueError`` stay for programmer misuse (a negative learning rate, a wrong argument type).
"""

from __future__ import annotations


class RuntimeBackendError(Exception):
    """Base class of every error raised by :mod:`runtimes`."""


class BackendUnavailableError(RuntimeBackendError):
    """An optional package a backend needs is missing or cannot be used; the message says what to install."""


class UnknownBackendError(RuntimeBackendError):
    """A backend was requested by a name that does not exist."""


class UnsupportedFeatureError(RuntimeBackendError):
    """The chosen backend does not declare a capability the request needs."""


class BackendClosedError(RuntimeBackendError):
    """A backend was used after ``close()``."""


class ModelLoadError(RuntimeBackendError):
    """A model file could not be loaded, or its graph does not have the expected shape."""


class SignatureError(ModelLoadError):
    """A train-signature model lacks a required signature or uses ops outside the builtin set."""


class ParameterError(RuntimeBackendError):
    """Parameters do not match the model: missing, unexpected, wrong shape or dtype, or not finite."""


class BudgetExceededError(RuntimeBackendError):
    """Training was refused before it started because its memory estimate exceeds the RAM budget."""

    def __init__(self, message: str, *, estimate_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.estimate_bytes = estimate_bytes
        self.budget_bytes = budget_bytes


class TrainingDivergedError(RuntimeBackendError):
    """The training loss became NaN or infinite."""


class ExportMismatchError(RuntimeBackendError):
    """An exported model's output differs from the numpy forward pass by more than the tolerance."""


__all__ = [
    "BackendClosedError",
    "BackendUnavailableError",
    "BudgetExceededError",
    "ExportMismatchError",
    "ModelLoadError",
    "ParameterError",
    "RuntimeBackendError",
    "SignatureError",
    "TrainingDivergedError",
    "UnknownBackendError",
    "UnsupportedFeatureError",
]
