"""The exception family of :mod:`flclient`.

Every error the SDK raises for a runtime condition (bad module, sandbox violation, bad input data)
is a subclass of :class:`FLClientError`; programmer misuse still raises ``TypeError``/``ValueError``.
Errors from libraries below (wasmtime, cryptography, numpy) are translated where they enter::

    FLClientError
    └── FeatureError                      a feature module could not be used (has .module)
        ├── FeatureModuleInvalid          not a valid ABI v1 module
        │   ├── FeatureManifestError      manifest missing, malformed, or disagreeing with the code
        │   ├── FeatureAbiMismatch        the module speaks another ABI version
        │   ├── FeatureExportError        an export is missing or has the wrong type
        │   └── FeatureImportError        the module imports something outside the allow-list
        ├── FeatureIntegrityError         sha256 or signature does not match
        ├── FeatureInputError             input columns missing, of the wrong shape, or not convertible
        └── FeatureSandboxError           the module misbehaved while running (instance is rebuilt)
            ├── FeatureTrap               it trapped (unreachable, out-of-bounds access, ...)
            ├── FeatureOutOfFuel          it used more than its instruction budget
            ├── FeatureTimeout            it ran past its wall-clock deadline
            └── FeatureMemoryExhausted    it needed more memory than its limit
"""

from __future__ import annotations

__all__ = [
    "FLClientError",
    "FeatureAbiMismatch",
    "FeatureError",
    "FeatureExportError",
    "FeatureImportError",
    "FeatureInputError",
    "FeatureIntegrityError",
    "FeatureManifestError",
    "FeatureMemoryExhausted",
    "FeatureModuleInvalid",
    "FeatureOutOfFuel",
    "FeatureSandboxError",
    "FeatureTimeout",
    "FeatureTrap",
]


class FLClientError(Exception):
    """Root of every runtime error raised by flclient."""


class FeatureError(FLClientError):
    """A feature module could not be loaded or run.

    ``module`` names the module (its manifest name, or the file when the name is not known yet) and
    ``reason`` says what went wrong; ``str(err)`` combines both.
    """

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"feature module {module!r}: {reason}")
        self.module = module
        self.reason = reason


class FeatureModuleInvalid(FeatureError):
    """The bytes are not a valid feature module of a supported ABI."""


class FeatureManifestError(FeatureModuleInvalid):
    """The manifest is missing, malformed, or disagrees with what the module's code declares."""


class FeatureAbiMismatch(FeatureModuleInvalid):
    """The module speaks an ABI version this host does not."""


class FeatureExportError(FeatureModuleInvalid):
    """A required export is missing or has the wrong type."""


class FeatureImportError(FeatureModuleInvalid):
    """The module imports something outside the allow-list (ABI v1 allows no imports)."""


class FeatureIntegrityError(FeatureError):
    """The module's sha256 or signature does not match what was expected."""


class FeatureInputError(FeatureError):
    """Input columns are missing, mis-shaped, or cannot be converted to the manifest's dtypes."""


class FeatureSandboxError(FeatureError):
    """The module misbehaved while running; its instance is discarded and rebuilt before the next call."""


class FeatureTrap(FeatureSandboxError):
    """The module trapped (unreachable, out-of-bounds memory access, stack overflow, ...)."""


class FeatureOutOfFuel(FeatureSandboxError):
    """The module used more than its instruction (fuel) budget."""


class FeatureTimeout(FeatureSandboxError):
    """The module ran past its wall-clock (epoch) deadline."""


class FeatureMemoryExhausted(FeatureSandboxError):
    """The module needed more linear memory than its limit allows."""
