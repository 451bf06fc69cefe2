"""flclient: the on-device federated-learning client SDK."""

from ._errors import (
    FeatureError,
    FLClientError,
    GateError,
    PolicyError,
    PrivacyBudgetExhausted,
    PrivacyError,
    PrivacyLedgerError,
    RoundAbandoned,
    UpdateCodecError,
    UpdateError,
    UpdateInputError,
)
from .features import FeatureModule, SandboxLimits
from .gate import EligibilityPolicy, ParticipationGate

__all__ = [
    "EligibilityPolicy",
    "FLClientError",
    "FeatureError",
    "FeatureModule",
    "GateError",
    "ParticipationGate",
    "PolicyError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "PrivacyLedgerError",
    "RoundAbandoned",
    "SandboxLimits",
    "UpdateCodecError",
    "UpdateError",
    "UpdateInputError",
]

__version__ = "0.1.0"
