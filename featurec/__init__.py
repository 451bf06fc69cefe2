"""featurec: build, test, inspect and sign WASM feature modules (feature ABI v1)."""

__version__ = "0.1.0"

from ._build import BuiltModule, build_module, build_native
from ._crates import copy_reference_crates
from ._errors import (
    BuildError,
    CrateError,
    FeaturecError,
    GoldenMismatch,
    KeyFileError,
    ToolchainError,
)
from ._native import NativeFeatureLibrary

__all__ = [
    "BuildError",
    "BuiltModule",
    "CrateError",
    "FeaturecError",
    "GoldenMismatch",
    "KeyFileError",
    "NativeFeatureLibrary",
    "ToolchainError",
    "__version__",
    "build_module",
    "build_native",
    "copy_reference_crates",
]
