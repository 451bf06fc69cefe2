"""The example store: appends from several threads while snapshots are read, retention by age, rows and bytes
(per store and per collection), selection, not-yet-used first, the DataSource read, the .npz importer, and a
writer killed with SIGKILL mid-append leaving a consistent store. Time comes from an injected clock."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from flclient import (
    ExampleSelection,
    ExampleStore,
    ExampleStoreError,
    ResourceClosedError,
    RetentionPolicy,
    TaskDeclined,
)
from flclient._examples import RowSchema, decode_rows


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _append(store: ExampleStore, collection: str, values: list[float], ts: list[float] | None = None) -> None:
    labels = np.zeros(len(values), np.int64)
    store.append(collection, {"v": np.asarray(values, dtype=np.float64)}, labels, ts)


def _values(store: ExampleStore, **selection: object) -> list[float]:
    data = store.snapshot(ExampleSelection(**selection)).data  # type: ignore[arg-type]
    return [float(v) for v in data.columns["v"]]


def _consistent(path: Path) -> int:
    """Check the file with SQLite and against the store's own counters; returns the number of examples."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counted = dict(db.execute("SELECT collection, COUNT(*) FROM examples GROUP BY collection").fetchall())
        for cid, rows, schema in db.execute("SELECT id, rows, schema FROM collections").fetchall():
            assert counted.get(cid, 0) == rows
            blobs = [r for (r,) in db.execute("SELECT row FROM examples WHERE collection = ?", (cid,))]
            decode_rows(RowSchema.from_json(schema), blobs)  # every stored row decodes
        return sum(counted.values())
    finally:
        db.close()


def test_appended_records_come_back_in_append_order_with_their_dtypes(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "e.sqlite") as store:
        cols = {
            "t": np.array([20.5, 21.0], np.float32),
            "tag": np.array([b"ok", b"no"]),
            "w": np.ones((2, 3), np.int16),
        }
        store.append("s", cols, labels=np.array([1, 0], np.uint8), x=np.eye(2, dtype=np.float32))
        store.append("s", {"t": [22.0], "tag": [b"ok"], "w": [[1, 2, 3]]}, labels=[1], x=[[0.5, 0.5]])
        data = store.snapshot().data
        assert data.columns["t"].dtype == np.float32 and data.columns["t"].tolist() == [20.5, 21.0, 22.0]
        assert data.columns["tag"].tolist() == [b"ok", b"no", b"ok"] and data.columns["w"].shape == (3, 3)
        assert data.labels.dtype == np.uint8 and data.labels.tolist() == [1, 0, 1]
        assert data.x is not None and data.x.tolist() == [[1, 0], [0, 1], [0.5, 0.5]]
        with pytest.raises(ExampleStoreError, match="'w' of collection 's' is int16, got float64"):
            store.append("s", {"t": [1.0], "tag": [b"a"], "w": [[1.5, 2, 3]]}, labels=[1], x=[[0, 0]])
        with pytest.raises(ExampleStoreError, match=r"holds columns \['t', 'tag', 'w'\], the append gave \['t'\]"):
            store.append("s", {"t": [1.0]}, labels=[1], x=[[0, 0]])
        with pytest.raises(ExampleStoreError, match="has dense extras x"):
            store.append("s", {"t": [1.0], "tag": [b"a"], "w": [[1, 2, 3]]}, labels=[1])
        with pytest.raises(ExampleStoreError, match=r"rows of shape \[3\], got \[2\]"):
            store.append("s", {"t": [1.0], "tag": [b"a"], "w": [[1, 2]]}, labels=[1], x=[[0, 0]])
        assert store.stats()[0].rows == 3  # refused appends left nothing behind
    reopened = ExampleStore(tmp_path / "e.sqlite")
    assert reopened.snapshot().data.columns["t"].tolist() == [20.5, 21.0, 22.0]
    reopened.close()
    with pytest.raises(ResourceClosedError):
        reopened.append("s", {"t": [1.0]}, labels=[1])


def test_appends_from_threads_while_snapshots_are_read_are_never_seen_in_part(tmp_path: Path) -> None:
    writers, batches, batch = 4, 40, 25
    with ExampleStore(tmp_path / "e.sqlite") as store:
        start = threading.Barrier(writers + 1)
        errors: list[BaseException] = []

        def sensor(w: int) -> None:
            try:
                start.wait()
                for b in range(batches):
                    seq = np.arange(b * batch, (b + 1) * batch)
                    store.append("s", {"writer": np.full(batch, w), "seq": seq}, labels=np.zeros(batch, np.int8))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=sensor, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        start.wait()
        snapshots = 0
        everything = ExampleSelection(max_examples=writers * batches * batch, unused_first=False)
        while any(t.is_alive() for t in threads) or snapshots < 3:
            data = store.snapshot(everything).data
            snapshots += 1
            if not len(data.labels):
                continue
            assert len(data.labels) % batch == 0  # whole appends only
            for w in range(writers):
                seen = np.sort(data.columns["seq"][data.columns["writer"] == w])
                assert seen.tolist() == list(range(len(seen)))  # each writer's appends form a prefix
        for t in threads:
            t.join()
        assert not errors
        (stats,) = store.stats()
        assert stats.rows == writers * batches * batch == len(store.snapshot(everything))
    assert _consistent(tmp_path / "e.sqlite") == writers * batches * batch


def test_retention_by_age_for_the_store_and_for_one_collection(tmp_path: Path) -> None:
    clock = Clock(1_000.0)
    store = ExampleStore(
        tmp_path / "e.sqlite",
        retention=RetentionPolicy(max_age_s=100.0),
        collection_retention={"short": RetentionPolicy(max_age_s=10.0)},
        clock=clock,
    )
    with store:
        _append(store, "long", [1.0], ts=[950.0])
        _append(store, "short", [1.0, 2.0], ts=[985.0, 995.0])
        clock.now = 1_000.0
        _append(store, "short", [3.0])  # stamped now; the one at 985 is older than 10 s
        assert _values(store, collection="short") == [2.0, 3.0]
        clock.now = 1_060.0
        _append(store, "short", [4.0])  # the store's 100 s: the one at 950 goes, in the other collection too
        assert _values(store, collection="long") == []
        assert _values(store, collection="short") == [4.0]
        clock.now = 2_000.0
        assert store.prune() == 1  # ages pass without appends: prune applies them
        assert [s.rows for s in store.stats()] == [0, 0]
    assert _consistent(tmp_path / "e.sqlite") == 0


def test_retention_by_rows_drops_the_oldest_first_across_collections(tmp_path: Path) -> None:
    with ExampleStore(
        tmp_path / "e.sqlite",
        retention=RetentionPolicy(max_rows=5),
        collection_retention={"a": RetentionPolicy(max_rows=3)},
        clock=Clock(),
    ) as store:
        _append(store, "a", [1, 2, 3, 4], ts=[1, 2, 3, 4])
        assert _values(store, collection="a") == [2, 3, 4]  # the collection's own cap
        _append(store, "b", [10, 11, 12], ts=[1.5, 5, 6])  # 6 in the store: the oldest of all goes (b's 10)
        assert _values(store, collection="a") == [2, 3, 4] and _values(store, collection="b") == [11, 12]
        _append(store, "b", [13], ts=[0.5])  # older than everything kept: it is the one dropped
        _append(store, "a", [5], ts=[7])  # a's cap drops its 2, the store's cap is then met
        assert _values(store, collection="a") == [3, 4, 5] and _values(store, collection="b") == [11, 12]
        assert sum(s.rows for s in store.stats()) == 5
    assert _consistent(tmp_path / "e.sqlite") == 5


def test_retention_by_bytes_keeps_the_encoded_rows_within_the_limit(tmp_path: Path) -> None:
    row_bytes = RowSchema.of({"label": np.zeros(1, np.int64), "c:v": np.zeros(1)}).row_bytes  # 5 + 8 + 8
    with ExampleStore(
        tmp_path / "e.sqlite",
        retention=RetentionPolicy(max_bytes=10 * row_bytes),
        collection_retention={"small": RetentionPolicy(max_bytes=2 * row_bytes + 1)},
    ) as store:
        for i in range(6):
            _append(store, "big", [float(2 * i), float(2 * i + 1)], ts=[2 * i, 2 * i + 1])
        _append(store, "small", [100.0, 101.0, 102.0], ts=[20, 21, 22])
        stats = {s.name: s for s in store.stats()}
        assert stats["small"].rows == 2 and stats["small"].bytes <= 2 * row_bytes + 1
        assert sum(s.bytes for s in stats.values()) <= 10 * row_bytes
        assert _values(store, collection="big") == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]  # newest kept
    with ExampleStore(tmp_path / "e.sqlite", retention=RetentionPolicy(max_bytes=row_bytes - 1)) as store:
        _append(store, "big", [1.0])  # not even one row fits: nothing is kept
        assert sum(s.rows for s in store.stats()) == 0
    assert _consistent(tmp_path / "e.sqlite") == 0


def test_retention_is_stored_in_the_file_for_openers_that_give_none(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    ExampleStore(
        path, retention=RetentionPolicy(max_rows=3), collection_retention={"a": RetentionPolicy(max_rows=1)}
    ).close()
    with ExampleStore(path) as sensor_process:  # opened with just the path, as a separate sensor process would
        assert sensor_process.retention == RetentionPolicy(max_rows=3)
        assert sensor_process.collection_retention == {"a": RetentionPolicy(max_rows=1)}
        _append(sensor_process, "a", [1.0, 2.0])
        _append(sensor_process, "b", [1.0, 2.0, 3.0])
        assert {s.name: s.rows for s in sensor_process.stats()} == {"a": 0, "b": 3}  # a: its cap, then the oldest
    with ExampleStore(path, retention=RetentionPolicy(max_rows=100)) as reconfigured:  # a new policy replaces it
        assert reconfigured.collection_retention == {}
    with ExampleStore(path) as again:
        assert again.retention == RetentionPolicy(max_rows=100)


def test_selection_by_collection_time_window_and_count(tmp_path: Path) -> None:
    clock = Clock(100.0)
    with ExampleStore(tmp_path / "e.sqlite", clock=clock) as store:
        _append(store, "a", [float(t) for t in range(10)], ts=[float(t) for t in range(10)])
        _append(store, "b", [50.0, 51.0], ts=[50.0, 51.0])
        assert _values(store, collection="a", since=3, until=6) == [3.0, 4.0, 5.0]
        assert _values(store, collection="a", max_examples=3) == [7.0, 8.0, 9.0]  # newest, in append order
        clock.now = 12.0
        assert _values(store, collection="a", window_s=4.5) == [8.0, 9.0]  # since now - 4.5 = 7.5
        assert _values(store, collection="a", window_s=4.5, since=9.0) == [9.0]  # the later bound wins
        assert sorted(_values(store, since=5, until=51)) == [5.0, 6.0, 7.0, 8.0, 9.0, 50.0]  # every collection
        assert len(store.snapshot(ExampleSelection(collection="none"))) == 0
        store.append("c", {"w": [1]}, labels=[0])
        with pytest.raises(ExampleStoreError, match="hold different columns"):
            store.snapshot()
    for bad in ({"max_examples": 0}, {"window_s": -1.0}, {"since": 5.0, "until": 5.0}, {"collection": "a b"}):
        with pytest.raises(ValueError):
            ExampleSelection(**bad)  # type: ignore[arg-type]


def test_not_yet_used_examples_come_first_and_then_the_least_used(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "e.sqlite", selection=ExampleSelection(max_examples=4)) as store:
        _append(store, "s", [float(i) for i in range(10)], ts=[float(i) for i in range(10)])
        first = store.load()  # the DataSource read: remembered until the round's reply is uploaded
        assert first.columns["v"].tolist() == [6.0, 7.0, 8.0, 9.0]
        assert store.mark_used() == 4 and store.mark_used() == 0  # the pending snapshot counts once
        second = store.snapshot()
        assert second.data.columns["v"].tolist() == [2.0, 3.0, 4.0, 5.0]
        _append(store, "s", [10.0], ts=[10.0])  # a new sample is unused: it comes first
        assert store.mark_used(second) == 4
        assert _values(store, max_examples=4) == [0.0, 1.0, 9.0, 10.0]  # unused (0, 1, 10), then the newest used
        assert _values(store, max_examples=4, unused_first=False) == [7.0, 8.0, 9.0, 10.0]
        stats = store.stats()[0]
        assert (stats.rows, stats.unused) == (11, 3)


def test_an_empty_store_declines_the_task_as_no_data(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "e.sqlite", selection=ExampleSelection(collection="vib")) as store:
        with pytest.raises(TaskDeclined) as info:
            store.load()
        assert info.value.reason == "no-data" and "'vib'" in info.value.detail
        assert store.snapshot().data.columns == {}


def test_import_npz_appends_the_records_of_a_data_file(tmp_path: Path) -> None:
    npz = tmp_path / "d.npz"
    t = np.array([5.0, 6.0, 7.0])
    np.savez(
        npz,
        temp=np.array([1.0, 2.0, 3.0], np.float32),
        ts=t,
        label=np.array([0, 1, 0]),
        x=np.ones((3, 2)),
        device_class=np.array("rpi4b"),
    )
    with ExampleStore(tmp_path / "e.sqlite") as store:
        assert store.import_npz(npz, "imported", timestamps="ts", chunk_rows=2) == 3
        data = store.snapshot().data
        assert data.columns["temp"].tolist() == [1.0, 2.0, 3.0] and data.labels.tolist() == [0, 1, 0]
        assert data.x is not None and data.x.shape == (3, 2) and data.device_class == "rpi4b"
        (stats,) = store.stats()
        assert (stats.oldest, stats.newest, stats.device_class) == (5.0, 7.0, "rpi4b")
        with pytest.raises(ExampleStoreError, match="no array 'when'"):
            store.import_npz(npz, "imported", timestamps="when")
        np.savez(tmp_path / "nolabel.npz", temp=t)
        with pytest.raises(ExampleStoreError, match="no 'label' array"):
            store.import_npz(tmp_path / "nolabel.npz", "imported")
        with pytest.raises(ExampleStoreError, match="cannot import"):
            store.import_npz(tmp_path / "missing.npz", "imported")


def test_a_file_that_is_not_an_example_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ExampleStoreError, match="cannot open the example store"):
        ExampleStore(tmp_path / "junk.sqlite")
    db = sqlite3.connect(tmp_path / "other.sqlite")
    db.executescript(
        "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO store_meta VALUES ('format', 'x-9');"
    )
    db.close()
    with pytest.raises(ExampleStoreError, match="format 'x-9'"):
        ExampleStore(tmp_path / "other.sqlite")


WRITER = """
import sys
import numpy as np
from flclient import ExampleStore, RetentionPolicy
store = ExampleStore(sys.argv[1], retention=RetentionPolicy(max_rows=3000))
i = 0
while True:
    store.append("s", {"seq": np.arange(i * 50, (i + 1) * 50)}, labels=np.zeros(50, np.int64))
    i += 1
    if i == 20:
        print("appending", flush=True)
"""


def test_a_writer_killed_mid_append_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "appending"
        proc.send_signal(signal.SIGKILL)  # somewhere inside an append (or between two): never half of one
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    kept = _consistent(path)
    assert kept >= 20 * 50 and kept % 50 == 0  # whole appends, retention applied with them
    with ExampleStore(path) as store:
        seq = store.snapshot(ExampleSelection(max_examples=10_000)).data.columns["seq"]
        assert seq.tolist() == list(range(int(seq[0]), int(seq[0]) + kept))  # the newest, contiguous
        store.append("s", {"seq": [-1]}, labels=[0])  # it takes appends again, within the writer's stored limit
        assert store.stats()[0].rows == min(kept + 1, 3000)
