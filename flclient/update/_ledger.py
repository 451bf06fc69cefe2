"""The device's privacy ledger: every DP participation, durably recorded in SQLite before its noise is drawn.

A round is charged in one ``BEGIN IMMEDIATE`` transaction that re-reads the ledger, checks the budget and
appends the participation; only after that commit (WAL, ``synchronous=FULL``) does the pipeline draw noise. A
process killed at any point after the charge leaves the participation counted, so the ledger can over-count a
round that never reached the server, but never under-count one that did.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._errors import PrivacyBudgetExhausted, PrivacyLedgerClosed, PrivacyLedgerError
from .._sqlite import SqliteFile
from ._accounting import gaussian_rdp_rho, rdp_epsilon

__all__ = ["BudgetDecision", "LedgerEntry", "PrivacyBudget", "PrivacyLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_participations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round_id TEXT NOT NULL,
    mechanism TEXT NOT NULL CHECK (mechanism IN ('gaussian-local', 'gaussian-central')),
    noise_multiplier REAL NOT NULL CHECK (noise_multiplier > 0),
    clip_norm REAL NOT NULL CHECK (clip_norm > 0),
    charged_at REAL NOT NULL,
    uploaded_at REAL
)
"""


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """The device's lifetime (epsilon, delta) budget."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"epsilon must be a positive finite number, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One recorded participation. ``uploaded_at`` is None while the update has not been confirmed sent."""

    id: int
    round_id: str
    mechanism: str
    noise_multiplier: float
    clip_norm: float
    charged_at: float
    uploaded_at: float | None


@dataclass(frozen=True, kw_only=True)
class BudgetDecision:
    """The gate's answer for one prospective round: ``allowed``, or ``reason`` = ``"budget exhausted"``."""

    allowed: bool
    reason: str | None
    epsilon_spent: float
    epsilon_after: float


class PrivacyLedger(SqliteFile):
    """Durable record of DP participations with epsilon by closed-form Gaussian RDP.

    Example::

        with PrivacyLedger(state_dir / "state.sqlite3", budget=PrivacyBudget(epsilon=8.0, delta=1e-5)) as ledger:
            if ledger.check(noise_multiplier=1.1).allowed:
                entry = ledger.charge(round_id="r42", mechanism="gaussian-local", noise_multiplier=1.1, clip_norm=1.0)
                ...  # draw noise, encode, upload
                ledger.mark_uploaded(entry)
    """

    _closed_error = PrivacyLedgerClosed

    def __init__(self, path: Path, *, budget: PrivacyBudget, clock: Callable[[], float] = time.time) -> None:
        self.budget = budget
        self._clock = clock
        super().__init__(
            path,
            schema=_SCHEMA,
            open_error=lambda why: PrivacyLedgerError(f"cannot open the privacy ledger at {path}: {why}"),
        )

    # queries
    def entries(self) -> list[LedgerEntry]:
        """Every recorded participation, oldest first."""
        try:
            rows = self._conn().execute(
                "SELECT id, round_id, mechanism, noise_multiplier, clip_norm, charged_at, uploaded_at "
                "FROM privacy_participations ORDER BY id"
            )
            return [
                LedgerEntry(
                    id=r[0],
                    round_id=r[1],
                    mechanism=r[2],
                    noise_multiplier=r[3],
                    clip_norm=r[4],
                    charged_at=r[5],
                    uploaded_at=r[6],
                )
                for r in rows
            ]
        except sqlite3.Error as exc:
            raise PrivacyLedgerError(f"cannot read the privacy ledger: {exc}") from exc

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (the budget's delta by default), charged rounds included."""
        return rdp_epsilon(self._rho(), self.budget.delta if delta is None else delta)

    def check(self, *, noise_multiplier: float) -> BudgetDecision:
        """Would one more participation at ``noise_multiplier`` stay within the budget? Records nothing."""
        return self._decide(self._rho(), noise_multiplier)

    # updates
    def charge(self, *, round_id: str, mechanism: str, noise_multiplier: float, clip_norm: float) -> LedgerEntry:
        """Append a participation, atomically with the budget check; call it before drawing the noise.

        Raises :class:`~flclient.PrivacyBudgetExhausted` (and records nothing) when the round would exceed the
        budget.
        """
        if mechanism not in ("gaussian-local", "gaussian-central"):
            raise ValueError(f"mechanism must be 'gaussian-local' or 'gaussian-central', got {mechanism!r}")
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ValueError(f"noise_multiplier must be a positive finite number, got {noise_multiplier}")
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm}")
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(self._rho(), noise_multiplier)
                if not decision.allowed:
                    raise PrivacyBudgetExhausted(
                        epsilon_spent=decision.epsilon_spent,
                        epsilon_after=decision.epsilon_after,
                        budget=self.budget.epsilon,
                    )
                now = self._clock()
                cur = db.execute(
                    "INSERT INTO privacy_participations (round_id, mechanism, noise_multiplier, clip_norm, charged_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (round_id, mechanism, noise_multiplier, clip_norm, now),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise PrivacyLedgerError(f"cannot write the privacy ledger: {exc}") from exc
        assert cur.lastrowid is not None
        return LedgerEntry(
            id=cur.lastrowid,
            round_id=round_id,
            mechanism=mechanism,
            noise_multiplier=noise_multiplier,
            clip_norm=clip_norm,
            charged_at=now,
            uploaded_at=None,
        )

    def mark_uploaded(self, entry: LedgerEntry) -> None:
        """Note that the server acknowledged the update; the charge stays counted either way."""
        try:
            self._conn().execute(
                "UPDATE privacy_participations SET uploaded_at = ? WHERE id = ?", (self._clock(), entry.id)
            )
        except sqlite3.Error as exc:
            raise PrivacyLedgerError(f"cannot write the privacy ledger: {exc}") from exc

    def mark_uploaded_round(self, round_id: str) -> int:
        """Mark every participation charged for ``round_id`` uploaded; returns how many rows it marked."""
        try:
            cur = self._conn().execute(
                "UPDATE privacy_participations SET uploaded_at = ? WHERE round_id = ? AND uploaded_at IS NULL",
                (self._clock(), round_id),
            )
        except sqlite3.Error as exc:
            raise PrivacyLedgerError(f"cannot write the privacy ledger: {exc}") from exc
        return cur.rowcount

    def _rho(self) -> float:
        try:
            rows = self._conn().execute("SELECT noise_multiplier FROM privacy_participations").fetchall()
        except sqlite3.Error as exc:
            raise PrivacyLedgerError(f"cannot read the privacy ledger: {exc}") from exc
        return gaussian_rdp_rho(r[0] for r in rows)

    def _decide(self, rho: float, noise_multiplier: float) -> BudgetDecision:
        spent = rdp_epsilon(rho, self.budget.delta)
        after = rdp_epsilon(rho + gaussian_rdp_rho([noise_multiplier]), self.budget.delta)
        allowed = after <= self.budget.epsilon
        return BudgetDecision(
            allowed=allowed, reason=None if allowed else "budget exhausted", epsilon_spent=spent, epsilon_after=after
        )
