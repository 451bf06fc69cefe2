"""The device's durable state in SQLite (WAL): identity, instructions, computed replies and counters.

Every step of a round is one transaction, so ``kill -9`` at any point leaves either the state before the step
or the state after it: an instruction is stored before it is confirmed, a reply with all its objects is stored
before it is pushed, and a reply is marked pushed only after SuperLink stored every object. On restart the node
resumes from what is stored, so a computed update is neither lost nor computed (or sent) twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import StateStoreError
from ._sqlite import SqliteFile

__all__ = ["PendingInstruction", "PendingReply", "StateStore"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS instructions (
    message_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,  -- uint64: wider than SQLite's INTEGER
    metadata BLOB NOT NULL,
    tree BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pulled', 'received', 'replied', 'dropped')),
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instruction_objects (
    message_id TEXT NOT NULL, object_id TEXT NOT NULL, content BLOB NOT NULL,
    PRIMARY KEY (message_id, object_id)
);
CREATE TABLE IF NOT EXISTS replies (
    reply_to TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    message BLOB NOT NULL,
    tree BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('computed', 'pushed', 'dropped')),
    runtime_s REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reply_objects (
    reply_to TEXT NOT NULL, object_id TEXT NOT NULL, content BLOB NOT NULL,
    PRIMARY KEY (reply_to, object_id)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class PendingInstruction:
    """An instruction stored but not yet answered: serialized metadata and tree, and objects pulled so far."""

    message_id: str
    run_id: int
    metadata: bytes
    tree: bytes
    state: str
    objects: dict[str, bytes]


@dataclass(frozen=True)
class PendingReply:
    """A reply computed and stored but not yet (completely) pushed."""

    reply_to: str
    message_id: str
    message: bytes
    tree: bytes
    objects: dict[str, bytes]
    runtime_s: float


class StateStore(SqliteFile):
    """A device's state database at ``path``. ``close()`` is idempotent; ``with`` closes.

    Example::

        with StateStore(Path("/var/lib/flclient/state.db")) as store:
            node_id = store.get_meta("node_id")
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        super().__init__(
            path,
            schema=_SCHEMA,
            timeout_s=10,
            open_error=lambda why: StateStoreError(f"{path}: cannot open the state database: {why}"),
        )
        try:
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", str(_SCHEMA_VERSION).encode())
            elif int(version) != _SCHEMA_VERSION:
                raise StateStoreError(
                    f"{self.path}: state schema {int(version)}, this flclient reads {_SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateStoreError(f"{self.path}: cannot open the state database: {exc}") from exc
        except StateStoreError:
            self.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._conn()
        try:
            return list(db.execute(sql, args).fetchall())
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(f"{self.path}: {exc}") from exc

    # -- identity and settings ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        """A stored value (``None`` if absent)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: bytes) -> None:
        """Store a value (replacing an older one)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- instructions --------------------------------------------------------------------------------------------
    def has_instruction(self, message_id: str) -> bool:
        """Whether this instruction was seen before (in any state)."""
        return bool(self._query("SELECT 1 FROM instructions WHERE message_id = ?", (message_id,)))

    def add_instruction(self, message_id: str, run_id: int, metadata: bytes, tree: bytes) -> bool:
        """Record an announced instruction (state ``pulled``); ``False`` if it was already known."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO instructions (message_id, run_id, metadata, tree, state, updated_at) "
                "VALUES (?, ?, ?, ?, 'pulled', ?)",
                (message_id, str(run_id), metadata, tree, self._clock()),
            )
            return cur.rowcount == 1

    def mark_received(self, message_id: str, objects: Mapping[str, bytes]) -> None:
        """Store the instruction's objects and mark it ``received`` (ready to execute), in one transaction."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO instruction_objects (message_id, object_id, content) VALUES (?, ?, ?)",
                [(message_id, oid, content) for oid, content in objects.items()],
            )
            db.execute(
                "UPDATE instructions SET state = 'received', updated_at = ? WHERE message_id = ?",
                (self._clock(), message_id),
            )

    def drop_instruction(self, message_id: str, reason: str) -> None:
        """Give up on an instruction (run over, hostile content...) and free its objects."""
        with self._tx() as db:
            db.execute(
                "UPDATE instructions SET state = 'dropped', reason = ?, updated_at = ? WHERE message_id = ?",
                (reason, self._clock(), message_id),
            )
            db.execute("DELETE FROM instruction_objects WHERE message_id = ?", (message_id,))
            db.execute("DELETE FROM meta WHERE key = ?", (f"attempts:{message_id}",))

    def pending_instructions(self) -> list[PendingInstruction]:
        """Instructions in state ``pulled`` or ``received``, oldest first."""
        rows = self._query(
            "SELECT message_id, run_id, metadata, tree, state FROM instructions "
            "WHERE state IN ('pulled', 'received') ORDER BY updated_at, rowid"
        )
        out = []
        for mid, run_id, meta, tree, state in rows:
            objs = self._query("SELECT object_id, content FROM instruction_objects WHERE message_id = ?", (mid,))
            out.append(
                PendingInstruction(
                    str(mid),
                    int(run_id),
                    bytes(meta),
                    bytes(tree),
                    str(state),
                    {str(o): bytes(c) for o, c in objs},
                )
            )
        return out

    # -- replies ----------------------------------------------------------------------------------------------------
    def store_reply(
        self,
        *,
        reply_to: str,
        message_id: str,
        message: bytes,
        tree: bytes,
        objects: Mapping[str, bytes],
        runtime_s: float,
    ) -> None:
        """Store a computed reply with all its objects and mark its instruction ``replied``, atomically."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO replies (reply_to, message_id, message, tree, state, runtime_s, updated_at) "
                "VALUES (?, ?, ?, ?, 'computed', ?, ?)",
                (reply_to, message_id, message, tree, runtime_s, self._clock()),
            )
            db.executemany(
                "INSERT INTO reply_objects (reply_to, object_id, content) VALUES (?, ?, ?)",
                [(reply_to, oid, content) for oid, content in objects.items()],
            )
            db.execute(
                "UPDATE instructions SET state = 'replied', updated_at = ? WHERE message_id = ?",
                (self._clock(), reply_to),
            )
            db.execute("DELETE FROM instruction_objects WHERE message_id = ?", (reply_to,))
            db.execute("DELETE FROM meta WHERE key = ?", (f"attempts:{reply_to}",))

    def unsent_replies(self) -> list[PendingReply]:
        """Replies computed but not yet pushed, oldest first."""
        rows = self._query(
            "SELECT reply_to, message_id, message, tree, runtime_s FROM replies WHERE state = 'computed' "
            "ORDER BY updated_at, rowid"
        )
        out = []
        for reply_to, mid, msg, tree, runtime in rows:
            objs = self._query("SELECT object_id, content FROM reply_objects WHERE reply_to = ?", (reply_to,))
            out.append(
                PendingReply(
                    str(reply_to),
                    str(mid),
                    bytes(msg),
                    bytes(tree),
                    {str(o): bytes(c) for o, c in objs},
                    float(runtime),
                )
            )
        return out

    def note_attempt(self, message_id: str) -> int:
        """Count one more try of an instruction's task (kept across restarts); returns the count so far."""
        key = f"attempts:{message_id}"
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            count = (int(bytes(row[0])) if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(count).encode()))
            return count

    def note_push_attempt(self, reply_to: str) -> bool:
        """Record that this reply is being announced; whether it was announced before (by this or an earlier run
        of the node). A first announcement that SuperLink asks nothing of is a refusal, a later one a repeat."""
        with self._tx() as db:
            key = f"push-attempt:{reply_to}"
            cur = db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, b"1"))
            return cur.rowcount == 0

    def mark_reply(self, reply_to: str, state: str) -> None:
        """Mark a reply ``pushed`` (SuperLink stored it) or ``dropped``; its objects are freed."""
        if state not in ("pushed", "dropped"):
            raise ValueError(f"a reply can be marked 'pushed' or 'dropped', not {state!r}")
        with self._tx() as db:
            db.execute(
                "UPDATE replies SET state = ?, updated_at = ? WHERE reply_to = ?", (state, self._clock(), reply_to)
            )
            db.execute("DELETE FROM reply_objects WHERE reply_to = ?", (reply_to,))
            db.execute("DELETE FROM meta WHERE key = ?", (f"push-attempt:{reply_to}",))

    def reply_states(self) -> dict[str, str]:
        """Every reply's state by the instruction it answers (for inspection and tests)."""
        return {str(r): str(s) for r, s in self._query("SELECT reply_to, state FROM replies")}

    # -- bounded size -----------------------------------------------------------------------------------------------
    def prune(self, *, keep: int = 256) -> int:
        """Delete answered instructions and pushed/dropped replies beyond the newest ``keep`` of each (their
        content is freed already; the rows only remember ids, so that an instruction SuperLink hands out again
        soon is recognised). Unanswered instructions and unsent replies are never touched. Returns rows deleted."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        with self._tx() as db:
            gone = db.execute(
                "DELETE FROM replies WHERE state IN ('pushed', 'dropped') AND rowid NOT IN "
                "(SELECT rowid FROM replies WHERE state IN ('pushed', 'dropped') "
                "ORDER BY updated_at DESC, rowid DESC LIMIT ?)",
                (keep,),
            ).rowcount
            gone += db.execute(
                "DELETE FROM instructions WHERE state IN ('replied', 'dropped') "
                "AND message_id NOT IN (SELECT reply_to FROM replies) AND rowid NOT IN "
                "(SELECT rowid FROM instructions WHERE state IN ('replied', 'dropped') "
                "ORDER BY updated_at DESC, rowid DESC LIMIT ?)",
                (keep,),
            ).rowcount
            db.execute(
                "DELETE FROM meta WHERE (key LIKE 'attempts:%' OR key LIKE 'push-attempt:%') AND substr(key, "
                "instr(key, ':') + 1) NOT IN (SELECT message_id FROM instructions WHERE state IN ('pulled', "
                "'received') UNION SELECT reply_to FROM replies WHERE state = 'computed')"
            )
            return gone

    def row_counts(self) -> dict[str, int]:
        """Rows per table (for inspection and tests)."""
        return {
            t: int(self._query(f"SELECT COUNT(*) FROM {t}")[0][0])
            for t in ("instructions", "instruction_objects", "replies", "reply_objects", "meta")
        }

    # -- counters ---------------------------------------------------------------------------------------------------
    def bump(self, name: str, by: int = 1) -> None:
        """Add ``by`` to a counter."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def counters(self) -> dict[str, int]:
        """Every counter."""
        return {str(n): int(v) for n, v in self._query("SELECT name, value FROM counters")}
