"""Hostile uploads: the server decodes every device's update, so anything malformed raises UpdateCodecError only."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import UpdateCodecError
from flclient.server._aggregate import apply_encoded_update
from flclient.update import (
    EncodeStage,
    Float16Codec,
    LosslessFloat32Codec,
    RotatedCodec,
    TopKCodec,
    UpdatePipeline,
    decode_update,
    decode_vector,
)
from flclient.update._codecs import _frame

BASE = {"w": np.zeros((6, 4), np.float32), "b": np.zeros(4, np.float32)}
_HEAD = struct.Struct("<4sBI")


def _update(codec: Any = None, layers: dict[str, np.ndarray] | None = None) -> bytes:
    new = layers or {"w": np.full((6, 4), 0.5, np.float32), "b": np.arange(4, dtype=np.float32)}
    old = {k: np.zeros_like(v) for k, v in new.items()}
    stage = EncodeStage(codec=codec or LosslessFloat32Codec(), rng=np.random.default_rng(0))
    return UpdatePipeline([stage]).run(round_id="1/0", new=new, old=old).to_bytes()


def _wire(manifest: bytes | dict[str, Any], payloads: list[bytes]) -> bytes:
    """An update with any manifest and payloads, its manifest CRC correct (so decoding reaches the manifest)."""
    meta = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    head = _HEAD.pack(b"FLUP", 2, len(meta)) + meta
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(struct.pack("<Q", len(p)) + p for p in payloads)


def _manifest_span(wire: bytes) -> int:
    return _HEAD.size + int(_HEAD.unpack(wire[: _HEAD.size])[2])


def _fp32(values: list[float]) -> bytes:
    return LosslessFloat32Codec().encode(np.asarray(values, np.float32), rng=np.random.default_rng(0))


# ---- hand-made hostile cases (issue 15) -------------------------------------------------------------------


def test_topk_gaps_that_overflow_int64_are_refused() -> None:
    k, param = 4, 62
    # Four gaps of 2^62 - 1: the index sum wraps to exactly 0, so the last index looks in range (was IndexError).
    remainder = np.packbits(np.ones(k * param, np.uint8)).tobytes()
    unary = bytes([0b11110000])
    body = struct.pack("<QBB", k, param, 0) + bytes(2 * k) + struct.pack("<I", len(unary)) + unary + remainder
    with pytest.raises(UpdateCodecError, match="topk indices"):
        decode_vector(_frame("topk", 0, 10, body), max_coords=10)
    with pytest.raises(UpdateCodecError, match="topk indices"):
        decode_update(_wire({"layers": [["b", [10]]]}, [_frame("topk", 0, 10, body)]), max_coords=10)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        (b"[Infinity]", "Infinity"),
        (b"[1e999]", "float range"),
        (b"[NaN]", "NaN"),
        (b"[4.9]", "non-negative integers"),
        (b"[4.0]", "non-negative integers"),
        (b"[true]", "non-negative integers"),
        (b'["4"]', "non-negative integers"),
        (b"[-4]", "non-negative integers"),
        (b"4", "non-negative integers"),
        (b"[" + b"1," * 40 + b"4]", "dimensions"),
        (b"[" + b"9" * 5000 + b"]", "malformed"),
    ],
)
def test_bad_layer_shapes_are_refused(shape: bytes, match: str) -> None:
    wire = _wire(b'{"layers": [["b", ' + shape + b"]]}", [_fp32([0, 0, 0, 0])])
    with pytest.raises(UpdateCodecError, match=match):
        decode_update(wire, max_coords=10**6)


def test_deeply_nested_manifest_is_refused_before_parsing() -> None:
    wire = _wire(b'{"layers": [], "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", [])
    with pytest.raises(UpdateCodecError, match="nested 200001 levels"):
        decode_update(wire, max_coords=10)


def test_duplicate_layer_names_are_refused() -> None:
    wire = _wire({"layers": [["b", [4]], ["b", [4]]]}, [_fp32([1, 2, 3, 4]), _fp32([5, 6, 7, 8])])
    with pytest.raises(UpdateCodecError, match="twice"):
        decode_update(wire, max_coords=10**6)
    wire = _wire(b'{"layers": [], "layers": [["b", [4]]]}', [_fp32([1, 2, 3, 4])])
    with pytest.raises(UpdateCodecError, match="repeats"):
        decode_update(wire, max_coords=10**6)


@pytest.mark.parametrize(
    "manifest",
    [b"[]", b"{}", b'{"layers": {}}', b'{"layers": [["b"]]}', b'{"layers": [[4, [4]]]}', b'{"layers": [null]}'],
)
def test_manifests_of_the_wrong_form_are_refused(manifest: bytes) -> None:
    with pytest.raises(UpdateCodecError, match="manifest"):
        decode_update(_wire(manifest, [_fp32([1, 2, 3, 4])]), max_coords=10**6)


def test_every_single_bit_flip_in_the_header_or_manifest_is_refused() -> None:
    wire = _update()
    for bit in range(8 * (_manifest_span(wire) + 4)):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(UpdateCodecError):
            decode_update(bytes(flipped), max_coords=10**6)


def test_the_old_unchecked_format_is_refused_by_version() -> None:
    wire = bytearray(_update())
    wire[4] = 1
    with pytest.raises(UpdateCodecError, match="version 1"):
        decode_update(bytes(wire), max_coords=10**6)


def test_hostile_uploads_surface_as_the_codec_error_through_the_server() -> None:
    good = _update()
    assert set(apply_encoded_update(BASE, good)) == {"w", "b"}
    hostile = [
        _wire(b'{"layers": [["b", [Infinity]]]}', []),
        _wire(b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", []),
        _wire({"layers": [["w", [6, 4]], ["w", [6, 4]]]}, [_fp32([0] * 24)] * 2),
        _wire({"layers": [["w", [6, 4]], ["b", [4.9]]]}, [_fp32([0] * 24), _fp32([0] * 4)]),
        good[:-1],
        good[: _manifest_span(good)],
    ]
    for payload in hostile:
        with pytest.raises(UpdateCodecError):
            apply_encoded_update(BASE, payload)


# ---- properties -------------------------------------------------------------------------------------------

_layer_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_layers = st.dictionaries(_layer_names, st.lists(st.integers(0, 5), max_size=3).map(tuple), min_size=1, max_size=4).map(
    lambda d: {k: np.arange(int(np.prod(s)), dtype=np.float32).reshape(s) for k, s in d.items()}
)


@given(layers=_layers)
def test_lossless_updates_round_trip(layers: dict[str, np.ndarray]) -> None:
    manifest, out = decode_update(_update(layers=layers), max_coords=10**6)
    assert [name for name, _ in manifest["layers"]] == list(layers)
    for name, arr in layers.items():
        np.testing.assert_array_equal(out[name], arr)


_codecs = st.sampled_from([LosslessFloat32Codec(), Float16Codec(), TopKCodec(fraction=0.3), RotatedCodec(bits=2)])


@given(codec=_codecs, data=st.data())
def test_mutated_truncated_or_extended_updates_raise_only_the_codec_error(codec: Any, data: st.DataObject) -> None:
    wire = bytearray(_update(codec=codec))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if how == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(wire) - 1), min_size=1, max_size=4)):
            wire[pos] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        wire = wire[: data.draw(st.integers(0, len(wire) - 1))]
    elif how == "extend":
        wire += data.draw(st.binary(min_size=1, max_size=16))
    else:
        at = data.draw(st.integers(0, len(wire)))
        wire[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        _, out = decode_update(bytes(wire), max_coords=10**4)
    except UpdateCodecError:
        return
    assert all(np.isfinite(v).all() for v in out.values())


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)


@given(layers=_json | st.lists(st.tuples(_json, _json).map(list), max_size=4), payload_count=st.integers(0, 3))
def test_arbitrary_manifests_with_a_valid_crc_raise_only_the_codec_error(layers: Any, payload_count: int) -> None:
    wire = _wire({"format": 2, "layers": layers}, [_fp32([1.0, 2.0])] * payload_count)
    try:
        _, out = decode_update(wire, max_coords=10**4)
    except UpdateCodecError:
        return
    assert sum(v.size for v in out.values()) <= 10**4


_shapes = st.lists(st.integers(0, 30), max_size=3) | st.sampled_from([[6, 4], [4], [24], [4, 6]])


@given(
    entries=st.lists(st.tuples(st.sampled_from(["w", "b", "v"]), _shapes), max_size=3),
    sizes=st.lists(st.integers(0, 40), max_size=3),
    codec=_codecs,
)
def test_the_server_path_raises_only_the_codec_error(
    entries: list[tuple[str, list[int]]], sizes: list[int], codec: Any
) -> None:
    rng = np.random.default_rng(1)
    payloads = [codec.encode(rng.standard_normal(size).astype(np.float32), rng=rng) for size in sizes]
    wire = _wire({"layers": [[name, shape] for name, shape in entries]}, payloads)
    try:
        out = apply_encoded_update(BASE, wire)
    except UpdateCodecError:
        return
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in BASE.items()}
