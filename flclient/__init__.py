"""flclient: the on-device federated-learning client SDK.

The front doors (``Client``, ``FeatureModule``, ...) are imported on first use, so that ``import flclient``
in a daemon costs milliseconds, not the hundreds that wasmtime, numpy and protobuf take to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ArtifactError,
    DeviceConfigError,
    ExampleStoreError,
    FeatureError,
    FLClientError,
    FleetAuthError,
    FleetError,
    FleetNodeNotRegistered,
    FleetProtocolError,
    FleetRunNotRunning,
    FleetUnavailable,
    GateError,
    ObjectIntegrityError,
    PolicyError,
    PrivacyBudgetExhausted,
    PrivacyError,
    PrivacyLedgerClosed,
    PrivacyLedgerError,
    ProtocolError,
    ResourceClosedError,
    RoundAbandoned,
    RunConfigError,
    SecAggError,
    SignedArtifactError,
    StateStoreError,
    TaskDeclined,
    TlsError,
    UpdateCodecError,
    UpdateError,
    UpdateInputError,
)

if TYPE_CHECKING:
    from ._client import AsyncClient, Client
    from ._config import DeviceConfig
    from ._data import DataSource, LocalData
    from ._examples import ExampleSelection, ExampleSnapshot, ExampleStore, RetentionPolicy
    from .features import FeatureModule, SandboxLimits
    from .gate import EligibilityPolicy, ParticipationGate

_LAZY = {
    "AsyncClient": "._client",
    "Client": "._client",
    "DataSource": "._data",
    "DeviceConfig": "._config",
    "EligibilityPolicy": ".gate",
    "ExampleSelection": "._examples",
    "ExampleSnapshot": "._examples",
    "ExampleStore": "._examples",
    "FeatureModule": ".features",
    "LocalData": "._data",
    "ParticipationGate": ".gate",
    "RetentionPolicy": "._examples",
    "SandboxLimits": ".features",
}

__all__ = [
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

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flclient' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
