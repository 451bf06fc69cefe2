"""The public surfaces are small and deliberate: __all__ is exactly the set of public names."""

from __future__ import annotations

import types

import featurec
import flclient.features


def _public(module: types.ModuleType) -> set[str]:
    return {n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}


def test_featurec_all_is_the_public_surface() -> None:
    assert sorted(featurec.__all__) == featurec.__all__
    assert set(featurec.__all__) - {"__version__"} == _public(featurec)


def test_feature_host_all_is_the_public_surface() -> None:
    assert sorted(flclient.features.__all__) == flclient.features.__all__
    assert set(flclient.features.__all__) == _public(flclient.features)


def test_every_runtime_error_is_in_one_family() -> None:
    for name in flclient.features.__all__:
        obj = getattr(flclient.features, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, flclient.FLClientError), name
    for name in featurec.__all__:
        obj = getattr(featurec, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, featurec.FeaturecError), name


FEATUREC_PUBLIC = [
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


def test_featurec_all_is_exactly_the_listed_set_and_every_name_resolves() -> None:
    assert sorted(FEATUREC_PUBLIC) == FEATUREC_PUBLIC
    assert featurec.__all__ == FEATUREC_PUBLIC
    for name in featurec.__all__:
        assert getattr(featurec, name) is not None, name
