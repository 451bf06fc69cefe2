"""flclient: the on-device federated-learning client SDK."""

from ._errors import FeatureError, FLClientError, GateError, PolicyError, RoundAbandoned
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
    "RoundAbandoned",
    "SandboxLimits",
]

__version__ = "0.1.0"
