"""The live fleet simulator against a real flower-superlink on loopback (needs the [server] extra: flwr)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from flclient._cli import main
from flclient.gate import DeviceProfile, default_profiles_dir, load_profile
from flclient.sim import FleetConfig, LiveFleetConfig, SimClock, parse_mix, run_live_fleet

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_flwr() -> None:
    if importlib.util.find_spec("flwr") is None:
        pytest.fail("flwr is not installed: these tests need the [server] extra (pip install 'flclient[server]')")


def _dropout_profiles(tmp_path: Path, probability: float) -> Path:
    """The bundled profiles with every device's dropout probability raised (so a short run surely has some)."""
    out = tmp_path / "profiles_dir"
    shutil.copytree(default_profiles_dir(), out)
    for p in (out / "profiles").glob("*.toml"):
        text = re.sub(r"dropout_probability = [0-9.]+", f"dropout_probability = {probability}", p.read_text())
        p.write_text(text)
    return out


def test_fifty_devices_complete_rounds_with_dropouts_against_superlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plots = importlib.util.find_spec("matplotlib") is not None
    profiles_dir = _dropout_profiles(tmp_path, 0.3)
    args = ["simulate", "--devices", "50", "--rounds", "3", "--goal", "8", "--over-selection", "0.3"]
    # a generous deadline (12 s wall) so that a loaded CI machine still aggregates; dropouts answer at once
    # (SuperLink reports the vanished node), so rounds close when the survivors are done
    args += ["--deadline-s", "3600", "--min-fraction", "0.5"]
    args += ["--time-scale", "300", "--poll-s", "1.0", "--timeout-s", "240", "--seed", "5"]
    args += ["--profiles-dir", str(profiles_dir), "--out", str(tmp_path / "out"), *([] if plots else ["--no-plots"])]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["mode"] == "superlink" and summary["devices"] == 50 and summary["rounds"] == 3
    assert summary["rounds_aggregated"] >= 1 and summary["errors"] == 0
    assert 0 < summary["drop_rate"] < 1 and set(summary["abandon_reasons"]) <= {"power", "thermal"}
    assert summary["rounds_per_min"] > 0 and summary["wall_s"] > 0
    assert math.isclose(sum(summary["cohort_share"].values()), 1.0)
    assert set(summary["cohort_share"]) == set(summary["fleet_share"]) and len(summary["fleet_share"]) == 10
    assert summary["device_time_p50_s"] <= summary["device_time_p99_s"]
    assert summary["p50_round_time_s"] <= summary["p99_round_time_s"]
    assert captured.err.count("server round ") == 3 and captured.err.count("server evaluate ") == 1
    metrics = sorted((tmp_path / "out").glob("run-*/metrics.jsonl"))
    records = [json.loads(line) for line in metrics[-1].read_text().splitlines()]
    rounds = [r for r in records if r["event"] == "round"]
    assert len(rounds) == 3
    for r in rounds:
        assert r["selected"] == min(r["nodes"], math.ceil(8 * 1.3))  # over-selection
        assert r["closed"] in ("target", "deadline", "all-replied")
        assert r["aggregated"] == (r["replies"] - sum(r["failures"].values()) >= 4)
    if plots:
        for p in summary["plots"]:
            assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _profile(base: DeviceProfile, name: str, speed: float) -> DeviceProfile:
    a = replace(
        base.availability,
        on_power_by_hour=(1.0,) * 24,
        dropout_probability=0.0,
        compute_speed_median=speed,
        compute_speed_sigma=0.0,
    )
    return replace(base, id=name, availability=a)


def test_deadline_closes_rounds_and_partial_aggregation_uses_what_arrived(tmp_path: Path) -> None:
    base = load_profile("rpi5")
    # "stuck" devices would need ~11 virtual days per round: they never answer before the deadline
    profiles = {"fast": _profile(base, "fast", 5.0), "stuck": _profile(base, "stuck", 1e-4)}
    mix = parse_mix("fast,stuck", list(profiles))
    fleet = FleetConfig(devices=8, rounds=1, mix=mix, goal=6, over_selection=0.5, min_fraction=0.5, deadline_s=1500.0)
    live = LiveFleetConfig(fleet=fleet, time_scale=300.0, poll_s=0.3, min_nodes=8, timeout_s=120)
    result = run_live_fleet(live, profiles, tmp_path)
    rounds = [r for r in result.records if r["event"] == "round"]
    assert len(rounds) == 1
    for r in rounds:  # 8 asked (ceil(6 * 1.5) = 9, but only 8 exist); the 4 fast ones answer; the deadline closes
        assert r["selected"] == 8 and r["closed"] == "deadline" and r["replies"] == 4
        assert r["aggregated"] and r["new_version"] == r["version"] + 1  # 4 >= min-replies 3: partial aggregation
        assert set(r["by_class"]) == {"fast"}
    assert not [e for e in result.events if e.device_class == "stuck" and e.outcome == "replied"]
    assert result.report.summary()["cohort_share"] == {"fast": 1.0, "stuck": 0.0}
    # (a round below min-replies is skipped and keeps the model: tests/flclient/server/test_rounds_app.py)


def test_sim_clock_maps_wall_to_virtual_time() -> None:
    t = [100.0]
    clock = SimClock(60.0, start_hour=23.5, monotonic=lambda: t[0])
    assert clock.hour() == pytest.approx(23.5)
    t[0] += 60.0  # one wall minute = one virtual hour
    assert clock.hour() == pytest.approx(0.5) and clock.now() == pytest.approx(24.5 * 3600)
    assert clock.wall(900.0) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="time_scale"):
        SimClock(0.0)
