from __future__ import annotations

import flclient
import flclient.gate
from flclient import _errors

GATE_PUBLIC = {
    "Board",
    "ProfileMatch",
    "match_profiles",
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
}


def test_gate_all_is_the_public_set_and_sorted() -> None:
    assert set(flclient.gate.__all__) == GATE_PUBLIC
    assert flclient.gate.__all__ == sorted(flclient.gate.__all__)
    for name in GATE_PUBLIC:
        assert getattr(flclient.gate, name).__doc__, name


def test_gate_errors_are_one_family() -> None:
    for name in ("GateError", "PolicyError", "RoundAbandoned"):
        assert name in flclient.__all__
        assert issubclass(getattr(_errors, name), _errors.FLClientError)
        assert name in (_errors.__doc__ or "")
    assert issubclass(_errors.PolicyError, _errors.GateError)
    assert issubclass(_errors.RoundAbandoned, _errors.GateError)
    assert flclient.__all__ == sorted(flclient.__all__)
