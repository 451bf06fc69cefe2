"""Bounded device state: answered rows pruned beyond the newest N, telemetry rotated with a cap."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from flclient._node import TelemetryLog
from flclient._state import StateStore

from .test_node import _connected, _train


def _reply(store: StateStore, mid: str) -> None:
    store.add_instruction(mid, 1, b"m", b"t")
    store.store_reply(reply_to=mid, message_id=f"r-{mid}", message=b"", tree=b"", objects={"o": b"x"}, runtime_s=0)


def test_prune_keeps_the_newest_answered_rows_and_every_unfinished_one(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        for i in range(10):
            _reply(store, f"done{i}")
            store.mark_reply(f"done{i}", "pushed")
        _reply(store, "unsent")  # computed, not pushed yet
        store.add_instruction("waiting", 1, b"m", b"t")  # pulled, not answered
        store.note_attempt("waiting")
        store.note_attempt("gone-long-ago")
        assert store.prune(keep=3) == 14  # 7 replies + 7 instructions
        states = store.reply_states()
        assert states == {"done7": "pushed", "done8": "pushed", "done9": "pushed", "unsent": "computed"}
        assert [p.message_id for p in store.pending_instructions()] == ["waiting"]
        assert store.has_instruction("done9") and not store.has_instruction("done0")
        assert [r.reply_to for r in store.unsent_replies()] == ["unsent"]
        assert store.get_meta("attempts:waiting") == b"1" and store.get_meta("attempts:gone-long-ago") is None
        assert store.prune(keep=3) == 0


def test_a_node_s_state_stops_growing_over_many_rounds(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path)
    dev.node.timing = replace(dev.node.timing, keep_rows=5)
    sizes = []
    for i in range(30):
        _train(link, node_id, lr=float(i))
        dev.node.poll_once()
        sizes.append(sum(dev.store.row_counts().values()))
    assert len(link.delivered()) == 30
    assert sizes[9] == sizes[-1] and sizes[0] < sizes[9]  # grows until the 5 kept rows, then flat
    counts = dev.store.row_counts()
    assert counts["replies"] == 5 and counts["instructions"] == 5 and counts["reply_objects"] == 0


def test_telemetry_rotates_and_stays_bounded(tmp_path: Path) -> None:
    log = TelemetryLog(tmp_path / "telemetry.jsonl", max_bytes=1000)
    for i in range(200):
        log.write({"i": i, "pad": "x" * 40})
    files = [log.path, log.rotated_path]
    assert all(f.exists() for f in files) and sum(f.stat().st_size for f in files) <= 2000
    kept = [r["i"] for r in log.read()]
    assert kept == list(range(kept[0], 200)) and kept[0] > 0  # newest kept, in order
    assert all(json.loads(line) for line in log.path.read_text().splitlines())
