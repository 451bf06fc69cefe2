"""Model checkpoints and device updates that carry an Ed25519 signature.

A checkpoint has one canonical encoding (so the same arrays always hash the same, wherever they were built)::

    b"FLCKPT" | format u8 = 1 | reserved u8 = 0 | header length u32 LE | header JSON | array bytes

The header is compact, key-sorted JSON ``{"arrays": [[name, dtype, shape], ...], "model_version": n}`` with the
arrays sorted by name; the array bytes follow in that order, C order, little endian. The encoding is what the
server plugin publishes through TUF and what a checkpoint signature covers.

Signatures are made over a small statement, not over the bytes themselves: the statement names what is signed
(a checkpoint of model version ``n``, or the update of node ``k`` in round ``r`` of run ``x`` against model
version ``n``) and the payload's sha256, so a signature cannot be replayed for another version, round or node.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import _signing
from .._errors import CheckpointError, UpdateSignatureError
from .._json import loads_untrusted

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "Checkpoint",
    "UpdateContext",
    "checkpoint_sha256",
    "decode_checkpoint",
    "encode_checkpoint",
    "sign_checkpoint",
    "sign_update",
    "verify_checkpoint",
    "verify_update",
]

CHECKPOINT_FORMAT_VERSION = 1
_MAGIC = b"FLCKPT"
_PREFIX = struct.Struct("<6sBBI")
_MAX_HEADER = 1 << 20
_MAX_NAME = 256
_MAX_NDIM = 8
_DTYPES = frozenset({"<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8"})
_DEFAULT_MAX_BYTES = 1 << 31


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A global model: its version and its named arrays (read-only when decoded)."""

    model_version: int
    arrays: Mapping[str, np.ndarray]


def _canonical_dtype(array: np.ndarray) -> np.dtype[np.generic]:
    dt = array.dtype
    dt = dt.newbyteorder("<") if dt.itemsize > 1 else dt
    if dt.str not in _DTYPES:
        raise ValueError(f"checkpoint arrays must be of a numeric dtype in {sorted(_DTYPES)}, got {array.dtype}")
    return dt


def encode_checkpoint(arrays: Mapping[str, np.ndarray], *, model_version: int) -> bytes:
    """The canonical bytes of ``arrays`` at ``model_version`` (see the module docstring)."""
    if isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < 0:
        raise ValueError(f"model_version must be a non-negative int, got {model_version!r}")
    entries: list[list[object]] = []
    parts: list[bytes] = []
    for name in sorted(arrays):
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise ValueError(f"array names must be strings of 1..{_MAX_NAME} characters, got {name!r}")
        array = np.asarray(arrays[name])
        if array.ndim > _MAX_NDIM:
            raise ValueError(f"array {name!r} has {array.ndim} dimensions; at most {_MAX_NDIM} are allowed")
        dt = _canonical_dtype(array)
        entries.append([name, dt.str, list(array.shape)])
        parts.append(np.ascontiguousarray(array, dtype=dt).tobytes())
    header = json.dumps(
        {"arrays": entries, "model_version": model_version}, sort_keys=True, separators=(",", ":")
    ).encode()
    return _PREFIX.pack(_MAGIC, CHECKPOINT_FORMAT_VERSION, 0, len(header)) + header + b"".join(parts)


def checkpoint_sha256(arrays: Mapping[str, np.ndarray], *, model_version: int) -> str:
    """The hex sha256 of the canonical encoding: what a TUF target or a signature of this checkpoint names."""
    return hashlib.sha256(encode_checkpoint(arrays, model_version=model_version)).hexdigest()


def decode_checkpoint(data: bytes, *, max_bytes: int = _DEFAULT_MAX_BYTES) -> Checkpoint:
    """Parse canonical checkpoint bytes; anything truncated, oversized, corrupted or non-canonical raises
    :class:`~flclient.CheckpointError`. The arrays are read-only views of ``data``."""
    if len(data) > max_bytes:
        raise CheckpointError(f"checkpoint is {len(data)} bytes, more than the allowed {max_bytes}")
    if len(data) < _PREFIX.size:
        raise CheckpointError(f"checkpoint is truncated: {len(data)} bytes, less than its {_PREFIX.size}-byte prefix")
    magic, version, reserved, header_len = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        raise CheckpointError("not a flclient checkpoint (bad magic)")
    if version != CHECKPOINT_FORMAT_VERSION or reserved != 0:
        raise CheckpointError(f"checkpoint format {version} is not supported (this reads {CHECKPOINT_FORMAT_VERSION})")
    if header_len > _MAX_HEADER or _PREFIX.size + header_len > len(data):
        raise CheckpointError(f"checkpoint header length {header_len} runs past the data or the {_MAX_HEADER}-byte cap")
    raw_header = bytes(data[_PREFIX.size : _PREFIX.size + header_len])
    try:
        header = loads_untrusted(raw_header, max_depth=8)  # {"arrays": [[name, dtype, [dims]]]} nests 3 deep
    except ValueError as exc:
        raise CheckpointError(f"checkpoint header is not JSON: {exc}") from exc
    model_version, entries = _parse_header(header)
    offset = _PREFIX.size + header_len
    arrays: dict[str, np.ndarray] = {}
    buffer = memoryview(data)
    for name, dtype, shape in entries:
        dt = np.dtype(dtype)
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * dt.itemsize
        if offset + nbytes > len(data):
            raise CheckpointError(f"checkpoint is truncated inside array {name!r}")
        arrays[name] = np.frombuffer(buffer[offset : offset + nbytes], dtype=dt).reshape(shape)
        offset += nbytes
    if offset != len(data):
        raise CheckpointError(f"checkpoint has {len(data) - offset} bytes after its last array")
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if canonical != raw_header:
        raise CheckpointError("checkpoint header is not in canonical form")
    return Checkpoint(model_version=model_version, arrays=MappingProxyType(arrays))


def _parse_header(header: object) -> tuple[int, list[tuple[str, str, tuple[int, ...]]]]:
    if not isinstance(header, dict) or set(header) != {"arrays", "model_version"}:
        raise CheckpointError("checkpoint header must have exactly the keys 'arrays' and 'model_version'")
    version = header["model_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"checkpoint model_version must be a non-negative integer, got {version!r}")
    raw = header["arrays"]
    if not isinstance(raw, list):
        raise CheckpointError("checkpoint header 'arrays' must be a list")
    entries: list[tuple[str, str, tuple[int, ...]]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3):
            raise CheckpointError("each checkpoint array entry must be [name, dtype, shape]")
        name, dtype, shape = item
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise CheckpointError(f"checkpoint array name {name!r} is not a string of 1..{_MAX_NAME} characters")
        if dtype not in _DTYPES:
            raise CheckpointError(f"checkpoint array {name!r} has unsupported dtype {dtype!r}")
        if not (
            isinstance(shape, list)
            and len(shape) <= _MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)
        ):
            raise CheckpointError(f"checkpoint array {name!r} has an invalid shape {shape!r}")
        entries.append((name, str(dtype), tuple(shape)))
    names = [e[0] for e in entries]
    if names != sorted(set(names)):
        raise CheckpointError("checkpoint arrays must be unique and sorted by name")
    return version, entries


def _statement(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _checkpoint_statement(name: str, model_version: int, sha256: str) -> bytes:
    return _statement(
        {"kind": "flclient-checkpoint-v1", "model_version": model_version, "name": name, "sha256": sha256}
    )


def sign_checkpoint(
    arrays: Mapping[str, np.ndarray], *, model_version: int, private_key: Ed25519PrivateKey, name: str = "global"
) -> bytes:
    """The server plugin's signature over the checkpoint ``name`` at ``model_version``: signature-file bytes
    (the ``flclient-ed25519-v1`` JSON of :mod:`flclient._signing`) to send beside the arrays."""
    digest = checkpoint_sha256(arrays, model_version=model_version)
    return _signing.sign(_checkpoint_statement(name, model_version, digest), private_key).to_bytes()


def verify_checkpoint(
    arrays: Mapping[str, np.ndarray],
    *,
    model_version: int,
    signature: bytes,
    trusted_keys: Iterable[Ed25519PublicKey],
    name: str = "global",
) -> str:
    """Check the server's signature before the device loads the model; returns the verifying key id.

    Raises :class:`~flclient.CheckpointError` when the signature is malformed, made by an untrusted key, or
    made for other arrays, another model version or another model name.
    """
    try:
        digest = checkpoint_sha256(arrays, model_version=model_version)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {name} v{model_version} cannot be encoded: {exc}") from exc
    try:
        sig = _signing.DetachedSignature.from_bytes(signature)
        return _signing.verify(_checkpoint_statement(name, model_version, digest), sig, trusted_keys)
    except _signing.SignatureError as exc:
        raise CheckpointError(f"checkpoint {name} v{model_version} is not trusted: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class UpdateContext:
    """What a device update answers: run, round, node and the model version it was trained from."""

    run_id: int
    server_round: int
    node_id: int
    model_version: int

    def __post_init__(self) -> None:
        for name in ("run_id", "server_round", "node_id", "model_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"UpdateContext.{name} must be a non-negative int, got {value!r}")

    def statement(self, payload: bytes) -> bytes:
        """The bytes a device signs for ``payload`` in this context."""
        return _statement(
            {
                "kind": "flclient-update-v1",
                "model_version": self.model_version,
                "node_id": self.node_id,
                "run_id": self.run_id,
                "server_round": self.server_round,
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        )


def sign_update(payload: bytes, *, context: UpdateContext, private_key: Ed25519PrivateKey) -> bytes:
    """The device's Ed25519 signature over its encoded update in ``context`` (signature-file bytes).

    For an update sent as arrays, sign ``encode_checkpoint(arrays, model_version=context.model_version)``.
    """
    return _signing.sign(context.statement(payload), private_key).to_bytes()


def verify_update(
    payload: bytes, signature: bytes, *, context: UpdateContext, trusted_keys: Iterable[Ed25519PublicKey]
) -> str:
    """The server plugin's check before aggregation; returns the key id that verified.

    Raises :class:`~flclient.UpdateSignatureError` when the signature is malformed, made by a key the server
    does not trust, or made for another payload, run, round, node or model version (a replay).
    """
    try:
        sig = _signing.DetachedSignature.from_bytes(signature)
        return _signing.verify(context.statement(payload), sig, trusted_keys)
    except _signing.SignatureError as exc:
        raise UpdateSignatureError(
            f"update of node {context.node_id} in round {context.server_round} is not trusted: {exc}"
        ) from exc
