from __future__ import annotations

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
