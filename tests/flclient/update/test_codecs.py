"""Codec properties: round trip, unbiasedness, and rejection of truncated, corrupted or oversized payloads."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flclient import UpdateCodecError, UpdateInputError
from flclient.update import (
    BlockInt8Codec,
    Float16Codec,
    LosslessFloat32Codec,
    RotatedCodec,
    TopKCodec,
    UpdateCodec,
    decode_vector,
)
from flclient.update._hadamard import block_sizes, hadamard

CODECS: list[UpdateCodec] = [
    LosslessFloat32Codec(),
    Float16Codec(kind="fp16"),
    Float16Codec(kind="bf16"),
    BlockInt8Codec(block_size=64),
    BlockInt8Codec(block_size=7),
    RotatedCodec(bits=1),
    RotatedCodec(bits=2),
    RotatedCodec(bits=4),
    TopKCodec(fraction=0.01),
    TopKCodec(fraction=0.3, value_bits=32),
]
IDS = [f"{c.name}-{getattr(c, 'bits', getattr(c, 'block_size', getattr(c, 'fraction', '')))}" for c in CODECS]

vectors = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=16),
)


def _check_round_trip(codec: UpdateCodec, x: np.ndarray, y: np.ndarray) -> None:
    flat = x.astype(np.float32).ravel()
    assert y.dtype == np.float32 and y.shape == flat.shape
    assert np.isfinite(y).all()
    scale = float(np.abs(flat).max()) if flat.size else 0.0
    if codec.name == "fp32_lossless":
        np.testing.assert_array_equal(y, flat)
    elif codec.name == "fp16":
        np.testing.assert_allclose(y, flat, rtol=1e-3, atol=1e-7)
    elif codec.name == "bf16":
        np.testing.assert_allclose(y, flat, rtol=8e-3, atol=1e-30)
    elif codec.name == "int8_block":
        assert np.abs(y - flat).max(initial=0.0) <= scale / 127 * 1.0001 + 1e-30
    elif codec.name == "topk":
        nz = np.flatnonzero(y)
        assert np.allclose(y[nz], flat[nz], rtol=1e-3)
        k = int(np.ceil(codec.fraction * flat.size))  # type: ignore[attr-defined]
        assert len(nz) <= k
        if k and flat.size:
            kept = np.sort(np.abs(flat))[-k] if k <= flat.size else 0
            assert (np.abs(flat[np.abs(y) == 0]) <= kept * 1.001 + 1e-30).all()
    else:  # rotated: the scale is unbiased, the error bounded by the input's norm
        err = float(np.sum((y.astype(np.float64) - flat) ** 2))
        assert err <= 4.0 * float(np.sum(flat.astype(np.float64) ** 2)) + 1e-20


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@given(x=vectors, seed=st.integers(0, 2**32 - 1))
def test_round_trip(codec: UpdateCodec, x: np.ndarray, seed: int) -> None:
    data = codec.encode(x, rng=np.random.default_rng(seed))
    _check_round_trip(codec, x, codec.decode(data, max_coords=x.size))
    np.testing.assert_array_equal(decode_vector(data, max_coords=x.size), codec.decode(data, max_coords=x.size))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 70_001])
def test_sizes_and_zeros(codec: UpdateCodec, n: int) -> None:
    rng = np.random.default_rng(n)
    for x in (np.zeros(n, np.float32), rng.standard_t(3, n).astype(np.float32)):
        _check_round_trip(codec, x, codec.decode(codec.encode(x, rng=rng), max_coords=n))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(codec: UpdateCodec, bad: float) -> None:
    x = np.ones(100, np.float32)
    x[17] = bad
    with pytest.raises(UpdateInputError):
        codec.encode(x, rng=np.random.default_rng(0))


def test_fp16_refuses_out_of_range_values_and_bf16_keeps_them() -> None:
    x = np.array([1.0, 1e6], np.float32)
    with pytest.raises(UpdateInputError, match="float16 range"):
        Float16Codec().encode(x, rng=np.random.default_rng(0))
    bf = Float16Codec(kind="bf16")
    np.testing.assert_allclose(bf.decode(bf.encode(x, rng=np.random.default_rng(0)), max_coords=2), x, rtol=8e-3)


@pytest.mark.slow
def test_large_tensor_rotated_quality() -> None:
    """d = 2^20 + 70: full block plus tail blocks; NMSE at the designed level and t(3) no worse than Gaussian."""
    rng = np.random.default_rng(7)
    n = (1 << 20) + 70
    for bits, (lo, hi) in {1: (0.55, 0.59), 2: (0.095, 0.112), 4: (0.0055, 0.0065)}.items():
        codec = RotatedCodec(bits=bits)
        for x in (rng.standard_normal(n).astype(np.float32), rng.standard_t(3, n).astype(np.float32)):
            data = codec.encode(x, rng=rng)
            y = codec.decode(data, max_coords=n)
            nmse = float(np.sum((y - x) ** 2) / np.sum(x.astype(np.float64) ** 2))
            assert lo < nmse < hi, (bits, nmse)
            assert len(data) * 8 / n <= bits * (1.0 if bits > 1 else 1.05)


@pytest.mark.parametrize(
    "codec",
    [BlockInt8Codec(block_size=16), RotatedCodec(bits=1), RotatedCodec(bits=2), RotatedCodec(bits=4)],
    ids=["int8_block", "rotated1", "rotated2", "rotated4"],
)
def test_unbiased_codecs_average_to_the_input(codec: UpdateCodec) -> None:
    # Rotated codecs are unbiased over a uniformly random rotation; the randomised Hadamard approximates one well
    # from one 2^12 block up (measured: bias within noise), not for a few tiny heavy-tailed blocks.
    rng = np.random.default_rng(11)
    x = rng.standard_t(3, 4096).astype(np.float32)
    trials = 500
    total = np.zeros(x.size)
    nmse = 0.0
    for _ in range(trials):
        y = codec.decode(codec.encode(x, rng=rng), max_coords=x.size)
        total += y
        nmse += float(np.sum((y - x) ** 2) / np.sum(x**2)) / trials
    bias = float(np.sum((total / trials - x) ** 2) / np.sum(x**2))
    # An unbiased codec's mean has error nmse / trials; a biased one stays at its bias.
    assert bias < 3.0 * nmse / trials + 1e-6, (bias, nmse / trials)


def test_topk_is_biased_but_its_index_cost_is_near_the_bound() -> None:
    rng = np.random.default_rng(3)
    n, codec = 1 << 18, TopKCodec(fraction=0.01)
    data = codec.encode(rng.standard_normal(n), rng=rng)
    k = int(np.ceil(0.01 * n))
    bound = (np.sum(np.log2(np.arange(n - k + 1, n + 1))) - np.sum(np.log2(np.arange(1, k + 1)))) / k
    index_bits = (len(data) - 16 - 4 - 10 - 4 - 2 * k) * 8 / k
    assert index_bits <= bound + 0.1


def test_hadamard_is_orthonormal_and_self_inverse() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 64, 1 << 12):
        x = rng.standard_normal((3, size)).astype(np.float32)
        y = hadamard(x)
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
        np.testing.assert_allclose(hadamard(y), x, atol=1e-4)
    assert block_sizes(0) == []
    assert sum(block_sizes((1 << 20) * 2 + 100)) == (1 << 21) + 128


def _refresh_crc(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _sample(codec: UpdateCodec) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(5).standard_t(3, 3000).astype(np.float32)
    return x, codec.encode(x, rng=np.random.default_rng(6))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_truncated_and_padded_payloads_are_rejected(codec: UpdateCodec) -> None:
    x, data = _sample(codec)
    for cut in sorted({0, 1, 3, 15, 16, 17, 20, len(data) // 2, len(data) - 5, len(data) - 1}):
        with pytest.raises(UpdateCodecError):
            codec.decode(data[:cut], max_coords=x.size)
        with pytest.raises(UpdateCodecError):  # truncated with a valid checksum: the structure must catch it
            codec.decode(_refresh_crc(data[: max(cut, 20)] + data[-4:]), max_coords=x.size)
    with pytest.raises(UpdateCodecError):
        codec.decode(_refresh_crc(data[:-4] + b"\0" * 3 + data[-4:]), max_coords=x.size)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_oversized_payloads_are_rejected_before_allocation(codec: UpdateCodec) -> None:
    x, data = _sample(codec)
    with pytest.raises(UpdateCodecError, match="more than the allowed"):
        codec.decode(data, max_coords=x.size - 1)
    if codec.name != "topk":  # a sparse payload may legitimately describe a huge vector: max_coords bounds it
        huge = _refresh_crc(data[:8] + struct.pack("<Q", 1 << 40) + data[16:])
        with pytest.raises(UpdateCodecError):
            codec.decode(huge, max_coords=1 << 40)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@given(position=st.integers(0, 10**9), bit=st.integers(0, 7), fix_crc=st.booleans())
@example(position=9448, bit=0, fix_crc=True)  # once decoded an int8 scale near float32 max to inf
@example(position=16910390, bit=3, fix_crc=True)  # a smaller coordinate count in a rotated payload
def test_bit_flips_raise_the_codec_error_or_decode_to_finite_values(
    codec: UpdateCodec, position: int, bit: int, fix_crc: bool
) -> None:
    x, data = _sample(codec)
    corrupted = bytearray(data)
    corrupted[position % len(data)] ^= 1 << bit
    blob = _refresh_crc(bytes(corrupted[:-4]) + b"\0\0\0\0") if fix_crc else bytes(corrupted)
    try:
        y = decode_vector(blob, max_coords=x.size)
    except UpdateCodecError:
        return
    assert fix_crc, "a flipped bit must fail the checksum"
    # Under a recomputed checksum a flipped bit can be a different, valid payload (e.g. a smaller coordinate
    # count that pads to the same rotation block): it must still decode within bounds to finite values.
    assert y.ndim == 1 and y.size <= x.size and np.isfinite(y).all()


def test_unknown_codec_and_version_are_rejected() -> None:
    _, data = _sample(LosslessFloat32Codec())
    with pytest.raises(UpdateCodecError, match="unknown codec"):
        decode_vector(_refresh_crc(data[:4] + b"\x63" + data[5:]), max_coords=10**6)
    with pytest.raises(UpdateCodecError, match="version"):
        decode_vector(_refresh_crc(data[:3] + b"\x09" + data[4:]), max_coords=10**6)
    with pytest.raises(UpdateCodecError, match="expected"):
        Float16Codec().decode(data, max_coords=10**6)


def test_codec_configs_are_validated() -> None:
    with pytest.raises(ValueError):
        RotatedCodec(bits=3)
    with pytest.raises(ValueError):
        BlockInt8Codec(block_size=0)
    with pytest.raises(ValueError):
        TopKCodec(fraction=0.0)
    with pytest.raises(ValueError):
        Float16Codec(kind="fp8")
    with pytest.raises(TypeError):
        RotatedCodec(2)  # type: ignore[call-arg]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_rotated_codecs_keep_their_quality_at_extreme_magnitudes(bits: int) -> None:
    """Inputs are scaled by a power of two before rotating: no float32 overflow or underflow in the norms."""
    base = np.random.default_rng(bits).standard_t(3, 5000)
    codec = RotatedCodec(bits=bits)
    reference = None
    for magnitude in (1e-30, 1.0, 1e30):
        x = (base * magnitude).astype(np.float32)
        y = codec.decode(codec.encode(x, rng=np.random.default_rng(0)), max_coords=x.size)
        x64 = x.astype(np.float64)
        nmse = float(np.sum((y - x64) ** 2) / np.sum(x64**2))
        reference = nmse if reference is None else reference
        assert nmse == pytest.approx(reference, rel=1e-3)
    too_big = np.full(4096, 1e37, np.float32)  # norm 6e38: some reconstruction could exceed float32
    with pytest.raises(UpdateInputError, match="too large"):
        codec.encode(too_big, rng=np.random.default_rng(0))
