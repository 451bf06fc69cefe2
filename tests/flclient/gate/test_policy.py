from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from flclient import PolicyError
from flclient.gate import (
    CheckStatus,
    DeviceProfile,
    EligibilityPolicy,
    GateRules,
    Metered,
    NetworkKind,
    PowerState,
    Reason,
    SignalSnapshot,
    ThrottleState,
    default_profiles_dir,
    list_profiles,
    load_profile,
)

MIB = 1024 * 1024


def good(profile: DeviceProfile) -> SignalSnapshot:
    """Signals under which ``profile``'s device should be allowed to start."""
    absent = set(profile.gate.absent_signals)
    nets = profile.gate.allowed_networks or ("ethernet",)
    return SignalSnapshot(
        power=PowerState(
            external_online=None if "external_power" in absent else True,
            has_battery="battery" not in absent,
            battery_percent=None if "battery" in absent else 90.0,
            battery_status=None if "battery" in absent else "charging",
        ),
        throttle=None if "throttle" in absent else ThrottleState(raw=0),
        temperature_c=profile.training.thermal_resume_c - 5,
        network_interface="if0",
        network_kind=NetworkKind(nets[0]),
        metered=Metered.NO,
        mem_available_bytes=(profile.training.ram_budget_mib + 64) * MIB,
        load_per_core=0.1,
        disk_free_bytes=10_000 * MIB,
    )


PROFILES = sorted(list_profiles())


def _power(s: SignalSnapshot, **kw: object) -> SignalSnapshot:
    return replace(s, power=replace(s.power, **kw))  # type: ignore[arg-type]


# (case, how to change the good snapshot, which profiles it applies to, expected start reasons)
CASES = [
    ("good", lambda p, s: s, lambda p: True, ()),
    ("hot", lambda p, s: replace(s, temperature_c=p.training.thermal_ceiling_c + 1), lambda p: True, (Reason.THERMAL,)),
    ("no_thermal", lambda p, s: replace(s, temperature_c=None), lambda p: True, (Reason.THERMAL,)),
    ("metered", lambda p, s: replace(s, metered=Metered.GUESS_YES), lambda p: True, (Reason.METERED,)),
    ("metered_unknown", lambda p, s: replace(s, metered=None), lambda p: True, (Reason.METERED,)),
    ("cellular", lambda p, s: replace(s, network_kind=NetworkKind.CELLULAR), lambda p: True, (Reason.NETWORK,)),
    ("offline", lambda p, s: replace(s, network_kind=NetworkKind.NONE), lambda p: True, (Reason.NETWORK,)),
    ("busy", lambda p, s: replace(s, load_per_core=0.9), lambda p: True, (Reason.LOAD,)),
    (
        "low_mem",
        lambda p, s: replace(s, mem_available_bytes=p.training.ram_budget_mib * MIB // 2),
        lambda p: True,
        (Reason.MEMORY,),
    ),
    ("low_disk", lambda p, s: replace(s, disk_free_bytes=MIB), lambda p: True, (Reason.DISK,)),
    ("unplugged", lambda p, s: _power(s, external_online=False), lambda p: True, (Reason.POWER,)),
    (
        "low_battery",
        lambda p, s: _power(s, battery_percent=10.0),
        lambda p: "battery" not in p.gate.absent_signals,
        (Reason.BATTERY,),
    ),
    (
        "under_voltage",
        lambda p, s: replace(s, throttle=ThrottleState(raw=0x1)),
        lambda p: "throttle" not in p.gate.absent_signals,
        (Reason.UNDER_VOLTAGE,),
    ),
    (
        "throttled",
        lambda p, s: replace(s, throttle=ThrottleState(raw=0x4)),
        lambda p: "throttle" not in p.gate.absent_signals,
        (Reason.THROTTLED,),
    ),
    (
        "throttle_unknown",
        lambda p, s: replace(s, throttle=None),
        lambda p: "throttle" not in p.gate.absent_signals,
        (Reason.THROTTLED,),
    ),
    (
        "power_unknown",
        lambda p, s: _power(s, external_online=None),
        lambda p: "external_power" not in p.gate.absent_signals,
        (Reason.POWER,),
    ),
]


@pytest.mark.parametrize("profile_id", PROFILES)
@pytest.mark.parametrize(("case", "change", "applies", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decisions_from_profiles(profile_id: str, case: str, change, applies, expected) -> None:  # type: ignore[no-untyped-def]
    profile = load_profile(profile_id)
    if not applies(profile):
        return  # the profile says this signal does not exist on the device: covered by test_absent_signal_passes
    decision = profile.policy().evaluate(change(profile, good(profile)), phase="start")
    assert decision.reasons == expected, decision.to_json()
    assert decision.eligible is (expected == ())


def test_absent_signal_passes_only_when_unknown() -> None:
    pi = load_profile("rpi4b")
    snap = good(pi)
    d = pi.policy().evaluate(snap)
    assert {c.signal: c.status for c in d.checks}["external_power"] is CheckStatus.ABSENT
    # a Pi that does report a mains supply offline is still refused
    assert pi.policy().evaluate(_power(snap, external_online=False)).reasons == (Reason.POWER,)


def test_hysteresis_thermal_band() -> None:
    pi = load_profile("rpi4b")
    policy = pi.policy()
    warm = replace(good(pi), temperature_c=(pi.training.thermal_resume_c + pi.training.thermal_ceiling_c) / 2)
    assert not policy.evaluate(warm, phase="start").eligible  # too warm to start ...
    assert policy.evaluate(warm, phase="continue").eligible  # ... but a running round goes on
    hot = replace(warm, temperature_c=pi.training.thermal_ceiling_c + 0.5)
    assert policy.evaluate(hot, phase="continue").reasons == (Reason.THERMAL,)


def test_continue_ignores_load_by_default() -> None:
    pi = load_profile("rpi4b")
    busy = replace(good(pi), load_per_core=3.0)
    assert pi.policy().evaluate(busy, phase="continue").eligible


def test_default_toml_equals_defaults() -> None:
    path = default_profiles_dir() / "policies" / "default.toml"
    assert EligibilityPolicy.from_toml(path) == EligibilityPolicy()


def test_partial_toml_overlays_defaults(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('name = "cool"\n[may_start]\nmax_temperature_c = 50\n[may_continue]\nmax_load_per_core = 2.5\n')
    p = EligibilityPolicy.from_toml(f)
    assert p.name == "cool" and p.may_start.max_temperature_c == 50.0
    assert p.may_start.min_battery_percent == EligibilityPolicy().may_start.min_battery_percent
    assert p.may_continue.max_load_per_core == 2.5
    assert p.may_continue.max_temperature_c == 75.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nme = 'x'\n", "unknown key nme"),
        ("[may_start]\nmax_temperature_c = 'hot'\n", "may_start.max_temperature_c must be a number"),
        ("[may_start]\nmax_temperature_c = 90\n", "must not exceed may_continue"),
        ("[may_start]\nallowed_networks = ['carrier-pigeon']\n", "unknown kinds"),
        ("[may_start]\nrequire_unmetered = 1\n", "must be true or false"),
        ("[may_continue]\nmin_battery_percent = 50\n", "at least may_continue"),
        ("absent_signals = ['gps']\n", "unknown signals"),
        ("backoff_initial_s = 0\n", "backoff_initial_s"),
        ("[may_start]\nmax_load_per_core = nan\n", "NaN"),
        ("this is = not toml", "not valid TOML"),
    ],
)
def test_bad_policy_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        EligibilityPolicy.from_toml(f)
    assert info.value.source == str(f)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        EligibilityPolicy.from_toml(tmp_path / "none.toml")


def test_rules_validation_in_code() -> None:
    with pytest.raises(ValueError, match="min_battery_percent"):
        GateRules(min_battery_percent=101)
    with pytest.raises(ValueError, match="max_load_per_core"):
        GateRules(max_load_per_core=0)
    assert GateRules(max_load_per_core=math.inf).max_load_per_core == math.inf
    with pytest.raises(ValueError, match="phase"):
        EligibilityPolicy().evaluate(SignalSnapshot(), phase="later")


def test_decision_reply_is_coarse() -> None:
    d = EligibilityPolicy().evaluate(SignalSnapshot())
    reply = d.to_reply()
    assert reply["status"] == "not_eligible"
    assert set(reply) == {"status", "reasons"}
    assert all(isinstance(r, str) for r in reply["reasons"])
