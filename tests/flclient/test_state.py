"""The SQLite state store: durable across reopen, one transaction per round step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flclient import StateStoreError
from flclient._state import StateStore


def test_state_survives_reopen_and_walks_the_round_states(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path) as s:
        s.set_meta("node_id", b"7")
        assert s.add_instruction("m1", 2**64 - 1, b"meta", b"tree")
        assert not s.add_instruction("m1", 1, b"", b"")  # seen before
        s.mark_received("m1", {"o1": b"x"})
    with StateStore(path) as s:
        assert s.get_meta("node_id") == b"7"
        (p,) = s.pending_instructions()
        assert (p.message_id, p.run_id, p.state, p.objects) == ("m1", 2**64 - 1, "received", {"o1": b"x"})
        s.store_reply(reply_to="m1", message_id="r1", message=b"m", tree=b"t", objects={"a": b"1"}, runtime_s=0.5)
        assert s.pending_instructions() == []
        (r,) = s.unsent_replies()
        assert (r.reply_to, r.objects) == ("m1", {"a": b"1"})
        s.mark_reply("m1", "pushed")
        assert s.unsent_replies() == [] and s.reply_states() == {"m1": "pushed"}
        s.bump("replies")
        s.bump("replies")
        assert s.counters() == {"replies": 2}
        assert s._query("PRAGMA journal_mode")[0][0] == "wal"


def test_a_reply_is_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        s.add_instruction("m1", 1, b"", b"")
        s.mark_received("m1", {})
        s.store_reply(reply_to="m1", message_id="r", message=b"", tree=b"", objects={}, runtime_s=0)
        with pytest.raises(sqlite3.IntegrityError):  # a second reply to the same instruction
            s.store_reply(reply_to="m1", message_id="r2", message=b"", tree=b"", objects={"x": b"1"}, runtime_s=0)
        assert [r.message_id for r in s.unsent_replies()] == ["r"]
        assert s._query("SELECT COUNT(*) FROM reply_objects")[0][0] == 0


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    bad.write_bytes(b"not sqlite" * 100)
    with pytest.raises(StateStoreError, match="cannot open the state database"):
        StateStore(bad)
