"""flclient.artifacts exposes exactly its __all__, and every runtime error is in the flclient family."""

from __future__ import annotations

import types

import flclient.artifacts as artifacts
from flclient import _errors


def test_all_is_the_public_surface() -> None:
    public = {n for n, v in vars(artifacts).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert sorted(artifacts.__all__) == artifacts.__all__
    assert set(artifacts.__all__) == public


def test_errors_are_one_family_and_drawn_in_the_tree() -> None:
    doc = _errors.__doc__ or ""
    for name in artifacts.__all__:
        obj = getattr(artifacts, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, _errors.FLClientError), name
            assert f"── {name} " in doc, name
            assert name in _errors.__all__, name
