"""Flower's content-addressed object codec: records <-> (object id -> bytes) plus an object tree.

Every object is ``b"<Type> <child ids, comma-joined> <body length>\\0<body>"`` and its id is the sha256 hex digest
of exactly those bytes, so a receiver can check every byte it pulls. The object types a device meets:

- ``Message``: body = protobuf ``Message`` holding the metadata (``message_id`` empty); child = its RecordDict.
- ``RecordDict`` / ``ArrayRecord``: body = JSON ``{name: child id}``.
- ``Array``: body = JSON ``{dtype, shape, stype: "numpy.ndarray", arraychunk_ids}``; children = its distinct
  ``ArrayChunk`` ids; ``arraychunk_ids`` index into them in data order. Data = ``np.save`` bytes in 5 MiB chunks.
- ``ArrayChunk``: body = raw bytes. ``ConfigRecord`` / ``MetricRecord``: body = protobuf items.

Decoding never trusts the sender: ids are recomputed, sizes are bounded before anything is allocated, headers
must agree with the tree, and arrays are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from tokenize import TokenError
from typing import Any, Union, cast

import numpy as np
from google.protobuf.message import DecodeError

from .._errors import ObjectIntegrityError
from .._json import loads_untrusted
from ._proto import flclient_fleet_pb2 as pb

__all__ = [
    "CHUNK_SIZE",
    "ArrayRecord",
    "ConfigRecord",
    "ConfigValue",
    "DecodeLimits",
    "EncodedMessage",
    "MetricRecord",
    "MetricValue",
    "Record",
    "RecordDict",
    "decode_content",
    "decode_message_body",
    "encode_message",
    "iter_tree_ids",
    "object_id",
    "split_object",
]

CHUNK_SIZE = 5 * 1024 * 1024
"""Bytes per ``ArrayChunk`` (Flower's default ``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``)."""

_NUMPY_STYPE = "numpy.ndarray"

ConfigScalar = Union[bool, int, float, str, bytes]  # noqa: UP007 - a runtime alias, Python 3.10
ConfigValue = Union[ConfigScalar, list[bool], list[int], list[float], list[str], list[bytes]]  # noqa: UP007
MetricValue = Union[int, float, list[int], list[float]]  # noqa: UP007


@dataclass(frozen=True)
class ArrayRecord:
    """Named numpy arrays (a model's parameters)."""

    arrays: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ConfigRecord:
    """Named configuration values (scalars, strings, bytes and homogeneous lists of them)."""

    values: Mapping[str, ConfigValue]


@dataclass(frozen=True)
class MetricRecord:
    """Named metrics (ints, floats and lists of them)."""

    values: Mapping[str, MetricValue]


Record = Union[ArrayRecord, ConfigRecord, MetricRecord]  # noqa: UP007
RecordDict = dict[str, Record]


@dataclass(frozen=True, kw_only=True)
class DecodeLimits:
    """Bounds on what a pulled message may make the device hold.

    ``max_object_bytes`` caps one object (a 5 MiB chunk plus its header fits the default); ``max_message_bytes``
    caps the sum over a message's objects; ``max_objects`` caps how many objects a tree may name.
    """

    max_object_bytes: int = CHUNK_SIZE + 4096
    max_message_bytes: int = 256 * 1024 * 1024
    max_objects: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_object_bytes", "max_message_bytes", "max_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class EncodedMessage:
    """A message ready to push: its id, its protobuf (metadata only), its tree and every object's bytes."""

    message_id: str
    message: pb.Message
    tree: pb.ObjectTree
    objects: dict[str, bytes] = field(repr=False)


def object_id(content: bytes) -> str:
    """The id of an object: the sha256 hex digest of its full content (header and body)."""
    return hashlib.sha256(content).hexdigest()


def _with_header(type_name: str, children: list[str], body: bytes) -> bytes:
    return f"{type_name} {','.join(children)} {len(body)}".encode() + b"\x00" + body


def split_object(content: bytes) -> tuple[str, list[str], bytes]:
    """Split an object into (type, child ids, body), checking the header's declared body length."""
    sep = content.find(b"\x00")
    if sep < 0:
        raise ObjectIntegrityError("object has no header terminator")
    try:
        head = content[:sep].decode("ascii")
        type_name, children_str, length_str = head.split(" ")
        if not length_str.isdigit():
            raise ValueError("the body length is not a decimal number")
        length = int(length_str)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ObjectIntegrityError(f"object header is malformed: {content[:sep][:80]!r}") from exc
    body = content[sep + 1 :]
    if length != len(body):
        raise ObjectIntegrityError(f"{type_name} object declares {length} body bytes but has {len(body)}")
    children = children_str.split(",") if children_str else []
    return type_name, children, body


class _Builder:
    """Collects objects bottom-up and returns each one's id and tree."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def add(self, type_name: str, children: list[pb.ObjectTree], body: bytes) -> pb.ObjectTree:
        content = _with_header(type_name, [c.object_id for c in children], body)
        oid = object_id(content)
        self.objects[oid] = content
        return pb.ObjectTree(object_id=oid, children=children)

    def array(self, arr: np.ndarray) -> pb.ObjectTree:
        if arr.dtype.hasobject:
            raise TypeError("object arrays cannot be sent")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        chunk_trees: dict[str, pb.ObjectTree] = {}
        order: list[str] = []
        for start in range(0, max(len(data), 1), CHUNK_SIZE):
            tree = self.add("ArrayChunk", [], data[start : start + CHUNK_SIZE])
            chunk_trees.setdefault(tree.object_id, tree)
            order.append(tree.object_id)
        unique = list(chunk_trees)
        body = json.dumps(
            {
                "dtype": str(arr.dtype),
                "shape": list(arr.shape),
                "stype": _NUMPY_STYPE,
                "arraychunk_ids": [unique.index(c) for c in order],
            }
        ).encode()
        return self.add("Array", list(chunk_trees.values()), body)

    def record(self, record: Record) -> pb.ObjectTree:
        if isinstance(record, ArrayRecord):
            refs: dict[str, str] = {}
            trees: dict[str, pb.ObjectTree] = {}
            for name, arr in record.arrays.items():
                tree = self.array(np.asarray(arr))
                refs[name] = tree.object_id
                trees.setdefault(tree.object_id, tree)
            return self.add("ArrayRecord", list(trees.values()), json.dumps(refs).encode())
        if isinstance(record, ConfigRecord):
            cfg = pb.ConfigRecord(
                items=[pb.ConfigRecord.Item(key=k, value=_config_value(k, v)) for k, v in record.values.items()]
            )
            return self.add("ConfigRecord", [], cfg.SerializeToString(deterministic=True))
        met = pb.MetricRecord(
            items=[pb.MetricRecord.Item(key=k, value=_metric_value(k, v)) for k, v in record.values.items()]
        )
        return self.add("MetricRecord", [], met.SerializeToString(deterministic=True))


def encode_message(metadata: pb.Metadata, content: RecordDict) -> EncodedMessage:
    """Encode a message with ``content`` into objects; ``metadata.message_id`` is set to the root object's id."""
    builder = _Builder()
    refs: dict[str, str] = {}
    trees: dict[str, pb.ObjectTree] = {}
    for name, record in content.items():
        tree = builder.record(record)
        refs[name] = tree.object_id
        trees.setdefault(tree.object_id, tree)
    rd_tree = builder.add("RecordDict", list(trees.values()), json.dumps(refs).encode())
    meta = pb.Metadata()
    meta.CopyFrom(metadata)
    meta.message_id = ""
    body = pb.Message(metadata=meta).SerializeToString(deterministic=True)
    root = builder.add("Message", [rd_tree], body)
    meta.message_id = root.object_id
    return EncodedMessage(
        message_id=root.object_id,
        message=pb.Message(metadata=meta, content=pb.RecordDict()),
        tree=root,
        objects=builder.objects,
    )


def iter_tree_ids(tree: pb.ObjectTree) -> Iterator[str]:
    """Every object id in ``tree``, children before parents, each once."""
    seen: set[str] = set()
    stack: list[tuple[pb.ObjectTree, bool]] = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if node.object_id not in seen:
                seen.add(node.object_id)
                yield node.object_id
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))


def decode_message_body(content: bytes) -> pb.Message:
    """The protobuf inside a ``Message`` object (metadata and, for error replies, the error)."""
    type_name, _, body = split_object(content)
    if type_name != "Message":
        raise ObjectIntegrityError(f"expected a Message object, got {type_name}")
    try:
        return pb.Message.FromString(body)
    except DecodeError as exc:
        raise ObjectIntegrityError(f"Message object body is not a valid protobuf: {exc}") from exc


def decode_content(
    message_id: str, objects: Mapping[str, bytes], limits: DecodeLimits | None = None
) -> RecordDict | None:
    """Rebuild the RecordDict of message ``message_id`` from its objects (``None`` for an error message).

    Every object reached must be present, hash to its id, be within ``limits`` and be of the type its parent
    expects. Raises :class:`ObjectIntegrityError` otherwise.
    """
    limits = limits or DecodeLimits()
    total = 0
    for oid, content in objects.items():
        if len(content) > limits.max_object_bytes:
            raise ObjectIntegrityError(f"object {oid[:12]} is {len(content)} bytes, over {limits.max_object_bytes}")
        if object_id(content) != oid:
            raise ObjectIntegrityError(f"object {oid[:12]}: content does not hash to its id")
        total += len(content)
    if total > limits.max_message_bytes:
        raise ObjectIntegrityError(f"message is {total} bytes, over {limits.max_message_bytes}")
    reader = _Reader(objects, limits)
    type_name, children, _ = reader.get(message_id, "Message")
    msg = decode_message_body(objects[message_id])
    if msg.HasField("error"):
        return None
    if len(children) != 1:
        raise ObjectIntegrityError(f"a Message object must have one child, has {len(children)}")
    refs = reader.refs(children[0], "RecordDict")
    out: RecordDict = {}
    for name, rid in refs.items():
        type_name = reader.type_of(rid)
        if type_name == "ArrayRecord":
            arrays = {a_name: reader.array(aid) for a_name, aid in reader.refs(rid, "ArrayRecord").items()}
            out[name] = ArrayRecord(arrays)
        elif type_name == "ConfigRecord":
            out[name] = ConfigRecord(reader.config(rid))
        elif type_name == "MetricRecord":
            out[name] = MetricRecord(reader.metrics(rid))
        else:
            raise ObjectIntegrityError(f"record {name!r} is a {type_name}, not a record type")
    return out


class _Reader:
    def __init__(self, objects: Mapping[str, bytes], limits: DecodeLimits) -> None:
        self._objects = objects
        self._limits = limits
        self._array_bytes = 0  # array data assembled so far, all arrays of the message together

    def type_of(self, oid: str) -> str:
        return self.get(oid, None)[0]

    def get(self, oid: str, expected: str | None) -> tuple[str, list[str], bytes]:
        content = self._objects.get(oid)
        if content is None:
            raise ObjectIntegrityError(f"object {oid[:12]} is referenced but was not received")
        type_name, children, body = split_object(content)
        if expected is not None and type_name != expected:
            raise ObjectIntegrityError(f"object {oid[:12]} is a {type_name}, expected {expected}")
        return type_name, children, body

    def _json(self, oid: str, what: str, body: bytes, max_depth: int) -> Any:
        try:
            return loads_untrusted(body, max_depth=max_depth)
        except ValueError as exc:
            raise ObjectIntegrityError(f"{what} {oid[:12]} body is not the JSON it should be: {exc}") from exc

    def refs(self, oid: str, expected: str) -> dict[str, str]:
        _, children, body = self.get(oid, expected)
        refs = self._json(oid, expected, body, max_depth=1)
        if not isinstance(refs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in refs.items()):
            raise ObjectIntegrityError(f"{expected} body must map names to object ids")
        if set(refs.values()) != set(children):
            raise ObjectIntegrityError(f"{expected} body and header name different children")
        return refs

    def array(self, oid: str) -> np.ndarray:
        _, children, body = self.get(oid, "Array")
        dtype, shape, chunk_ids = self._array_meta(oid, children, body)
        # Sizes are checked on the chunks' lengths and on the .npy header before any byte is copied: a chunk
        # named many times, or a small header declaring a huge array, must not make the device allocate it.
        bodies = {cid: self.get(cid, "ArrayChunk")[2] for cid in set(chunk_ids)}  # each distinct chunk once
        chunks = [bodies[cid] for cid in chunk_ids]
        total = sum(len(c) for c in chunks)
        budget = self._limits.max_message_bytes - self._array_bytes
        if total > budget:
            raise ObjectIntegrityError(
                f"Array {oid[:12]} names {len(chunk_ids)} chunks of {total} bytes in all, over the {budget} bytes "
                f"left of the message limit ({self._limits.max_message_bytes})"
            )
        header_len, npy_shape, npy_dtype, nbytes = _npy_header(oid, chunks)
        if str(npy_dtype) != dtype or list(npy_shape) != shape:
            raise ObjectIntegrityError(f"Array {oid[:12]} data disagrees with its declared dtype/shape")
        if header_len + nbytes != total:
            raise ObjectIntegrityError(
                f"Array {oid[:12]}: its .npy header declares {header_len + nbytes} bytes, its chunks hold {total}"
            )
        self._array_bytes += total
        try:
            arr = np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ObjectIntegrityError(f"Array {oid[:12]} data is not a .npy array: {exc}") from exc
        if not isinstance(arr, np.ndarray) or str(arr.dtype) != dtype or list(arr.shape) != shape:
            raise ObjectIntegrityError(f"Array {oid[:12]} data disagrees with its declared dtype/shape")
        return arr

    def _array_meta(self, oid: str, children: list[str], body: bytes) -> tuple[str, list[int], list[str]]:
        """The declared dtype, shape and chunk ids (in data order) of an Array object, each checked."""
        meta = self._json(oid, "Array", body, max_depth=2)
        if not isinstance(meta, dict) or not {"dtype", "shape", "stype", "arraychunk_ids"} <= set(meta):
            raise ObjectIntegrityError(f"Array {oid[:12]} body must hold dtype, shape, stype and arraychunk_ids")
        dtype, shape, stype, idx = meta["dtype"], meta["shape"], meta["stype"], meta["arraychunk_ids"]
        if stype != _NUMPY_STYPE:
            raise ObjectIntegrityError(f"Array {oid[:12]} has serialization type {stype!r}, not {_NUMPY_STYPE}")
        if not isinstance(dtype, str):
            raise ObjectIntegrityError(f"Array {oid[:12]} dtype must be a string")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ObjectIntegrityError(f"Array {oid[:12]} shape must be a list of non-negative integers")
        if not isinstance(idx, list) or not all(_is_count(i) and i < len(children) for i in idx):
            raise ObjectIntegrityError(
                f"Array {oid[:12]} arraychunk_ids must be integers indexing its {len(children)} children"
            )
        if not idx or set(idx) != set(range(len(children))):
            raise ObjectIntegrityError(f"Array {oid[:12]} arraychunk_ids and its header name different chunks")
        return dtype, shape, [children[i] for i in idx]

    def config(self, oid: str) -> dict[str, ConfigValue]:
        return self._scalar_record(oid, "ConfigRecord", pb.ConfigRecord, "config")

    def metrics(self, oid: str) -> dict[str, MetricValue]:
        return self._scalar_record(oid, "MetricRecord", pb.MetricRecord, "metric")

    def _scalar_record(self, oid: str, type_name: str, message: Any, what: str) -> dict[str, Any]:
        """Decode a ConfigRecord or MetricRecord: items of oneof scalars or scalar lists."""
        _, _, body = self.get(oid, type_name)
        try:
            rec = message.FromString(body)
        except DecodeError as exc:
            raise ObjectIntegrityError(f"{type_name} {oid[:12]} is not a valid protobuf") from exc
        out: dict[str, Any] = {}
        for item in rec.items:
            kind = item.value.WhichOneof("value")
            if kind is None:
                raise ObjectIntegrityError(f"{what} {item.key!r} has no value")
            if item.key in out:
                raise ObjectIntegrityError(f"{type_name} {oid[:12]} names {what} {item.key!r} twice")
            value = getattr(item.value, kind)
            out[item.key] = list(value.vals) if kind.endswith("_list") else value
        return out


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# A .npy version 1 header is at most 65535 bytes after its 10-byte preamble; numpy itself reads at most 10000.
_NPY_PREFIX = 10 + 65535
# numpy parses the header's dict with the tokenizer and ast.literal_eval, which raise all of these on garbage.
_NPY_HEADER_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError, SyntaxError, TokenError, RecursionError)


def _npy_header(oid: str, chunks: list[bytes]) -> tuple[int, tuple[int, ...], np.dtype[Any], int]:
    """Header length, shape, dtype and data bytes the .npy in ``chunks`` declares (read from its header only)."""
    prefix = bytearray()
    for chunk in chunks:
        if len(prefix) >= _NPY_PREFIX:
            break
        prefix += chunk[: _NPY_PREFIX - len(prefix)]
    fp = io.BytesIO(bytes(prefix))
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except _NPY_HEADER_ERRORS as exc:
        raise ObjectIntegrityError(f"Array {oid[:12]} data is not a .npy array: {exc}") from exc
    if dtype.hasobject:
        raise ObjectIntegrityError(f"Array {oid[:12]} data is not a .npy array of numbers: it holds pickled objects")
    del fortran  # either order loads into the same values
    return fp.tell(), tuple(shape), dtype, math.prod(shape) * dtype.itemsize  # Python ints: no overflow


def _config_value(key: str, value: ConfigValue) -> pb.ConfigRecordValue:
    if isinstance(value, bool):
        return pb.ConfigRecordValue(bool=value)
    if isinstance(value, int):
        return pb.ConfigRecordValue(sint64=value)
    if isinstance(value, float):
        return pb.ConfigRecordValue(double=value)
    if isinstance(value, str):
        return pb.ConfigRecordValue(string=value)
    if isinstance(value, bytes):
        return pb.ConfigRecordValue(bytes=value)
    if isinstance(value, list) and value:
        first = value[0]
        if all(isinstance(v, bool) for v in value):
            return pb.ConfigRecordValue(bool_list=pb.BoolList(vals=cast(list[bool], value)))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return pb.ConfigRecordValue(sint_list=pb.SintList(vals=cast(list[int], value)))
        if all(isinstance(v, float) for v in value):
            return pb.ConfigRecordValue(double_list=pb.DoubleList(vals=cast(list[float], value)))
        if all(isinstance(v, str) for v in value):
            return pb.ConfigRecordValue(string_list=pb.StringList(vals=cast(list[str], value)))
        if all(isinstance(v, bytes) for v in value):
            return pb.ConfigRecordValue(bytes_list=pb.BytesList(vals=cast(list[bytes], value)))
        raise TypeError(f"config {key!r}: list elements must share one type, starting with {type(first).__name__}")
    raise TypeError(f"config {key!r}: unsupported value {value!r}")


def _metric_value(key: str, value: MetricValue) -> pb.MetricRecordValue:
    if isinstance(value, bool):
        raise TypeError(f"metric {key!r}: booleans are not metrics")
    if isinstance(value, int):
        return pb.MetricRecordValue(sint64=value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite: {value}")
        return pb.MetricRecordValue(double=value)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return pb.MetricRecordValue(sint_list=pb.SintList(vals=cast(list[int], value)))
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return pb.MetricRecordValue(double_list=pb.DoubleList(vals=cast(list[float], value)))
    raise TypeError(f"metric {key!r}: unsupported value {value!r}")
