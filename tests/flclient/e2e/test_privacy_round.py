"""The device's privacy ledger in the real round path: charged per DP round, marked uploaded once the reply is
pushed, and a round that would exceed the ``[privacy]`` budget declined as "not eligible" before any work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flclient.server import LocalSuperLink
from flclient.update._accounting import gaussian_rdp_rho, rdp_epsilon

from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e

NOISE = 1.0
DELTA = 1e-5


def _ledger(devices: Devices, i: int) -> list[tuple[str, float, float | None]]:
    path = devices.configs[i].parent / "state" / "privacy.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT round_id, noise_multiplier, uploaded_at FROM privacy_participations ORDER BY id")
        return [(str(r[0]), float(r[1]), r[2]) for r in rows]


def test_dp_rounds_are_charged_uploaded_and_refused_past_the_budget(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    one_round = rdp_epsilon(gaussian_rdp_rho([NOISE]), DELTA)
    two_rounds = rdp_epsilon(gaussian_rdp_rho([NOISE, NOISE]), DELTA)
    devices.configure(2, superlink.url)
    budgets = {0: two_rounds * 1.01, 1: (one_round + two_rounds) / 2}  # device 1 can afford one round only
    for i, epsilon in budgets.items():
        devices.add_tables(i, f"[privacy]\nepsilon = {epsilon}\ndelta = {DELTA}\n")
        devices.start(i)
    cfg = run_config(
        feature_module,
        tmp_path,
        **{"update-codec": "fp16", "clip-norm": 5.0, "dp-noise-multiplier": NOISE, "num-server-rounds": 2},
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    first, second = [r for r in records if r["event"] == "round"]
    assert first["replies"] == 2 and not first["failures"] and not first["rejected"], first
    assert second["failures"] == {"not-eligible": 1}, second  # device 1: budget exhausted, not a failure
    assert len(second["rejected"]) == 0 and second["new_version"] == second["version"] + 1, second

    full, limited = _ledger(devices, 0), _ledger(devices, 1)
    assert [n for _, n, _ in full] == [NOISE, NOISE] and [n for _, n, _ in limited] == [NOISE]
    # Each charged round was pushed, so each is marked uploaded; round ids are the instructions' message ids.
    assert all(uploaded is not None for _, _, uploaded in full + limited), (full, limited)
    assert len({rid for rid, _, _ in full}) == 2 and all(len(rid) == 64 for rid, _, _ in full + limited)
    declines = [t for t in devices.telemetry(1) if t.get("outcome") == "declined"]
    assert len(declines) == 1 and declines[0]["reason"] == "not-eligible", declines
    assert "privacy_budget" in devices.log(1)


def test_central_dp_run_clips_on_devices_noises_on_the_server_and_reports_epsilon(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(2, superlink.url)
    for i in range(2):
        devices.add_tables(i, f"[privacy]\nepsilon = 100.0\ndelta = {DELTA}\n")
        devices.start(i)
    cfg = run_config(
        feature_module,
        tmp_path,
        **{"dp-mode": "central", "clip-norm": 2.0, "dp-noise-multiplier": 1.0, "dp-population": 20},
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    rounds = [r for r in records if r["event"] == "round"]
    assert all(r["replies"] == 2 and not r["failures"] and not r["rejected"] for r in rounds), rounds
    assert [r["dp"]["noise_std"] for r in rounds] == [pytest.approx(1.0 * 2.0 / 2)] * 2
    eps = [r["dp"]["epsilon"] for r in rounds]
    assert 0 < eps[0] < eps[1] and rounds[-1]["dp"]["delta"] == DELTA
    # Sampled 2 of 20: the same epsilon as dp-accounting states for that mechanism.
    from flclient.update import central_epsilon

    assert eps[1] == pytest.approx(central_epsilon(noise_multiplier=1.0, sampling_rate=0.1, rounds=2, delta=DELTA))
    for i in range(2):  # each device charged its ledger with the central mechanism, and added no noise itself
        path = devices.configs[i].parent / "state" / "privacy.sqlite"
        with sqlite3.connect(path) as db:
            mechs = [r[0] for r in db.execute("SELECT mechanism FROM privacy_participations")]
        assert mechs == ["gaussian-central", "gaussian-central"]
