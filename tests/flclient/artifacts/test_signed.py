"""Checkpoint codec (round trip, hostile input) and the Ed25519 signatures of checkpoints and device updates."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flclient import _signing
from flclient.artifacts import (
    CheckpointError,
    UpdateContext,
    UpdateSignatureError,
    checkpoint_sha256,
    decode_checkpoint,
    encode_checkpoint,
    sign_checkpoint,
    sign_update,
    verify_checkpoint,
    verify_update,
)

DTYPES = st.sampled_from(["<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", ">f4", ">i8"])
ARRAYS = st.dictionaries(
    st.text(min_size=1, max_size=12),
    DTYPES.flatmap(lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))),
    max_size=4,
)


@given(arrays=ARRAYS, version=st.integers(0, 2**53))
def test_round_trip_is_exact_and_canonical(arrays: dict[str, np.ndarray], version: int) -> None:
    data = encode_checkpoint(arrays, model_version=version)
    got = decode_checkpoint(data)
    assert got.model_version == version and set(got.arrays) == set(arrays)
    for name, array in arrays.items():
        assert got.arrays[name].shape == array.shape
        assert got.arrays[name].tobytes() == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert encode_checkpoint(dict(got.arrays), model_version=version) == data  # one encoding per content


@given(arrays=ARRAYS, data=st.data())
def test_truncated_or_extended_input_is_refused(arrays: dict[str, np.ndarray], data: st.DataObject) -> None:
    blob = encode_checkpoint(arrays, model_version=1)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(CheckpointError):
        decode_checkpoint(blob[:cut])
    with pytest.raises(CheckpointError):
        decode_checkpoint(blob + b"\0")


@given(blob=st.binary(max_size=300))
def test_garbage_raises_only_checkpoint_error(blob: bytes) -> None:
    for candidate in (blob, b"FLCKPT\x01\x00" + blob):
        with contextlib.suppress(CheckpointError):
            decode_checkpoint(candidate)


@given(arrays=ARRAYS, data=st.data())
def test_corrupted_header_byte_is_refused_or_changes_the_hash(
    arrays: dict[str, np.ndarray], data: st.DataObject
) -> None:
    blob = bytearray(encode_checkpoint(arrays, model_version=3))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    try:
        got = decode_checkpoint(bytes(blob))
    except CheckpointError:
        return
    # Some flips land in array data and still decode: the signature over the original hash catches those.
    assert checkpoint_sha256(dict(got.arrays), model_version=got.model_version) != checkpoint_sha256(
        arrays, model_version=3
    )


def test_oversized_and_non_canonical_input_is_refused() -> None:
    blob = encode_checkpoint({"w": np.zeros(100, np.float32)}, model_version=1)
    with pytest.raises(CheckpointError, match="more than the allowed"):
        decode_checkpoint(blob, max_bytes=100)
    swapped = encode_checkpoint({"a": np.zeros(1, np.uint8)}, model_version=1).replace(b'"a"', b'"a" ')
    with pytest.raises(CheckpointError):
        decode_checkpoint(swapped)
    with pytest.raises(ValueError, match="dtype"):
        encode_checkpoint({"o": np.array(["x"], dtype=object)}, model_version=1)


def test_checkpoint_signature_binds_arrays_version_and_key() -> None:
    server = _signing.load_private_key(_signing.generate_key_pair()[0])
    other = _signing.load_private_key(_signing.generate_key_pair()[0])
    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)}
    sig = sign_checkpoint(params, model_version=5, private_key=server)
    trusted = [server.public_key()]
    assert verify_checkpoint(params, model_version=5, signature=sig, trusted_keys=trusted)
    tampered = {**params, "b": np.ones(4, np.float32)}
    with pytest.raises(CheckpointError, match="not trusted"):
        verify_checkpoint(tampered, model_version=5, signature=sig, trusted_keys=trusted)
    with pytest.raises(CheckpointError, match="v4"):
        verify_checkpoint(params, model_version=4, signature=sig, trusted_keys=trusted)
    with pytest.raises(CheckpointError, match="not a trusted key"):
        verify_checkpoint(params, model_version=5, signature=sig, trusted_keys=[other.public_key()])
    with pytest.raises(CheckpointError, match="not JSON"):
        verify_checkpoint(params, model_version=5, signature=b"\xff", trusted_keys=trusted)


def test_update_signature_binds_the_round_and_node() -> None:
    device = _signing.load_private_key(_signing.generate_key_pair()[0])
    ctx = UpdateContext(run_id=1, server_round=3, node_id=42, model_version=7)
    payload = encode_checkpoint({"w": np.ones(3, np.float32)}, model_version=7)
    sig = sign_update(payload, context=ctx, private_key=device)
    assert verify_update(payload, sig, context=ctx, trusted_keys=[device.public_key()])
    replay = UpdateContext(run_id=1, server_round=4, node_id=42, model_version=7)
    with pytest.raises(UpdateSignatureError, match="round 4"):
        verify_update(payload, sig, context=replay, trusted_keys=[device.public_key()])
    with pytest.raises(UpdateSignatureError):
        verify_update(payload + b"\0", sig, context=ctx, trusted_keys=[device.public_key()])
    with pytest.raises(ValueError, match="node_id"):
        UpdateContext(run_id=1, server_round=1, node_id=-1, model_version=0)


def test_hostile_json_in_a_checkpoint_header_or_signature_is_the_package_error() -> None:
    import struct

    from flclient.artifacts._signed import CHECKPOINT_FORMAT_VERSION

    deep = b"[" * 100_000 + b"]" * 100_000  # was a RecursionError
    for header in (deep, b'{"arrays": [], "arrays": [], "model_version": 1}', b'{"arrays": [], "model_version": NaN}'):
        data = struct.pack("<6sBBI", b"FLCKPT", CHECKPOINT_FORMAT_VERSION, 0, len(header)) + header
        with pytest.raises(CheckpointError, match="not JSON"):
            decode_checkpoint(data)
    with pytest.raises(_signing.SignatureError, match="nested 2000 levels"):
        _signing.DetachedSignature.from_bytes(b"[" * 2000 + b"]" * 2000)
