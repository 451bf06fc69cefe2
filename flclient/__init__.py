"""flclient: the on-device federated-learning client SDK."""

from ._errors import FeatureError, FLClientError
from .features import FeatureModule, SandboxLimits

__all__ = ["FLClientError", "FeatureError", "FeatureModule", "SandboxLimits"]

__version__ = "0.1.0"
