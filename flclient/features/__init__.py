"""Run versioned, sandboxed WASM feature modules (feature ABI v1, see docs/feature-abi.md)."""

from .._errors import (
    FeatureAbiMismatch,
    FeatureError,
    FeatureExportError,
    FeatureImportError,
    FeatureInputError,
    FeatureIntegrityError,
    FeatureManifestError,
    FeatureMemoryExhausted,
    FeatureModuleInvalid,
    FeatureOutOfFuel,
    FeatureSandboxError,
    FeatureTimeout,
    FeatureTrap,
)
from ._abi import ABI_VERSION, Column, Manifest, RowStatus
from ._host import FeatureModule, SandboxLimits

__all__ = [
    "ABI_VERSION",
    "Column",
    "FeatureAbiMismatch",
    "FeatureError",
    "FeatureExportError",
    "FeatureImportError",
    "FeatureInputError",
    "FeatureIntegrityError",
    "FeatureManifestError",
    "FeatureMemoryExhausted",
    "FeatureModule",
    "FeatureModuleInvalid",
    "FeatureOutOfFuel",
    "FeatureSandboxError",
    "FeatureTimeout",
    "FeatureTrap",
    "Manifest",
    "RowStatus",
    "SandboxLimits",
]
