"""Builds the reference feature crates once per test session (real cargo, real wasm32 target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurec import NativeFeatureLibrary, build_module, build_native
from featurec._build import BuiltModule

CRATES = Path(__file__).resolve().parents[2] / "wasm" / "rust-features"


@pytest.fixture(scope="session")
def device_context_module(tmp_path_factory: pytest.TempPathFactory) -> BuiltModule:
    return build_module(CRATES / "device_context", tmp_path_factory.mktemp("modules"))


@pytest.fixture(scope="session")
def device_context_native() -> NativeFeatureLibrary:
    return NativeFeatureLibrary(build_native(CRATES / "device_context"))


@pytest.fixture(scope="session")
def vibration_module(tmp_path_factory: pytest.TempPathFactory) -> BuiltModule:
    return build_module(CRATES / "vibration", tmp_path_factory.mktemp("modules"))


@pytest.fixture(scope="session")
def vibration_native() -> NativeFeatureLibrary:
    return NativeFeatureLibrary(build_native(CRATES / "vibration"))
