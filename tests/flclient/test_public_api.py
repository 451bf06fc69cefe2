"""``flclient`` exposes exactly its ``__all__``, cheaply, and its exception family is whole, public and drawn."""

from __future__ import annotations

import re
import subprocess
import sys
import types

import pytest

import flclient
import flclient.artifacts
import flclient.features
import flclient.secagg
from flclient import _errors

FLCLIENT_PUBLIC = [
    "ArtifactError",
    "AsyncClient",
    "Client",
    "DataSource",
    "DeviceConfig",
    "DeviceConfigError",
    "EligibilityPolicy",
    "ExampleSelection",
    "ExampleSnapshot",
    "ExampleStore",
    "ExampleStoreError",
    "FLClientError",
    "FeatureError",
    "FeatureModule",
    "FleetAuthError",
    "FleetError",
    "FleetNodeNotRegistered",
    "FleetProtocolError",
    "FleetRunNotRunning",
    "FleetUnavailable",
    "GateError",
    "LocalData",
    "ObjectIntegrityError",
    "ParticipationGate",
    "PolicyError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "PrivacyLedgerClosed",
    "PrivacyLedgerError",
    "ProtocolError",
    "ResourceClosedError",
    "RetentionPolicy",
    "RoundAbandoned",
    "RunConfigError",
    "SandboxLimits",
    "SecAggError",
    "SignedArtifactError",
    "StateStoreError",
    "TaskDeclined",
    "TlsError",
    "UpdateCodecError",
    "UpdateError",
    "UpdateInputError",
]

# Where the errors that flclient itself does not export are public: their subpackages.
SUBPACKAGES: tuple[types.ModuleType, ...] = (flclient.artifacts, flclient.features, flclient.secagg)

HEAVY = ("flwr", "tuf", "onnxruntime", "matplotlib", "wasmtime", "numpy", "google.protobuf", "httpx")


def test_all_is_exactly_the_public_set_and_sorted() -> None:
    assert sorted(FLCLIENT_PUBLIC) == FLCLIENT_PUBLIC
    assert flclient.__all__ == FLCLIENT_PUBLIC
    assert set(flclient.__all__) <= set(dir(flclient))


def test_every_name_resolves_and_has_a_docstring() -> None:
    for name in flclient.__all__:
        obj = getattr(flclient, name)  # the front doors are loaded here, on first use (PEP 562)
        assert obj.__doc__, name
    assert flclient.ParticipationGate is flclient.gate.ParticipationGate
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = flclient.NoSuchThing


def test_import_flclient_stays_cheap() -> None:
    code = f"import sys, flclient; print([m for m in sys.modules if m.startswith({HEAVY!r})])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_family_root_is_exported_from_flclient() -> None:
    roots = {c.__name__ for c in _errors.FLClientError.__subclasses__()}
    assert roots >= {"FeatureError", "FleetError", "GateError", "SecAggError", "ArtifactError", "TlsError"}
    assert roots <= set(flclient.__all__)
    for name in roots:
        assert getattr(flclient, name) is getattr(_errors, name)


def test_every_error_is_public() -> None:
    for name in _errors.__all__:
        homes = [m for m in (flclient, *SUBPACKAGES) if name in m.__all__]
        assert homes, f"{name} is exported neither from flclient nor from its subpackage"
        assert all(getattr(m, name) is getattr(_errors, name) for m in homes), name


def _tree() -> list[tuple[int, str]]:
    """(depth, name) of every class drawn in the _errors docstring, in drawing order."""
    drawn: list[tuple[int, str]] = [(0, "FLClientError")]
    for line in (_errors.__doc__ or "").splitlines():
        m = re.match(r"^ {4}((?:[│ ] {3})*)[├└]── (\w+) ", line)  # the docstring indents the tree by 4
        if m:
            drawn.append((len(m.group(1)) // 4 + 1, m.group(2)))
    return drawn


def test_the_docstring_tree_is_the_class_tree() -> None:
    drawn = _tree()
    names = [n for _, n in drawn]
    assert sorted(names) == sorted(_errors.__all__), "draw every error once, and only errors that exist"
    parents: dict[int, str] = {}
    for depth, name in drawn:
        parents[depth] = name
        if depth:
            cls, parent = getattr(_errors, name), getattr(_errors, parents[depth - 1])
            assert cls.__bases__[0] is parent, f"{name} is drawn under {parent.__name__}"
