"""Hostile object trees: every one is refused with ObjectIntegrityError, before anything big is allocated.

The objects here are well-formed as far as hashing goes (each id is its content's sha256), so decoding gets past
the integrity checks and reaches the bodies.
"""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ObjectIntegrityError
from flclient.fleet import ArrayRecord, DecodeLimits, decode_content
from flclient.fleet._objects import _with_header, object_id
from flclient.fleet._proto import flclient_fleet_pb2 as pb

META = pb.Metadata(run_id=1, src_node_id=7, dst_node_id=1, group_id="1", ttl=60.0, message_type="train")


class _Tree:
    """Builds a message bottom-up from hand-written bodies."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def add(self, type_name: str, children: list[str], body: bytes) -> str:
        content = _with_header(type_name, children, body)
        self.objects[object_id(content)] = content
        return object_id(content)

    def message(self, record_dict_body: Callable[[str], bytes], record_children: list[str]) -> str:
        rd = self.add("RecordDict", record_children, record_dict_body(record_children[0] if record_children else ""))
        return self.add("Message", [rd], pb.Message(metadata=META).SerializeToString())

    def array_message(self, array_bodies: list[tuple[list[str], bytes]]) -> str:
        arrays = [self.add("Array", children, body) for children, body in array_bodies]
        names = {f"a{i}": a for i, a in enumerate(arrays)}
        rec = self.add("ArrayRecord", sorted(set(arrays)), json.dumps(names).encode())
        return self.message(lambda r: json.dumps({"arrays": r}).encode(), [rec])


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _meta(dtype: object = "float64", shape: object = (2,), ids: object = (0,)) -> bytes:
    return json.dumps(
        {"dtype": dtype, "shape": list(shape), "stype": "numpy.ndarray", "arraychunk_ids": list(ids)}  # type: ignore[call-overload]
    ).encode()


def _decode_peak(mid: str, objects: dict[str, bytes], limits: DecodeLimits | None = None) -> int:
    """Run decode_content (which must refuse), returning the peak bytes Python and numpy allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(ObjectIntegrityError) as info:
            decode_content(mid, objects, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value)
    return peak


def test_deeply_nested_record_dict_is_refused_before_parsing() -> None:
    tree = _Tree()
    mid = tree.message(lambda _: b"[" * 200_000 + b"]" * 200_000, [])
    with pytest.raises(ObjectIntegrityError, match="nested 200000 levels"):
        decode_content(mid, tree.objects)


def test_deeply_nested_array_body_is_refused() -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], _npy(np.zeros(2)))
    body = b'{"dtype": "float64", "shape": ' + b"[" * 100_000 + b"]" * 100_000 + b', "arraychunk_ids": [0]}'
    mid = tree.array_message([([chunk], body)])
    with pytest.raises(ObjectIntegrityError, match="nested"):
        decode_content(mid, tree.objects)


@pytest.mark.parametrize(
    "ids", [b"[Infinity]", b"[NaN]", b"[1e999]", b"[0.5]", b"[true]", b"[-1]", b'["0"]', b"[1]", b"[]", b"0"]
)
def test_bad_chunk_indices_are_refused(ids: bytes) -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], _npy(np.zeros(2)))
    body = b'{"dtype": "float64", "shape": [2], "stype": "numpy.ndarray", "arraychunk_ids": ' + ids + b"}"
    mid = tree.array_message([([chunk], body)])
    with pytest.raises(ObjectIntegrityError, match="Array"):
        decode_content(mid, tree.objects)


@pytest.mark.parametrize("shape", [[4.9], [-1], [True], ["2"], [2**70], "2"])
def test_bad_shapes_are_refused(shape: object) -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], _npy(np.zeros(2)))
    body = json.dumps({"dtype": "float64", "shape": shape, "stype": "numpy.ndarray", "arraychunk_ids": [0]})
    mid = tree.array_message([([chunk], body.encode())])
    with pytest.raises(ObjectIntegrityError, match="shape|disagrees"):
        decode_content(mid, tree.objects)


def test_one_chunk_named_400_times_is_refused_before_joining() -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], bytes(4 << 20))
    mid = tree.array_message([([chunk], _meta(dtype="uint8", shape=(400 << 20,), ids=[0] * 400))])
    peak = _decode_peak(mid, tree.objects)
    assert peak < 64 << 20, f"decoding peaked at {peak} bytes"


def test_repeated_chunks_count_against_the_message_limit_across_arrays() -> None:
    tree = _Tree()
    data = _npy(np.zeros(100))
    chunk = tree.add("ArrayChunk", [], data)
    body = _meta(shape=(100,))
    mid = tree.array_message([([chunk], body), ([chunk], body + b" "), ([chunk], body + b"  ")])
    limits = DecodeLimits(max_message_bytes=2 * len(data) + 500)
    assert decode_content(mid, tree.objects, DecodeLimits(max_message_bytes=3 * len(data) + 500)) is not None
    with pytest.raises(ObjectIntegrityError, match="left of the message limit"):
        decode_content(mid, tree.objects, limits)


def test_small_npy_header_declaring_2_to_the_40_elements_is_refused_without_allocating() -> None:
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }"
    padded = text.ljust(128 - 10 - 1) + "\n"
    data = np.lib.format.magic(1, 0) + len(padded).to_bytes(2, "little") + padded.encode()
    assert len(data) == 128
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], data)
    mid = tree.array_message([([chunk], _meta(shape=(1 << 40,)))])
    peak = _decode_peak(mid, tree.objects)
    assert peak < 16 << 20, f"decoding peaked at {peak} bytes"


def test_truncated_or_padded_npy_data_is_refused() -> None:
    data = _npy(np.arange(10.0))
    for bad in (data[:-8], data + bytes(8), data[:20]):
        tree = _Tree()
        chunk = tree.add("ArrayChunk", [], bad)
        mid = tree.array_message([([chunk], _meta(shape=(10,)))])
        with pytest.raises(ObjectIntegrityError, match="npy|chunks hold"):
            decode_content(mid, tree.objects)


def test_duplicate_record_names_are_refused() -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], _npy(np.zeros(2)))
    arr = tree.add("Array", [chunk], _meta())
    rec = tree.add("ArrayRecord", [arr], f'{{"x": "{arr}", "x": "{arr}"}}'.encode())
    mid = tree.message(lambda r: json.dumps({"arrays": r}).encode(), [rec])
    with pytest.raises(ObjectIntegrityError, match="repeats"):
        decode_content(mid, tree.objects)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    dtype=_json_values | st.sampled_from(["float64", "<f8", "uint8"]),
    shape=_json_values | st.lists(st.integers(-2, 2**64), max_size=3),
    ids=_json_values | st.lists(st.integers(-2, 3), max_size=4),
    data=st.binary(max_size=300) | st.just(_npy(np.zeros(2))),
)
def test_arbitrary_array_bodies_decode_or_raise_the_package_error(
    dtype: object, shape: object, ids: object, data: bytes
) -> None:
    tree = _Tree()
    chunk = tree.add("ArrayChunk", [], data)
    body = json.dumps({"dtype": dtype, "shape": shape, "stype": "numpy.ndarray", "arraychunk_ids": ids})
    mid = tree.array_message([([chunk], body.encode())])
    try:
        out = decode_content(mid, tree.objects)
    except ObjectIntegrityError:
        return
    assert out is not None and isinstance(out["arrays"], ArrayRecord)


@given(body=st.binary(max_size=200), data=st.data())
def test_arbitrary_bytes_as_record_or_array_bodies_raise_only_the_package_error(
    body: bytes, data: st.DataObject
) -> None:
    tree = _Tree()
    npy = bytearray(_npy(np.arange(4, dtype=np.int32)))
    flip = data.draw(st.integers(0, len(npy) * 8 - 1))
    npy[flip // 8] ^= 1 << (flip % 8)
    chunk = tree.add("ArrayChunk", [], bytes(npy))
    where = data.draw(st.sampled_from(["RecordDict", "ArrayRecord", "Array", "chunk"]))
    if where == "RecordDict":
        mid = tree.message(lambda _: body, [])
    elif where == "ArrayRecord":
        rec = tree.add("ArrayRecord", [], body)
        mid = tree.message(lambda r: json.dumps({"arrays": r}).encode(), [rec])
    elif where == "Array":
        mid = tree.array_message([([chunk], body)])
    else:
        mid = tree.array_message([([chunk], _meta(dtype="int32", shape=(4,)))])
    with contextlib.suppress(ObjectIntegrityError):
        decode_content(mid, tree.objects)


@pytest.mark.parametrize(
    ("type_name", "message"), [("ConfigRecord", pb.ConfigRecord), ("MetricRecord", pb.MetricRecord)]
)
def test_repeated_config_or_metric_keys_are_refused(type_name: str, message: Any) -> None:
    value = pb.ConfigRecordValue(sint64=1) if type_name == "ConfigRecord" else pb.MetricRecordValue(sint64=1)
    body = message(items=[message.Item(key="lr", value=value), message.Item(key="lr", value=value)])
    tree = _Tree()
    rec = tree.add(type_name, [], body.SerializeToString())
    mid = tree.message(lambda r: json.dumps({"c": r}).encode(), [rec])
    with pytest.raises(ObjectIntegrityError, match="'lr' twice"):
        decode_content(mid, tree.objects)
