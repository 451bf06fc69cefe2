"""The on-device example store: a SQLite (WAL) file that a daemon appends samples to while rounds run.

A daemon's sensor threads :meth:`ExampleStore.append` the feature module's input columns, a label and a timestamp
per sample to a named *collection*; retention (maximum age, rows, bytes; for the whole store and per collection)
is enforced in the same transaction as the append, so the file never grows past its limits. A round reads one
consistent *snapshot* (one read transaction) chosen by an :class:`ExampleSelection` - a time window, a collection,
at most N examples, the least-used first - and the examples a round consumed are counted as used once its reply
is uploaded (:meth:`ExampleStore.mark_used`), so that the next round starts with the ones it has not seen, as a
resumption token would. The store is a :class:`~flclient.DataSource`: ``Client`` builds one from the ``[data]``
table of ``device.toml`` (:class:`ExampleStoreConfig`) and the task executor reads it at each task. Example::

    store = ExampleStore("examples.sqlite", retention=RetentionPolicy(max_age_s=7 * 86400, max_bytes=64 << 20))
    store.append("vibration", {"rms_g": rms, "peak_hz": peak}, labels=faults)   # from any thread
    snapshot = store.snapshot(ExampleSelection(collection="vibration", window_s=86400, max_examples=5000))
    store.mark_used(snapshot)                                                   # after the round was uploaded

Each collection has one row layout (its *schema*: the label, the optional dense extras ``x`` and the columns, each
with a dtype and a per-row shape), fixed by its first append; later appends are cast to it (same kind) or refused.
A row is stored with codec v1: 1 byte version, the CRC-32 of the body (4 bytes, little-endian), then the body - the
fields packed little-endian in the schema's order, without padding - so that every float and integer dtype comes
back bit for bit and a corrupt row is refused (:class:`~flclient.ExampleStoreError`) instead of trained on.

The file may be shared between processes: a sensor process can append while ``flclient run`` (the bundled
daemon) trains from it, and ``flclient data stats|import|prune`` work beside both; SQLite serialises the writers.

Durability: the file is in WAL mode with ``synchronous=NORMAL``: a killed process (or a crashed daemon) leaves the
store as of its last committed append, every append is all or nothing, and a power cut may lose the last appends
but never corrupts the file. Samples are replaceable, an fsync per sensor batch is not affordable on an SD card.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import math
import re
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._data import LocalData, NpzDataSource
from ._errors import DeviceConfigError, ExampleStoreError, TaskDeclined
from ._sqlite import SqliteFile
from ._tables import check_keys, config_path

__all__ = [
    "CODEC_VERSION",
    "CollectionStats",
    "ExampleSelection",
    "ExampleSnapshot",
    "ExampleStore",
    "ExampleStoreConfig",
    "RetentionPolicy",
    "RowSchema",
    "decode_rows",
    "encode_rows",
]

CODEC_VERSION = 1
"""The row codec this release writes and reads."""

_HEADER = struct.Struct("<BI")  # codec version, CRC-32 of the body
_FORMAT = "flclient-examples-1"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KINDS = "biufS"  # bool, signed and unsigned integers, floats, fixed-width bytes (ascii columns)
_LABEL, _X, _COLUMN = "label", "x", "c:"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('format', '{_FORMAT}');
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    schema TEXT NOT NULL,
    row_bytes INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    device_class TEXT
);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection INTEGER NOT NULL REFERENCES collections (id),
    ts REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    row BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_collection_time ON examples (collection, ts);
"""


# -- retention and selection -----------------------------------------------------------------------------------------
def _positive(value: object, name: str, *, integer: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """How much a store (or one collection) keeps: examples older than ``max_age_s`` seconds go, and beyond
    ``max_rows`` examples or ``max_bytes`` of encoded rows the oldest go first. ``None`` means no limit.

    ``max_bytes`` bounds the encoded examples; the file is larger by SQLite's pages and indexes (about 10-30 %),
    and freed pages are reused rather than returned to the filesystem (``flclient data prune --vacuum`` does).
    """

    max_age_s: float | None = None
    max_rows: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        _positive(self.max_age_s, "max_age_s", integer=False)
        _positive(self.max_rows, "max_rows", integer=True)
        _positive(self.max_bytes, "max_bytes", integer=True)

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return (self.max_age_s, self.max_rows, self.max_bytes) != (None, None, None)

    def row_cap(self, row_bytes: int) -> int | None:
        """The most rows of ``row_bytes`` each that fit both the row and the byte limit (None: no cap)."""
        caps = [
            c for c in (self.max_rows, None if self.max_bytes is None else self.max_bytes // row_bytes) if c is not None
        ]
        return min(caps) if caps else None


@dataclass(frozen=True, kw_only=True)
class ExampleSelection:
    """What a task reads: examples of ``collection`` (every collection when None; they must have the same
    columns) with a timestamp in ``[since, until)`` and within the last ``window_s`` seconds, at most
    ``max_examples`` of them (the memory a round needs is bounded by it), the least-used first when
    ``unused_first`` (newest first among equals), else simply the newest. The snapshot lists them in append order.
    """

    collection: str | None = None
    since: float | None = None
    until: float | None = None
    window_s: float | None = None
    max_examples: int = 10_000
    unused_first: bool = True

    def __post_init__(self) -> None:
        if self.collection is not None and not _NAME.fullmatch(self.collection):
            raise ValueError(f"collection must be 1-64 letters, digits, '.', '_' or '-', got {self.collection!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a timestamp in seconds, got {value!r}")
        if self.since is not None and self.until is not None and not self.since < self.until:
            raise ValueError(f"since ({self.since}) must be before until ({self.until})")
        _positive(self.window_s, "window_s", integer=False)
        _positive(self.max_examples, "max_examples", integer=True)
        if not isinstance(self.unused_first, bool):
            raise ValueError(f"unused_first must be true or false, got {self.unused_first!r}")


# -- the row codec ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSchema:
    """The row layout of a collection: ``(field, numpy dtype string, per-row shape)`` in storage order; the fields
    are ``label``, optionally ``x``, then ``c:<column>`` for each input column, sorted by name."""

    fields: tuple[tuple[str, str, tuple[int, ...]], ...]
    dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            dtype = np.dtype([(name, np.dtype(d), shape) for name, d, shape in self.fields])
        except (TypeError, ValueError) as exc:
            raise ExampleStoreError(f"an invalid row layout {self.fields!r}: {exc}") from exc
        object.__setattr__(self, "dtype", dtype)

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> RowSchema:
        """The layout of the given storage fields (already normalised by :func:`_field_array`)."""
        order = [f for f in (_LABEL, _X) if f in arrays] + sorted(f for f in arrays if f.startswith(_COLUMN))
        return cls(tuple((f, arrays[f].dtype.str, tuple(arrays[f].shape[1:])) for f in order))

    @property
    def body_bytes(self) -> int:
        """Bytes of one row's body."""
        return int(self.dtype.itemsize)

    @property
    def row_bytes(self) -> int:
        """Bytes of one encoded row (header + body)."""
        return _HEADER.size + self.body_bytes

    @property
    def columns(self) -> tuple[str, ...]:
        """The input column names."""
        return tuple(f[len(_COLUMN) :] for f, _, _ in self.fields if f.startswith(_COLUMN))

    @property
    def has_x(self) -> bool:
        """Whether rows carry dense extras ``x``."""
        return any(f == _X for f, _, _ in self.fields)

    def to_json(self) -> str:
        """The canonical text stored with the collection (equal layouts give equal text)."""
        return json.dumps({"codec": CODEC_VERSION, "fields": [[f, d, list(s)] for f, d, s in self.fields]})

    @classmethod
    def from_json(cls, text: str) -> RowSchema:
        """Parse :meth:`to_json`; anything else is an :class:`~flclient.ExampleStoreError`."""
        try:
            raw = json.loads(text)
            if raw["codec"] != CODEC_VERSION:
                raise ExampleStoreError(f"a collection of row codec {raw['codec']}; this release reads {CODEC_VERSION}")
            fields = tuple((str(f), str(d), tuple(int(k) for k in s)) for f, d, s in raw["fields"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ExampleStoreError(f"a collection's row layout is unreadable: {exc}") from exc
        return cls(fields)


def encode_rows(schema: RowSchema, arrays: Mapping[str, np.ndarray]) -> list[bytes]:
    """Encode rows (one per element of the leading axis of each field's array) with codec v1."""
    n = len(arrays[_LABEL])
    rec = np.empty(n, dtype=schema.dtype)
    for name, _, _ in schema.fields:
        rec[name] = arrays[name]
    body, size, pack, crc = rec.tobytes(), schema.body_bytes, _HEADER.pack, zlib.crc32
    rows = []
    for start in range(0, n * size, size) if size else ():
        part = body[start : start + size]
        rows.append(pack(CODEC_VERSION, crc(part)) + part)
    if not size:
        rows = [pack(CODEC_VERSION, crc(b""))] * n
    return rows


def decode_rows(
    schema: RowSchema, rows: Sequence[bytes], *, where: str = "", ids: Sequence[int] | None = None
) -> np.ndarray:
    """Decode codec-v1 rows into one structured array of ``schema.dtype``; a row of the wrong length, another
    codec version or a failed CRC-32 raises :class:`~flclient.ExampleStoreError` naming the row (its example id
    when ``ids`` are given) and ``where`` it is."""
    bodies = []
    for i, row in enumerate(rows):
        problem = _row_problem(schema, row)
        if problem is not None:
            name = f"example {ids[i]}" if ids is not None else f"row {i}"
            raise ExampleStoreError(f"{name}{where} {problem}")
        bodies.append(row[_HEADER.size :])
    if not schema.body_bytes:
        return np.zeros(len(bodies), dtype=schema.dtype)
    return np.frombuffer(b"".join(bodies), dtype=schema.dtype, count=len(bodies))


def _row_problem(schema: RowSchema, row: object) -> str | None:
    """What is wrong with one encoded row (None: nothing)."""
    if not isinstance(row, bytes) or len(row) != schema.row_bytes:
        got = len(row) if isinstance(row, bytes) else type(row).__name__
        return f"is corrupt: {got} bytes where the layout has {schema.row_bytes}"
    version, check = _HEADER.unpack_from(row)
    if version != CODEC_VERSION:
        return f"is of codec {version}; this release reads {CODEC_VERSION}"
    if zlib.crc32(row[_HEADER.size :]) != check:
        return "is corrupt: its CRC-32 does not match its bytes"
    return None


def _field_array(value: object, what: str, n: int | None) -> np.ndarray:
    """One field as a little-endian array of a storable kind with a leading row axis (``n`` rows when given)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        raise ExampleStoreError(f"{what} holds text: store ascii columns as bytes (numpy dtype 'S<width>')")
    if arr.dtype.kind not in _KINDS:
        raise ExampleStoreError(f"{what} has dtype {arr.dtype}: only bool, integer, float and bytes can be stored")
    if arr.ndim == 0:
        raise ExampleStoreError(f"{what} must have one row per label, got a scalar")
    if n is not None and len(arr) != n:
        raise ExampleStoreError(f"{what} has {len(arr)} rows but there are {n} labels")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def _convert(arr: np.ndarray, dtype: np.dtype[Any], what: str) -> np.ndarray:
    """``arr`` in the collection's ``dtype``: integers that fit, numbers into floats, bytes that fit; else refused."""
    src, dst = arr.dtype.kind, dtype.kind
    if arr.dtype == dtype:
        return arr
    if dst in "iu" and src in "biu":
        info = np.iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise ExampleStoreError(f"{what} is {dtype}: values from {arr.min()} to {arr.max()} do not fit")
        return arr.astype(dtype)
    if dst == "f" and src in "biuf":
        return arr.astype(dtype)
    if dst == "S" and src == "S":
        if arr.size and arr.dtype.itemsize > dtype.itemsize and int(np.char.str_len(arr).max()) > dtype.itemsize:
            raise ExampleStoreError(f"{what} holds at most {dtype.itemsize} bytes per value")
        return arr.astype(dtype)
    raise ExampleStoreError(f"{what} is {dtype}, got {arr.dtype}")


def _delete_oldest(db: sqlite3.Connection, count: int, cids: Sequence[int]) -> dict[int, int]:
    """Delete the ``count`` oldest examples (by timestamp, then append order) over every collection; returns how
    many went from each. Each collection's oldest come from its (collection, ts) index and are merged here: a
    store-wide time index would cost every append a third B-tree (about a third more CPU per sample)."""
    if len(cids) == 1:
        (cid,) = cids
        oldest = "SELECT id FROM examples WHERE collection = ? ORDER BY ts, id LIMIT ?"
        n = db.execute(f"DELETE FROM examples WHERE id IN ({oldest})", (cid, count)).rowcount
        return {cid: n} if n else {}
    heads = [
        db.execute(
            "SELECT ts, id, collection FROM examples WHERE collection = ? ORDER BY ts, id LIMIT ?", (cid, count)
        ).fetchall()
        for cid in cids
    ]
    victims = list(itertools.islice(heapq.merge(*heads), count))
    ids = json.dumps([example_id for _, example_id, _ in victims])
    db.execute("DELETE FROM examples WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    per: dict[int, int] = {}
    for _, _, cid in victims:
        per[cid] = per.get(cid, 0) + 1
    return per


_INSERT_ROWS = 500  # rows per INSERT statement: 1500 parameters, far below SQLite's limit of 32766


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO examples (collection, ts, row) VALUES " + ", ".join(["(?, ?, ?)"] * rows)


def _insert(db: sqlite3.Connection, collection: int, ts: list[float], rows: list[bytes]) -> None:
    """Insert rows a few hundred per statement: SQLite then works through a batch without the GIL, where one
    statement per row would hand the GIL back and forth with the training thread twice per row."""
    for start in range(0, len(rows), _INSERT_ROWS):
        part = rows[start : start + _INSERT_ROWS]
        params = list(itertools.chain.from_iterable(zip(itertools.repeat(collection), ts[start:], part)))
        db.execute(_insert_sql(len(part)), params)


# -- stats and snapshots ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CollectionStats:
    """What one collection holds: examples, encoded bytes, how many no round has used, the time span, columns."""

    name: str
    rows: int
    bytes: int
    unused: int
    oldest: float | None
    newest: float | None
    columns: tuple[str, ...]
    device_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "rows": self.rows,
            "bytes": self.bytes,
            "unused": self.unused,
            "oldest": self.oldest,
            "newest": self.newest,
            "columns": list(self.columns),
            "device_class": self.device_class,
        }


@dataclass(frozen=True, kw_only=True, eq=False)
class ExampleSnapshot:
    """One consistent read of the store: the records (``data``), the ids of the examples they came from (in append
    order: the resumption token :meth:`ExampleStore.mark_used` takes), and when and how they were selected."""

    data: LocalData
    ids: np.ndarray
    selection: ExampleSelection
    taken_at: float

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Collection:
    id: int
    name: str
    schema: RowSchema
    row_bytes: int
    device_class: str | None


# -- the store -------------------------------------------------------------------------------------------------------
class ExampleStore(SqliteFile):
    """The on-device example store (see the module docstring); a :class:`~flclient.DataSource`.

    ``retention`` limits the whole store, ``collection_retention`` single collections (both apply); they are
    stored in the file, and a store opened with neither applies the stored ones (a sensor process that opens the
    device's store with just its path stays within the limits of the device's ``[data]`` table);
    ``selection`` is what :meth:`load` reads; ``clock`` gives the time used for default timestamps, ages and
    windows. Appends may come from any number of threads while a round reads a snapshot: writes are serialised,
    and reads use their own connection, so a round never waits for a sensor nor sees half of an append.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention: RetentionPolicy | None = None,
        collection_retention: Mapping[str, RetentionPolicy] | None = None,
        selection: ExampleSelection | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> None:
        self.retention = retention or RetentionPolicy()
        self.collection_retention = dict(collection_retention or {})
        for name in self.collection_retention:
            if not _NAME.fullmatch(name):
                raise ValueError(f"collection name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        self.selection = selection or ExampleSelection()
        self._clock = clock
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._pending: ExampleSnapshot | None = None
        self._collections: dict[str, _Collection] = {}
        self._reader: sqlite3.Connection | None = None
        path = Path(path)
        super().__init__(
            path,
            schema=_SCHEMA,
            open_error=lambda why: ExampleStoreError(f"{path}: cannot open the example store: {why}"),
            timeout_s=timeout_s,
        )
        try:
            db = self._conn()
            db.execute("PRAGMA synchronous=NORMAL")  # see the module docstring: consistent, not fsynced per append
            (fmt,) = db.execute("SELECT value FROM store_meta WHERE key = 'format'").fetchone()
            if fmt != _FORMAT:
                raise ExampleStoreError(f"{path} is a store of format {fmt!r}; this release reads {_FORMAT!r}")
            self._retention_of_file(db, inherit=retention is None and collection_retention is None)
            self._reader = sqlite3.connect(path, isolation_level=None, timeout=timeout_s, check_same_thread=False)
        except sqlite3.Error as exc:
            self.close()
            raise ExampleStoreError(f"{path}: cannot open the example store: {exc}") from exc
        except ExampleStoreError:
            self.close()
            raise

    def _retention_of_file(self, db: sqlite3.Connection, *, inherit: bool) -> None:
        """Retention lives in the file: an opener that gives none applies the stored one (a sensor process opening
        the daemon's store keeps it within the device's limits); one that gives a policy stores it."""
        if inherit:
            row = db.execute("SELECT value FROM store_meta WHERE key = 'retention'").fetchone()
            if row is None:
                return
            try:
                raw = json.loads(row[0])
                self.retention = RetentionPolicy(**raw["store"])
                self.collection_retention = {str(k): RetentionPolicy(**v) for k, v in raw["collections"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ExampleStoreError(f"{self.path}: its stored retention policy is unreadable: {exc}") from exc
            return
        policy = {
            "store": _policy_json(self.retention),
            "collections": {k: _policy_json(v) for k, v in sorted(self.collection_retention.items())},
        }
        db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('retention', ?)", (json.dumps(policy),))

    @classmethod
    def from_config(cls, config: ExampleStoreConfig, *, clock: Callable[[], float] = time.time) -> ExampleStore:
        """The store a ``[data]`` table describes."""
        return cls(
            config.store,
            retention=config.retention,
            collection_retention=config.collection_retention,
            selection=config.selection,
            clock=clock,
        )

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        super()._release()

    # -- writing -----------------------------------------------------------------------------------------------------
    def append(
        self,
        collection: str,
        columns: Mapping[str, object],
        labels: object,
        timestamps: object = None,
        *,
        x: object = None,
    ) -> None:
        """Append one example per label to ``collection`` (created by its first append): the feature module's input
        ``columns`` by name, the ``labels``, ``timestamps`` in seconds (default: now) and optional dense extras
        ``x``. All or nothing; retention is enforced in the same transaction. Safe to call from any thread.

        Each call is one transaction, so append blocks of samples (a sensor's buffer of tens of milliseconds,
        hundreds to thousands of rows) rather than one at a time: ``benchmarks/bench_store.py`` measures 20k
        samples/s in blocks of 1000 costing a round beside it a few per cent, and in blocks of 200 several times
        that (every statement hands the GIL to the training thread and back).
        """
        self._check_open()
        if not isinstance(collection, str) or not _NAME.fullmatch(collection):
            raise ValueError(f"collection must be 1-64 letters, digits, '.', '_' or '-', got {collection!r}")
        label_arr = _field_array(labels, "labels", None)
        n = len(label_arr)
        arrays = {_LABEL: label_arr}
        if x is not None:
            arrays[_X] = _field_array(x, "x", n)
        for name, value in columns.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"column names must be non-empty strings, got {name!r}")
            arrays[_COLUMN + name] = _field_array(value, f"column {name!r}", n)
        if timestamps is None:
            ts = np.full(n, float(self._clock()))
        else:
            ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
            if len(ts) != n:
                raise ExampleStoreError(f"timestamps has {len(ts)} values but there are {n} labels")
            if not np.isfinite(ts).all():
                raise ExampleStoreError("timestamps must be finite seconds")
        if n == 0:
            return
        known = self._collections.get(collection)  # a collection's layout never changes once created
        encoded = encode_rows(known.schema, self._cast(known, arrays)) if known is not None else None
        with self._write_lock:  # encoded before taking the lock: several sensor threads encode in parallel
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    info = known or self._collection_for(db, collection, arrays)
                    rows = encoded if encoded is not None else encode_rows(info.schema, self._cast(info, arrays))
                    _insert(db, info.id, ts.tolist(), rows)
                    self._enforce(db, [info], {info.id: n})
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot append to {collection!r}: {exc}") from exc
            self._collections[collection] = info  # only once committed: a rolled-back creation leaves no phantom

    def _collection_for(self, db: sqlite3.Connection, name: str, arrays: Mapping[str, np.ndarray]) -> _Collection:
        info = self._collections.get(name) or self._lookup(db, name)
        if info is None:
            schema = RowSchema.of(arrays)
            cur = db.execute(
                "INSERT INTO collections (name, schema, row_bytes) VALUES (?, ?, ?)",
                (name, schema.to_json(), schema.row_bytes),
            )
            assert cur.lastrowid is not None
            info = _Collection(cur.lastrowid, name, schema, schema.row_bytes, None)
        return info

    def _lookup(self, db: sqlite3.Connection, name: str) -> _Collection | None:
        row = db.execute(
            "SELECT id, schema, row_bytes, device_class FROM collections WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        info = _Collection(int(row[0]), name, RowSchema.from_json(row[1]), int(row[2]), row[3])
        self._collections[name] = info
        return info

    def _cast(self, info: _Collection, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The appended fields in the collection's dtypes; refuses other columns, shapes or kinds of values."""
        fields = {f: (np.dtype(d), s) for f, d, s in info.schema.fields}
        if set(arrays) != set(fields):
            have = sorted(f[len(_COLUMN) :] for f in arrays if f.startswith(_COLUMN))
            want = list(info.schema.columns)
            if have != want:
                raise ExampleStoreError(f"collection {info.name!r} holds columns {want}, the append gave {have}")
            x_note = "has" if info.schema.has_x else "has no"
            raise ExampleStoreError(f"collection {info.name!r} {x_note} dense extras x; append accordingly")
        out = {}
        for name, arr in arrays.items():
            dtype, shape = fields[name]
            what = "labels" if name == _LABEL else name if name == _X else f"column {name[len(_COLUMN) :]!r}"
            if tuple(arr.shape[1:]) != shape:
                raise ExampleStoreError(
                    f"{what} of collection {info.name!r} has rows of shape {list(shape)}, got {list(arr.shape[1:])}"
                )
            out[name] = _convert(arr, dtype, f"{what} of collection {info.name!r}")
        return out

    # -- retention ---------------------------------------------------------------------------------------------------
    def prune(self, *, vacuum: bool = False, verify: bool = False) -> int:
        """Enforce retention on every collection now (ages pass without appends); returns the examples removed.
        ``verify`` also checks every stored row and drops the corrupt ones; ``vacuum`` gives the freed pages back
        to the filesystem (it rewrites the file: slow on a big store)."""
        self._check_open()
        removed = self._delete(self._corrupt_ids()) if verify else 0
        with self._write_lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    removed += self._enforce(db, self._all(db), {})
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                if vacuum:
                    db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot prune: {exc}") from exc
        return removed

    def _corrupt_ids(self, chunk: int = 5_000) -> list[int]:
        """The ids of every stored row that does not decode, read ``chunk`` rows at a time (bounded memory)."""
        bad: list[int] = []
        last = 0
        with self._read_lock:
            db = self._reader
            assert db is not None
            try:
                schemas = {
                    cid: RowSchema.from_json(text) for cid, text in db.execute("SELECT id, schema FROM collections")
                }
                while True:
                    rows = db.execute(
                        "SELECT id, collection, row FROM examples WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)
                    ).fetchall()
                    if not rows:
                        return bad
                    bad += [i for i, cid, row in rows if _row_problem(schemas[cid], bytes(row)) is not None]
                    last = rows[-1][0]
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot verify its rows: {exc}") from exc

    def _delete(self, ids: Sequence[int]) -> int:
        """Delete examples by id (the counters follow); returns how many were still there."""
        if not ids:
            return 0
        with self._write_lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    listed = json.dumps(list(ids))
                    per = db.execute(
                        "SELECT collection, COUNT(*) FROM examples WHERE id IN (SELECT value FROM json_each(?)) "
                        "GROUP BY collection",
                        (listed,),
                    ).fetchall()
                    db.execute("DELETE FROM examples WHERE id IN (SELECT value FROM json_each(?))", (listed,))
                    for cid, n in per:
                        db.execute("UPDATE collections SET rows = rows - ? WHERE id = ?", (n, cid))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot delete examples: {exc}") from exc
        return sum(int(n) for _, n in per)

    def _all(self, db: sqlite3.Connection) -> list[_Collection]:
        names = [r[0] for r in db.execute("SELECT name FROM collections ORDER BY id")]
        found = [self._collections.get(n) or self._lookup(db, n) for n in names]
        return [c for c in found if c is not None]

    def _enforce(self, db: sqlite3.Connection, touched: Iterable[_Collection], added: Mapping[int, int]) -> int:
        """Apply the collections' own limits, then the store's, inside the caller's write transaction, and write
        the row counters once (``added`` rows were just inserted); returns how many examples were removed.

        Few statements on purpose: each one hands the GIL to the training thread and back, which is what an
        append costs a round that runs beside it."""
        now = float(self._clock())
        rows = {cid: [int(n), int(size)] for cid, n, size in db.execute("SELECT id, rows, row_bytes FROM collections")}
        for cid, n in added.items():
            rows[cid][0] += n
        delta = dict(added)

        def dropped(cid: int, n: int) -> None:
            rows[cid][0] -= n
            delta[cid] = delta.get(cid, 0) - n

        for info in touched:
            policy = self.collection_retention.get(info.name)
            if policy is not None and policy.limited:
                dropped(info.id, self._enforce_collection(db, info, policy, now, rows[info.id][0]))
        policy = self.retention
        if policy.max_age_s is not None:
            cutoff = now - policy.max_age_s
            for cid in [c for c, (n, _) in rows.items() if n > 0]:
                dropped(cid, db.execute("DELETE FROM examples WHERE collection = ? AND ts < ?", (cid, cutoff)).rowcount)
        while policy.max_rows is not None or policy.max_bytes is not None:  # the oldest first, over every collection
            total_rows, total_bytes = sum(n for n, _ in rows.values()), sum(n * size for n, size in rows.values())
            excess_rows = total_rows - policy.max_rows if policy.max_rows is not None else 0
            excess_bytes = total_bytes - policy.max_bytes if policy.max_bytes is not None else 0
            if excess_rows <= 0 and excess_bytes <= 0:
                break
            # At least this many rows must go (all of the largest size at best); smaller rows take another pass.
            largest = max(size for n, size in rows.values() if n > 0)
            count = max(excess_rows, -(-excess_bytes // largest))
            per = _delete_oldest(db, count, [c for c, (n, _) in rows.items() if n > 0])
            if not per:
                break
            for cid, n in per.items():
                dropped(cid, n)
        for cid, n in delta.items():
            if n:
                db.execute("UPDATE collections SET rows = rows + ? WHERE id = ?", (n, cid))
        return sum(n for n in added.values()) - sum(delta.values())

    def _enforce_collection(
        self, db: sqlite3.Connection, info: _Collection, policy: RetentionPolicy, now: float, rows: int
    ) -> int:
        """One collection's own limits (``rows`` it holds now); returns how many examples went."""
        removed = 0
        if policy.max_age_s is not None:
            removed += db.execute(
                "DELETE FROM examples WHERE collection = ? AND ts < ?", (info.id, now - policy.max_age_s)
            ).rowcount
        cap = policy.row_cap(info.row_bytes)
        if cap is not None and rows - removed > cap:
            removed += db.execute(
                "DELETE FROM examples WHERE id IN "
                "(SELECT id FROM examples WHERE collection = ? ORDER BY ts, id LIMIT ?)",
                (info.id, rows - removed - cap),
            ).rowcount
        return removed

    # -- reading -----------------------------------------------------------------------------------------------------
    def snapshot(self, selection: ExampleSelection | None = None) -> ExampleSnapshot:
        """Read the selected examples (``selection``, default the store's) in one read transaction. A corrupt
        stored row raises :class:`~flclient.ExampleStoreError` naming it (``flclient data prune --verify`` drops
        such rows; :meth:`load` drops them itself)."""
        snapshot, corrupt = self._read(selection or self.selection)
        if corrupt:
            problem = corrupt[0][1]
            more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
            raise ExampleStoreError(f"{problem}{more}; flclient data prune --verify drops corrupt rows")
        return snapshot

    def _read(self, sel: ExampleSelection) -> tuple[ExampleSnapshot, list[tuple[int, str]]]:
        """The snapshot, or (with an empty snapshot) the id and the problem of each corrupt row it selected."""
        self._check_open()
        now = float(self._clock())
        with self._read_lock:
            db = self._reader
            assert db is not None  # set by __init__, cleared only by close()
            try:
                db.execute("BEGIN")
                try:
                    rows = db.execute("SELECT id, name, schema, row_bytes, device_class FROM collections").fetchall()
                    chosen = [
                        _Collection(int(r[0]), r[1], RowSchema.from_json(r[2]), int(r[3]), r[4])
                        for r in rows
                        if sel.collection is None or r[1] == sel.collection
                    ]
                    picked = self._select(db, chosen, sel, now) if chosen else []
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot read a snapshot: {exc}") from exc
        if not chosen:
            data = LocalData(columns={}, labels=np.zeros(0, dtype=np.int64))
            return ExampleSnapshot(data=data, ids=np.zeros(0, dtype=np.int64), selection=sel, taken_at=now), []
        for other in chosen[1:]:
            if other.schema != chosen[0].schema:
                raise ExampleStoreError(
                    f"collections {chosen[0].name!r} and {other.name!r} hold different columns: "
                    "select one ([data] collection = ...)"
                )
        picked.sort()
        schema = chosen[0].schema
        where = f" of {self.path}" if len(chosen) > 1 else f" of collection {chosen[0].name!r} in {self.path}"
        ids = [i for i, _ in picked]
        try:
            rec = decode_rows(schema, [r for _, r in picked], where=where, ids=ids)
        except ExampleStoreError:
            corrupt = [
                (i, f"example {i}{where} {problem}")
                for i, row in picked
                if (problem := _row_problem(schema, row)) is not None
            ]
            empty = ExampleSnapshot(
                data=LocalData(columns={}, labels=np.zeros(0)), ids=np.zeros(0, np.int64), selection=sel, taken_at=now
            )
            return empty, corrupt
        classes = {c.device_class for c in chosen}
        data = LocalData(
            columns={c: np.ascontiguousarray(rec[_COLUMN + c]) for c in schema.columns},
            labels=np.ascontiguousarray(rec[_LABEL]),
            x=np.ascontiguousarray(rec[_X]) if schema.has_x else None,
            device_class=classes.pop() if len(classes) == 1 else None,
        )
        return ExampleSnapshot(data=data, ids=np.asarray(ids, dtype=np.int64), selection=sel, taken_at=now), []

    @staticmethod
    def _select(
        db: sqlite3.Connection, chosen: list[_Collection], sel: ExampleSelection, now: float
    ) -> list[tuple[int, bytes]]:
        where = [f"collection IN ({', '.join('?' * len(chosen))})"]
        params: list[object] = [c.id for c in chosen]
        since = [t for t in (sel.since, None if sel.window_s is None else now - sel.window_s) if t is not None]
        if since:
            where.append("ts >= ?")
            params.append(max(since))
        if sel.until is not None:
            where.append("ts < ?")
            params.append(sel.until)
        cond = " AND ".join(where)

        def read(extra: str, order: str, limit: int) -> list[tuple[int, bytes]]:
            query = f"SELECT id, row FROM examples WHERE {cond}{extra} ORDER BY {order} LIMIT ?"
            return [(int(i), bytes(r)) for i, r in db.execute(query, [*params, limit])]

        if not sel.unused_first:
            return read("", "ts DESC, id DESC", sel.max_examples)
        # The unused ones first: new samples are the unused ones, so walking the time index from the newest ends
        # after max_examples rows; the used ones (a sort, least used first) only when there are too few of them.
        picked = read(" AND uses = 0", "ts DESC, id DESC", sel.max_examples)
        if len(picked) < sel.max_examples:
            picked += read(" AND uses > 0", "uses ASC, ts DESC, id DESC", sel.max_examples - len(picked))
        return picked

    def load(self) -> LocalData:
        """The :class:`~flclient.DataSource` read: a snapshot of the store's selection, remembered so that
        :meth:`mark_used` can count it once the round is uploaded. Declines the task (``no-data``) when empty."""
        snapshot, corrupt = self._read(self.selection)
        if corrupt:  # a damaged row is never trained on, nor does it fail every later round: it goes
            self._delete([example_id for example_id, _ in corrupt])
            snapshot = self.snapshot()
        if not len(snapshot):
            from .protocol import Code

            what = f"collection {self.selection.collection!r}" if self.selection.collection else "any collection"
            raise TaskDeclined(Code.NO_DATA, f"the example store holds no selected examples in {what}")
        with self._read_lock:
            self._pending = snapshot
        return snapshot.data

    def mark_used(self, snapshot: ExampleSnapshot | None = None) -> int:
        """Count the examples of ``snapshot`` (default: the last one :meth:`load` read, once) as used by a round;
        returns how many are still in the store. Unused-first selection then prefers the others."""
        self._check_open()
        if snapshot is None:
            with self._read_lock:
                snapshot, self._pending = self._pending, None
            if snapshot is None:
                return 0
        ids = json.dumps(snapshot.ids.tolist())
        with self._write_lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    marked = db.execute(
                        "UPDATE examples SET uses = uses + 1 WHERE id IN (SELECT value FROM json_each(?))", (ids,)
                    ).rowcount
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot mark examples used: {exc}") from exc
        return marked

    def stats(self) -> list[CollectionStats]:
        """What each collection holds (one read transaction)."""
        self._check_open()
        with self._read_lock:
            db = self._reader
            assert db is not None
            try:
                db.execute("BEGIN")
                try:
                    out = []
                    for cid, name, schema, row_bytes, rows, device_class in db.execute(
                        "SELECT id, name, schema, row_bytes, rows, device_class FROM collections ORDER BY name"
                    ).fetchall():
                        oldest, newest = db.execute(
                            "SELECT MIN(ts), MAX(ts) FROM examples WHERE collection = ?", (cid,)
                        ).fetchone()
                        (unused,) = db.execute(
                            "SELECT COUNT(*) FROM examples WHERE collection = ? AND uses = 0", (cid,)
                        ).fetchone()
                        out.append(
                            CollectionStats(
                                name=name,
                                rows=int(rows),
                                bytes=int(rows) * int(row_bytes),
                                unused=int(unused),
                                oldest=oldest,
                                newest=newest,
                                columns=RowSchema.from_json(schema).columns,
                                device_class=device_class,
                            )
                        )
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ExampleStoreError(f"{self.path}: cannot read its statistics: {exc}") from exc
        return out

    # -- import ------------------------------------------------------------------------------------------------------
    def import_npz(
        self,
        path: str | Path,
        collection: str,
        *,
        timestamps: str | None = None,
        chunk_rows: int = 10_000,
    ) -> int:
        """Append the records of an ``.npz`` data file (:class:`~flclient._data.NpzDataSource` layout) to
        ``collection``; ``timestamps`` names an array of the file holding each record's time in seconds (default:
        now). Retention applies as to any append. Returns the number of records read."""
        try:
            local = NpzDataSource(Path(path)).load()
        except KeyError as exc:
            raise ExampleStoreError(f"cannot import {path}: it has no 'label' array") from exc
        except (OSError, ValueError) as exc:
            raise ExampleStoreError(f"cannot import {path}: {exc}") from exc
        columns = dict(local.columns)
        ts: np.ndarray | None = None
        if timestamps is not None:
            if timestamps not in columns:
                raise ExampleStoreError(f"{path} has no array {timestamps!r} to take the timestamps from")
            ts = np.asarray(columns[timestamps], dtype=np.float64)
        n = len(local.labels)
        for start in range(0, n, chunk_rows):
            part = slice(start, start + chunk_rows)
            self.append(
                collection,
                {k: v[part] for k, v in columns.items()},
                local.labels[part],
                None if ts is None else ts[part],
                x=None if local.x is None else local.x[part],
            )
        if local.device_class is not None:
            with self._write_lock:
                self._conn().execute(
                    "UPDATE collections SET device_class = ? WHERE name = ?", (local.device_class, collection)
                )
        return n


def _policy_json(policy: RetentionPolicy) -> dict[str, float | int | None]:
    return {"max_age_s": policy.max_age_s, "max_rows": policy.max_rows, "max_bytes": policy.max_bytes}


# -- the [data] table of device.toml ---------------------------------------------------------------------------------
_RETENTION_KEYS = ("max_age_s", "max_rows", "max_bytes")
_SELECTION_KEYS = ("collection", "window_s", "max_examples", "unused_first")


@dataclass(frozen=True, kw_only=True)
class ExampleStoreConfig:
    """The ``[data]`` table of ``device.toml``: where the example store is, what it keeps and what a task reads::

    [data]
    store = "examples.sqlite"        # default: <state_dir>/examples.sqlite
    collection = "vibration"         # what a task reads (default: every collection; same columns)
    window_s = 86400                 # only examples of the last day
    max_examples = 5000              # at most this many per task (bounds the memory of a round)
    unused_first = true              # examples no round has used come first
    max_age_s = 604800               # retention of the whole store, enforced on append
    max_rows = 200000
    max_bytes = 67108864

    [data.collections.vibration]     # retention of one collection (max_age_s, max_rows, max_bytes)
    max_rows = 50000
    """

    store: Path
    selection: ExampleSelection = field(default_factory=ExampleSelection)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    collection_retention: Mapping[str, RetentionPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.collection_retention:
            if not _NAME.fullmatch(name):
                raise DeviceConfigError(f"data.collections: {name!r} is not a collection name (1-64 [A-Za-z0-9._-])")

    @classmethod
    def from_mapping(cls, raw: object, *, base_dir: Path, state_dir: Path) -> ExampleStoreConfig:
        """Parse the ``[data]`` table; every mistake is one :class:`~flclient.DeviceConfigError` naming the key."""
        if not isinstance(raw, dict):
            raise DeviceConfigError("[data] must be a table")
        check_keys(raw, "data", {"store", "collections", *_RETENTION_KEYS, *_SELECTION_KEYS})
        store = config_path(raw["store"], "data.store", base_dir) if "store" in raw else state_dir / "examples.sqlite"
        for key in ("window_s", "max_age_s"):
            _config_number(raw, key, "data", integer=False)
        for key in ("max_examples", "max_rows", "max_bytes"):
            _config_number(raw, key, "data", integer=True)
        if "collection" in raw and not (isinstance(raw["collection"], str) and _NAME.fullmatch(raw["collection"])):
            raise DeviceConfigError(
                f"data.collection must be a collection name (1-64 letters, digits, '.', '_', '-'), "
                f"got {raw['collection']!r}"
            )
        if "unused_first" in raw and not isinstance(raw["unused_first"], bool):
            raise DeviceConfigError(f"data.unused_first must be true or false, got {raw['unused_first']!r}")
        selection = ExampleSelection(**{k: raw[k] for k in _SELECTION_KEYS if k in raw})
        retention = RetentionPolicy(**{k: raw[k] for k in _RETENTION_KEYS if k in raw})
        per: dict[str, RetentionPolicy] = {}
        tables = raw.get("collections", {})
        if not isinstance(tables, dict):
            raise DeviceConfigError("data.collections must be a table of [data.collections.<name>] tables")
        for name, table in tables.items():
            where = f"data.collections.{name}"
            if not _NAME.fullmatch(name):
                raise DeviceConfigError(
                    f"{where}: {name!r} is not a collection name (1-64 letters, digits, '.', '_', '-')"
                )
            if not isinstance(table, dict):
                raise DeviceConfigError(f"[{where}] must be a table")
            check_keys(table, where, set(_RETENTION_KEYS))
            _config_number(table, "max_age_s", where, integer=False)
            _config_number(table, "max_rows", where, integer=True)
            _config_number(table, "max_bytes", where, integer=True)
            per[name] = RetentionPolicy(**table)
        return cls(store=store, selection=selection, retention=retention, collection_retention=per)


def _config_number(table: Mapping[str, Any], key: str, where: str, *, integer: bool) -> None:
    if key not in table:
        return
    value = table[key]
    kind = "integer" if integer else "number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or not (math.isfinite(value) and value > 0):
        raise DeviceConfigError(f"{where}.{key} must be a positive {kind}, got {value!r}")
