"""``flclient simulate`` in virtual time: the command line over :func:`flclient.sim.simulate_fleet`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from flclient._cli import main


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
