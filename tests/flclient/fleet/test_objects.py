"""The object codec: round trips, Flower's format, and hostile input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flclient import ObjectIntegrityError
from flclient.fleet import (
    CHUNK_SIZE,
    ArrayRecord,
    ConfigRecord,
    DecodeLimits,
    MetricRecord,
    decode_content,
    encode_message,
    object_id,
)
from flclient.fleet._objects import _with_header, iter_tree_ids, split_object
from flclient.fleet._proto import flclient_fleet_pb2 as pb

META = pb.Metadata(
    run_id=2**63 + 5, src_node_id=7, dst_node_id=1, group_id="1", ttl=60.0, message_type="train", created_at=1.0
)


def _content() -> dict[str, object]:
    return {
        "arrays": ArrayRecord({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3)}),
        "metrics": MetricRecord({"num-examples": 10, "loss": 0.5, "curve": [1.0, 2.0]}),
        "config": ConfigRecord({"on": True, "name": "x", "n": -3, "ids": [1, 2], "blob": b"\x00", "tags": ["a"]}),
    }


def test_round_trip_and_message_id() -> None:
    enc = encode_message(META, _content())  # type: ignore[arg-type]
    assert enc.message_id == enc.tree.object_id == enc.message.metadata.message_id
    assert all(object_id(c) == oid for oid, c in enc.objects.items())
    assert set(iter_tree_ids(enc.tree)) == set(enc.objects)
    out = decode_content(enc.message_id, enc.objects)
    assert out is not None
    arrays = out["arrays"]
    assert isinstance(arrays, ArrayRecord)
    np.testing.assert_array_equal(arrays.arrays["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out["metrics"] == MetricRecord({"num-examples": 10, "loss": 0.5, "curve": [1.0, 2.0]})
    assert out["config"] == ConfigRecord(
        {"on": True, "name": "x", "n": -3, "ids": [1, 2], "blob": b"\x00", "tags": ["a"]}
    )


def test_object_header_format() -> None:
    content = _with_header("ArrayChunk", [], b"abc")
    assert content == b"ArrayChunk  3\x00abc"
    assert split_object(content) == ("ArrayChunk", [], b"abc")


def test_large_array_is_cut_in_5_mib_chunks_with_repeats_shared() -> None:
    arr = np.zeros(3 * CHUNK_SIZE // 8 + 10, dtype=np.float64)  # zero chunks repeat: one object, listed thrice
    enc = encode_message(META, {"arrays": ArrayRecord({"z": arr})})
    chunks = [c for c in enc.objects.values() if c.startswith(b"ArrayChunk ")]
    assert all(len(split_object(c)[2]) <= CHUNK_SIZE for c in chunks)
    assert len(chunks) < 4
    out = decode_content(enc.message_id, enc.objects, DecodeLimits(max_message_bytes=64 * 2**20))
    assert out is not None and isinstance(out["arrays"], ArrayRecord)
    np.testing.assert_array_equal(out["arrays"].arrays["z"], arr)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
        shape=hnp.array_shapes(max_dims=3, max_side=6),
    )
)
def test_array_round_trip_property(arr: np.ndarray) -> None:
    enc = encode_message(META, {"a": ArrayRecord({"x": arr})})
    out = decode_content(enc.message_id, enc.objects)
    assert out is not None and isinstance(out["a"], ArrayRecord)
    np.testing.assert_array_equal(out["a"].arrays["x"], arr)
    assert out["a"].arrays["x"].dtype == arr.dtype


def _tamper(objects: dict[str, bytes], type_name: str, new: bytes) -> dict[str, bytes]:
    out = dict(objects)
    for oid, c in objects.items():
        if c.startswith(type_name.encode() + b" "):
            out[oid] = new
            return out
    raise AssertionError(type_name)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o: _tamper(o, "ArrayChunk", b"ArrayChunk  3\x00abd"), "does not hash to its id"),
        (lambda o: {k: v[:-1] for k, v in o.items()}, "does not hash|declares"),
        (lambda o: {k: v for k, v in o.items() if not v.startswith(b"ArrayChunk")}, "not received"),
    ],
)
def test_tampered_objects_are_rejected(mutate: object, match: str) -> None:
    enc = encode_message(META, _content())  # type: ignore[arg-type]
    with pytest.raises(ObjectIntegrityError, match=match):
        decode_content(enc.message_id, mutate(enc.objects))  # type: ignore[operator]


def test_oversized_objects_and_messages_are_rejected() -> None:
    enc = encode_message(META, {"a": ArrayRecord({"x": np.zeros(1000)})})
    with pytest.raises(ObjectIntegrityError, match="over"):
        decode_content(enc.message_id, enc.objects, DecodeLimits(max_object_bytes=1000))
    with pytest.raises(ObjectIntegrityError, match="over"):
        decode_content(enc.message_id, enc.objects, DecodeLimits(max_message_bytes=5000))


def _message_with_array_chunk(data: bytes) -> tuple[str, dict[str, bytes]]:
    objs: dict[str, bytes] = {}

    def add(t: str, children: list[str], body: bytes) -> str:
        c = _with_header(t, children, body)
        objs[object_id(c)] = c
        return object_id(c)

    chunk = add("ArrayChunk", [], data)
    arr = add("Array", [chunk], b'{"dtype": "float64", "shape": [2], "stype": "numpy.ndarray", "arraychunk_ids": [0]}')
    rec = add("ArrayRecord", [arr], json.dumps({"x": arr}).encode())
    rd = add("RecordDict", [rec], json.dumps({"arrays": rec}).encode())
    msg = add("Message", [rd], pb.Message(metadata=META).SerializeToString())
    return msg, objs


def test_pickled_or_mislabelled_arrays_are_rejected() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([object(), 1], dtype=object), allow_pickle=True)
    mid, objs = _message_with_array_chunk(buf.getvalue())
    with pytest.raises(ObjectIntegrityError, match="not a .npy array"):
        decode_content(mid, objs)
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, dtype=np.float32))
    mid, objs = _message_with_array_chunk(buf.getvalue())
    with pytest.raises(ObjectIntegrityError, match="disagrees"):
        decode_content(mid, objs)


def test_unsupported_values_are_programmer_errors() -> None:
    with pytest.raises(TypeError):
        encode_message(META, {"c": ConfigRecord({"x": [1, "a"]})})  # type: ignore[list-item]
    with pytest.raises(TypeError):
        encode_message(META, {"m": MetricRecord({"x": True})})
