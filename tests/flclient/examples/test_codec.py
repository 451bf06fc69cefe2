"""The example store's row codec: exact round trip for every float, integer, bool and bytes dtype (NaN payloads
and signed zeros included), and every corruption of a row - truncated, extended, a flipped bit, another codec
version - refused with ExampleStoreError; also through the store, for a row damaged on disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ExampleStore, ExampleStoreError
from flclient._examples import CODEC_VERSION, RowSchema, decode_rows, encode_rows

NUMERIC = st.sampled_from(["<f2", "<f4", "<f8", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "|b1"])
DTYPES = st.one_of(NUMERIC, st.integers(1, 8).map(lambda k: f"|S{k}"))


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 12))
    fields: dict[str, np.ndarray] = {}
    names = draw(st.lists(st.text("abcxyz_", min_size=1, max_size=4), unique=True, max_size=4))
    for name in ["label", *(["x"] if draw(st.booleans()) else []), *(f"c:{c}" for c in names)]:
        dtype = np.dtype(draw(DTYPES))
        shape = (n, *draw(st.sampled_from([(), (1,), (3,), (2, 2)])))
        if dtype.kind in "fiu":  # any bit pattern: NaN payloads, -0.0, infinities, extremes
            raw = draw(hnp.arrays(np.uint8, (int(np.prod(shape)) * dtype.itemsize,)))
            fields[name] = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
        else:
            fields[name] = draw(hnp.arrays(dtype, shape))
    return fields


@given(_rows())
def test_rows_round_trip_bit_for_bit(fields: dict[str, np.ndarray]) -> None:
    schema = RowSchema.of(fields)
    encoded = encode_rows(schema, fields)
    assert len(encoded) == len(fields["label"]) and all(len(r) == schema.row_bytes for r in encoded)
    decoded = decode_rows(schema, encoded)
    for name, arr in fields.items():
        got = decoded[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert got.tobytes() == arr.tobytes(), name  # bytes equal: NaN payloads and -0.0 survive
    assert RowSchema.from_json(schema.to_json()) == schema


@given(_rows().filter(lambda f: len(f["label"]) > 0), st.data())
def test_every_corrupted_row_is_refused(fields: dict[str, np.ndarray], data: st.DataObject) -> None:
    schema = RowSchema.of(fields)
    rows = encode_rows(schema, fields)
    i = data.draw(st.integers(0, len(rows) - 1))
    row = bytearray(rows[i])
    how = data.draw(st.sampled_from(["truncate", "extend", "flip", "version"]))
    if how == "truncate":
        row = row[: data.draw(st.integers(0, len(row) - 1))]
    elif how == "extend":
        row += data.draw(st.binary(min_size=1, max_size=8))
    elif how == "flip":
        bit = data.draw(st.integers(0, len(row) * 8 - 1))
        if bit < 8:  # a flipped version byte is a codec error too, any other bit must fail the CRC
            bit += 8
        row[bit // 8] ^= 1 << (bit % 8)
    else:
        row[0] = data.draw(st.integers(0, 255).filter(lambda v: v != CODEC_VERSION))
    rows[i] = bytes(row)
    with pytest.raises(ExampleStoreError, match=f"row {i}"):
        decode_rows(schema, rows, where=" of test")


def _damage(path: Path, example_id: int) -> None:
    db = sqlite3.connect(path)
    (row,) = db.execute("SELECT row FROM examples WHERE id = ?", (example_id,)).fetchone()
    db.execute("UPDATE examples SET row = ? WHERE id = ?", (row[:-1] + bytes([row[-1] ^ 0x10]), example_id))
    db.commit()
    db.close()


def test_a_row_damaged_on_disk_is_never_trained_on(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    with ExampleStore(path) as store:
        store.append("s", {"t": np.arange(6.0)}, labels=np.arange(6))
    _damage(path, 2)
    _damage(path, 5)
    with ExampleStore(path) as store:
        with pytest.raises(ExampleStoreError, match=r"example 2 of collection 's' .* CRC-32 .*\(and 1 more\)"):
            store.snapshot()
        data = store.load()  # the task path drops the damaged rows and reads the others
        assert data.columns["t"].tolist() == [0.0, 2.0, 3.0, 5.0] and store.stats()[0].rows == 4
    _damage(path, 4)
    with ExampleStore(path) as store:
        assert store.prune(verify=True) == 1  # the maintenance path finds it without a round
        assert store.snapshot().data.columns["t"].tolist() == [0.0, 2.0, 5.0]


def test_text_object_and_complex_columns_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "e.sqlite") as store:
        with pytest.raises(ExampleStoreError, match="as bytes"):
            store.append("s", {"name": np.array(["ab", "cd"])}, labels=[0, 1])
        with pytest.raises(ExampleStoreError, match="only bool, integer, float and bytes"):
            store.append("s", {"z": np.array([1j, 2j])}, labels=[0, 1])
        with pytest.raises(ExampleStoreError, match="has 3 rows but there are 2 labels"):
            store.append("s", {"t": [1.0, 2.0, 3.0]}, labels=[0, 1])
        assert store.stats() == []  # nothing half-written
