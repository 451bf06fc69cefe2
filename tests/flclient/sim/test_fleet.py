from __future__ import annotations

import pytest

from flclient import GateError
from flclient.gate import list_profiles, load_profile
from flclient.sim import FleetConfig, RoundPlanner, parse_mix, simulate_fleet

PROFILES = {k: load_profile(k) for k in list_profiles()}


def test_fifty_devices_complete_rounds_with_dropouts() -> None:
    config = FleetConfig(devices=50, rounds=12, mix=parse_mix("all", list(PROFILES)), seed=3, goal=10)
    report = simulate_fleet(config, PROFILES)
    assert len(report.rounds) == 12 and sum(report.fleet_by_class.values()) == 50
    s = report.summary()
    assert s["rounds_aggregated"] >= 10
    assert sum(r.dropped for r in report.rounds) > 0 and 0 < s["drop_rate"] < 0.5
    assert set(s["abandon_reasons"]) <= {"power", "thermal"}
    assert sum(s["cohort_share"].values()) == pytest.approx(1.0)
    for r in report.rounds:
        assert r.accepted <= config.goal and r.selected <= 13
        assert r.dropped + r.reported == r.selected
        assert r.device_time_p50_s <= r.device_time_p99_s
        if config.deadline_s is not None:
            assert r.duration_s <= config.deadline_s
    assert report.rounds[-1].loss < report.rounds[0].loss  # FedAvg of real local steps learns


def test_same_seed_same_run() -> None:
    config = FleetConfig(devices=30, rounds=3, mix=parse_mix("rpi4b:2,android-phone", list(PROFILES)), seed=7, goal=5)
    assert simulate_fleet(config, PROFILES).summary() == simulate_fleet(config, PROFILES).summary()


def test_phones_mostly_train_at_night() -> None:
    config = FleetConfig(
        devices=40, rounds=24, mix=parse_mix("android-phone", list(PROFILES)), seed=1, goal=5, round_interval_s=3600
    )
    rounds = simulate_fleet(config, PROFILES).rounds
    night = sum(r.eligible for r in rounds if r.hour < 6)
    day = sum(r.eligible for r in rounds if 8 <= r.hour < 14)
    assert night > 3 * day


def test_planner_deadline_and_partial_aggregation() -> None:
    p = RoundPlanner(goal=4, over_selection=0.5, deadline_s=100.0, min_fraction=0.5)
    assert p.selection_size(100) == 6 and p.selection_size(3) == 3
    accepted, duration, ok = p.close({1: 10.0, 2: 50.0, 3: 20.0, 4: 30.0, 5: 40.0})
    assert accepted == [1, 3, 4, 5] and duration == 40.0 and ok
    accepted, duration, ok = p.close({1: 10.0, 2: 150.0, 3: 90.0})
    assert accepted == [1, 3] and duration == 100.0 and ok  # partial: 2 of 4 reached min_fraction
    accepted, duration, ok = p.close({1: 10.0, 2: 150.0})
    assert accepted == [1] and not ok
    no_deadline = RoundPlanner(goal=4)
    assert no_deadline.close({1: 10.0, 2: 150.0}) == ([1, 2], 150.0, False)


def test_mix_parsing() -> None:
    mix = parse_mix("rpi4b:3,rpi5", list(PROFILES))
    assert mix == (("rpi4b", 0.75), ("rpi5", 0.25))
    for bad in ("nope", "rpi4b:-1", "rpi4b:x", "rpi4b,rpi4b"):
        with pytest.raises(GateError):
            parse_mix(bad, list(PROFILES))
    with pytest.raises(ValueError, match="over_selection"):
        FleetConfig(devices=1, rounds=1, mix=mix, over_selection=-0.5)
