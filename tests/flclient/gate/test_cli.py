from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from flclient._cli import main

from .fakefs import healthy_laptop_like, healthy_pi


def test_check_eligible_pi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    healthy_pi(tmp_path)
    assert main(["check", "--root", str(tmp_path), "--profile", "rpi4b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eligible"] and out["policy"] == "default+rpi4b"
    assert {c["signal"] for c in out["checks"]} >= {"temperature", "throttle", "network", "metered"}


def test_check_not_eligible_exit_code_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    healthy_pi(tmp_path)
    (tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("50005\n")
    assert main(["check", "--root", str(tmp_path), "--profile", "rpi4b"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("NOT ELIGIBLE: under_voltage")
    # without a profile, nothing is absent: the Pi's missing power supply and battery fail closed
    assert main(["check", "--root", str(tmp_path), "--json"]) == 3
    reasons = json.loads(capsys.readouterr().out)["reasons"]
    assert "power" in reasons and "battery" in reasons


def test_check_policy_file_overlays_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    healthy_laptop_like(root)
    policy = tmp_path / "wifi-ok.toml"
    policy.write_text('name = "wifi-ok"\nabsent_signals = ["throttle"]\n[may_start]\nrequire_unmetered = false\n')
    assert main(["check", "--root", str(root), "--policy", str(policy), "--json"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[may_start]\nmax_temperature_c = 'x'\n")
    assert main(["check", "--root", str(root), "--policy", str(bad)]) == 1
    assert "max_temperature_c must be a number" in capsys.readouterr().err
    assert main(["check", "--profile", "no-such-device"]) == 1


def test_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plots = importlib.util.find_spec("matplotlib") is not None
    if not plots:
        print("matplotlib is not installed: simulating without PNG plots")
    args = ["simulate", "--virtual", "--devices", "50", "--rounds", "4", "--goal", "8", "--out", str(tmp_path)]
    assert main([*args, *([] if plots else ["--no-plots"])]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["rounds"] == 4 and "cohort_share" in summary and summary["mode"] == "virtual"
    assert captured.err.count("round ") == 4
    if plots:
        for p in summary["plots"]:
            assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["simulate", "--profiles", "toaster"]) == 1


def test_simulate_goal_defaults_to_the_fleet_size_and_an_impossible_goal_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--virtual", "--devices", "10", "--rounds", "3", "--no-plots", "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds_aggregated"] > 0, summary  # goal min(20, 10): a 10-device fleet can aggregate
    assert main([*args, "--goal", "20"]) == 1
    assert "no round could aggregate: 16 updates needed" in capsys.readouterr().err
