"""Privacy ledger: closed-form RDP against dp-accounting, budget refusal, and durability across kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flclient import PrivacyBudgetExhausted, PrivacyLedgerError
from flclient.update import PrivacyBudget, PrivacyLedger, central_epsilon, rdp_epsilon
from flclient.update._accounting import gaussian_rdp_rho

dpa = pytest.importorskip("dp_accounting", reason="dp-accounting (dev extra) cross-checks the device ledger")
from dp_accounting import pld, rdp  # noqa: E402


@pytest.mark.parametrize(("z", "rounds", "delta"), [(1.0, 10, 1e-5), (0.8, 3, 1e-6), (4.0, 200, 1e-5), (20.0, 1, 1e-3)])
def test_device_epsilon_matches_dp_accounting_rdp(z: float, rounds: int, delta: float) -> None:
    event = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), rounds)
    theirs = rdp.RdpAccountant()
    theirs.compose(event)
    tight = pld.PLDAccountant()
    tight.compose(event)
    ours = rdp_epsilon(gaussian_rdp_rho([z] * rounds), delta)
    # Same curve and conversion; our order grid is denser, so equal or a hair lower, never below the PLD value.
    assert ours <= theirs.get_epsilon(delta) * 1.0001
    assert ours >= theirs.get_epsilon(delta) * 0.98
    assert ours >= tight.get_epsilon(delta) * 0.999


def test_server_central_epsilon_matches_the_anchor() -> None:
    # ../shared/reference/update-pipeline.md: z = 1.0, q = 0.01, 1000 rounds, delta 1e-5 -> PLD 1.828
    assert central_epsilon(noise_multiplier=1.0, sampling_rate=0.01, rounds=1000, delta=1e-5) == pytest.approx(
        1.828, abs=0.01
    )
    assert central_epsilon(noise_multiplier=1.0, sampling_rate=0.01, rounds=0, delta=1e-5) == 0.0


def test_ledger_charges_and_refuses_when_the_budget_would_be_exceeded(tmp_path: Path) -> None:
    budget = PrivacyBudget(epsilon=rdp_epsilon(gaussian_rdp_rho([2.0] * 3), 1e-5) * 1.0001, delta=1e-5)
    with PrivacyLedger(tmp_path / "state.sqlite3", budget=budget, clock=lambda: 123.0) as ledger:
        assert ledger.epsilon() == 0.0
        for i in range(3):
            assert ledger.check(noise_multiplier=2.0).allowed
            entry = ledger.charge(round_id=f"r{i}", mechanism="gaussian-local", noise_multiplier=2.0, clip_norm=1.0)
            ledger.mark_uploaded(entry)
        decision = ledger.check(noise_multiplier=2.0)
        assert not decision.allowed and decision.reason == "budget exhausted"
        assert decision.epsilon_after > budget.epsilon >= decision.epsilon_spent
        with pytest.raises(PrivacyBudgetExhausted) as info:
            ledger.charge(round_id="r3", mechanism="gaussian-local", noise_multiplier=2.0, clip_norm=1.0)
        assert info.value.budget == budget.epsilon
        assert [e.round_id for e in ledger.entries()] == ["r0", "r1", "r2"]
        assert all(e.uploaded_at == 123.0 for e in ledger.entries())
        # Far more noise still fits.
        assert ledger.check(noise_multiplier=1000.0).allowed
    with pytest.raises(PrivacyLedgerError, match="closed"):
        ledger.epsilon()
    ledger.close()  # idempotent


def test_ledger_is_shared_between_connections_and_validates(tmp_path: Path) -> None:
    budget = PrivacyBudget(epsilon=5.0, delta=1e-5)
    a = PrivacyLedger(tmp_path / "s.db", budget=budget)
    b = PrivacyLedger(tmp_path / "s.db", budget=budget)
    a.charge(round_id="x", mechanism="gaussian-central", noise_multiplier=3.0, clip_norm=0.5)
    assert len(b.entries()) == 1 and b.epsilon() == a.epsilon() > 0
    with pytest.raises(ValueError):
        a.charge(round_id="x", mechanism="laplace", noise_multiplier=3.0, clip_norm=0.5)
    with pytest.raises(ValueError):
        PrivacyBudget(epsilon=0.0, delta=1e-5)
    a.close()
    b.close()
    (tmp_path / "dir").mkdir()
    with pytest.raises(PrivacyLedgerError):
        PrivacyLedger(tmp_path / "dir", budget=budget)


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from flclient.update import PrivacyBudget, PrivacyLedger
    ledger = PrivacyLedger(sys.argv[1], budget=PrivacyBudget(epsilon=1e6, delta=1e-5))
    rng = np.random.default_rng(0)
    i = 0
    while True:
        ledger.charge(round_id=f"r{i}", mechanism="gaussian-local", noise_multiplier=1.0, clip_norm=1.0)
        noise = rng.normal(size=1000)  # the noise exists from here on: the charge must already be durable
        print(f"noised {i}", flush=True)
        time.sleep(0.002)
        i += 1
    """
)


def test_ledger_never_under_counts_after_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert proc.stdout is not None
    noised = 0
    for line in proc.stdout:
        if line.startswith("noised"):
            noised += 1
        if noised == 25:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    noised += sum(1 for line in proc.stdout if line.startswith("noised"))
    assert proc.returncode == -signal.SIGKILL
    with PrivacyLedger(path, budget=PrivacyBudget(epsilon=1e6, delta=1e-5)) as ledger:
        assert len(ledger.entries()) >= noised
        assert ledger.epsilon() >= rdp_epsilon(gaussian_rdp_rho([1.0] * noised), 1e-5)
