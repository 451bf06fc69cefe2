"""flclient: the on-device federated-learning client SDK."""

from ._client import AsyncClient, Client
from ._config import DeviceConfig
from ._errors import (
    DeviceConfigError,
    FeatureError,
    FLClientError,
    FleetAuthError,
    FleetError,
    FleetProtocolError,
    FleetRunNotRunning,
    FleetUnavailable,
    GateError,
    ObjectIntegrityError,
    PolicyError,
    PrivacyBudgetExhausted,
    PrivacyError,
    PrivacyLedgerError,
    RoundAbandoned,
    StateStoreError,
    TaskDeclined,
    UpdateCodecError,
    UpdateError,
    UpdateInputError,
)
from .features import FeatureModule, SandboxLimits
from .gate import EligibilityPolicy, ParticipationGate

__all__ = [
    "AsyncClient",
    "Client",
    "DeviceConfig",
    "DeviceConfigError",
    "EligibilityPolicy",
    "FLClientError",
    "FeatureError",
    "FeatureModule",
    "FleetAuthError",
    "FleetError",
    "FleetProtocolError",
    "FleetRunNotRunning",
    "FleetUnavailable",
    "GateError",
    "ObjectIntegrityError",
    "ParticipationGate",
    "PolicyError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "PrivacyLedgerError",
    "RoundAbandoned",
    "SandboxLimits",
    "StateStoreError",
    "TaskDeclined",
    "UpdateCodecError",
    "UpdateError",
    "UpdateInputError",
]

__version__ = "0.1.0"
