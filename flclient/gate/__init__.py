"""The participation gate: whether this device may train now, whether it may go on, and device-class profiles.

Example::

    from flclient.gate import DeviceSignals, ParticipationGate, SystemClock, load_profile

    profile = load_profile("rpi4b")
    gate = ParticipationGate(policy=profile.policy(), signals=DeviceSignals(), clock=SystemClock())
    decision = gate.may_start()
    if decision.eligible:
        outcome = gate.run_round(train=lambda checkpoint: my_fit(on_step=checkpoint), upload=my_upload)
"""

from ._compat import DeviceCapabilities, FeaturePin, PrivacyBudget, TaskRequirements, check_compatibility
from ._gate import Clock, ManualClock, ParticipationGate, RoundMonitor, RoundOutcome, SystemClock
from ._metered import ChainedMetered, InterfaceKindMetered, NetworkManagerMetered
from ._policy import CheckStatus, Decision, EligibilityPolicy, GateRules, Reason, SignalCheck
from ._profiles import DeviceProfile, ProfileMatch, default_profiles_dir, list_profiles, load_profile, match_profiles
from ._signals import (
    Board,
    DeviceSignals,
    Metered,
    MeteredSource,
    NetworkKind,
    PowerState,
    SignalSnapshot,
    SignalSource,
    StaticSignals,
    ThrottleState,
)

__all__ = [
    "Board",
    "ChainedMetered",
    "CheckStatus",
    "Clock",
    "Decision",
    "DeviceCapabilities",
    "DeviceProfile",
    "DeviceSignals",
    "EligibilityPolicy",
    "FeaturePin",
    "GateRules",
    "InterfaceKindMetered",
    "ManualClock",
    "Metered",
    "MeteredSource",
    "NetworkKind",
    "NetworkManagerMetered",
    "ParticipationGate",
    "PowerState",
    "PrivacyBudget",
    "ProfileMatch",
    "Reason",
    "RoundMonitor",
    "RoundOutcome",
    "SignalCheck",
    "SignalSnapshot",
    "SignalSource",
    "StaticSignals",
    "SystemClock",
    "TaskRequirements",
    "ThrottleState",
    "check_compatibility",
    "default_profiles_dir",
    "list_profiles",
    "load_profile",
    "match_profiles",
]
