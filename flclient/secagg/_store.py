"""Durable protocol state of a device: one row per round, every stage transition one compare-and-set transaction."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._errors import SecAggStateError
from .._sqlite import SqliteFile

__all__ = ["InMemorySecAggStore", "RoundRecord", "SecAggStore", "SqliteSecAggStore"]


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """A round as the device left it: the stage reached, its secrets (JSON-able), and the last request/reply."""

    stage: str
    state: dict[str, Any] = field(default_factory=dict)
    request_digest: bytes = b""
    reply: bytes = b""


class SecAggStore(Protocol):
    """Where a device keeps its SecAgg rounds; ``save`` is atomic and refuses a stale ``expected`` stage."""

    def load(self, round_id: bytes) -> RoundRecord | None:
        """The round's record, or ``None`` when the device never took part in it."""
        ...

    def save(self, round_id: bytes, expected: str | None, record: RoundRecord) -> None:
        """Replace the record if its stage is still ``expected`` (``None``: must not exist yet)."""
        ...


@dataclass
class InMemorySecAggStore:
    """A :class:`SecAggStore` in a dict: for tests and for devices without persistent state."""

    rounds: dict[bytes, RoundRecord] = field(default_factory=dict)

    def load(self, round_id: bytes) -> RoundRecord | None:
        return self.rounds.get(round_id)

    def save(self, round_id: bytes, expected: str | None, record: RoundRecord) -> None:
        current = self.rounds.get(round_id)
        if (current.stage if current else None) != expected:
            raise SecAggStateError(f"round state changed underneath (expected {expected}, found {current})")
        self.rounds[round_id] = record


class SqliteSecAggStore(SqliteFile):
    """Rounds in a table of a SQLite file (WAL, ``synchronous=FULL``), plus the device's Ed25519 identity key.

    Each :meth:`save` runs in one ``BEGIN IMMEDIATE`` transaction that checks the stage it expects, so a crash
    leaves either the old stage with its old reply or the new stage with its new reply, never a mix.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            schema="CREATE TABLE IF NOT EXISTS secagg_rounds (round_id BLOB PRIMARY KEY, stage TEXT NOT NULL,"
            " state TEXT NOT NULL, request_digest BLOB NOT NULL, reply BLOB NOT NULL);"
            " CREATE TABLE IF NOT EXISTS secagg_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
            open_error=lambda why: SecAggStateError(f"cannot open the SecAgg state store {path}: {why}"),
        )

    def identity(self) -> Ed25519PrivateKey:
        """The device's Ed25519 signing key, created on first use and kept in the store."""
        db = self._conn()
        row = db.execute("SELECT value FROM secagg_meta WHERE key = 'identity'").fetchone()
        if row is None:
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            db.execute("INSERT OR IGNORE INTO secagg_meta (key, value) VALUES ('identity', ?)", (raw,))
            row = db.execute("SELECT value FROM secagg_meta WHERE key = 'identity'").fetchone()
        return Ed25519PrivateKey.from_private_bytes(bytes(row[0]))

    def load(self, round_id: bytes) -> RoundRecord | None:
        db = self._conn()  # outside the try: a closed store is the caller's mistake, not unreadable state
        try:
            row = db.execute(
                "SELECT stage, state, request_digest, reply FROM secagg_rounds WHERE round_id = ?", (round_id,)
            ).fetchone()
            if row is None:
                return None
            return RoundRecord(
                stage=row[0], state=json.loads(row[1]), request_digest=bytes(row[2]), reply=bytes(row[3])
            )
        except (sqlite3.Error, ValueError) as exc:
            raise SecAggStateError(f"cannot read SecAgg round state: {exc}") from exc

    def save(self, round_id: bytes, expected: str | None, record: RoundRecord) -> None:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise SecAggStateError(f"cannot write SecAgg round state: {exc}") from exc
        try:
            row = db.execute("SELECT stage FROM secagg_rounds WHERE round_id = ?", (round_id,)).fetchone()
            if (row[0] if row else None) != expected:
                raise SecAggStateError(f"round state changed underneath (expected {expected}, found {row})")
            db.execute(
                "INSERT OR REPLACE INTO secagg_rounds (round_id, stage, state, request_digest, reply)"
                " VALUES (?, ?, ?, ?, ?)",
                (round_id, record.stage, json.dumps(record.state), record.request_digest, record.reply),
            )
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise SecAggStateError(f"cannot write SecAgg round state: {exc}") from exc
            raise
