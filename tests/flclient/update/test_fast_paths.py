"""The fast paths behind the rotated codec, each checked against a plain reference.

The factored Hadamard transform against the textbook butterfly; the rotation (random signs + Hadamard, in
blocks) for orthonormality and invertibility; the vectorised rANS coder for exact round trips, for coding close
to the model's cross-entropy and for rejecting inconsistent streams; the byte tricks that pack and unpack
grouped magnitude symbols against their arithmetic definitions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flclient import UpdateCodecError
from flclient.update import RotatedCodec, _ans, _codecs
from flclient.update._hadamard import _factors, block_sizes, hadamard, hadamard_reference, rotation_signs


@pytest.mark.parametrize("log2", list(range(0, 17)))
def test_factored_hadamard_equals_the_butterfly(log2: int) -> None:
    rng = np.random.default_rng(log2)
    x = rng.standard_normal((3, 1 << log2)).astype(np.float32)
    assert math.prod(_factors(1 << log2)) == 1 << log2
    np.testing.assert_allclose(hadamard(x), hadamard_reference(x), atol=2e-5, rtol=0)


def test_factored_hadamard_equals_the_butterfly_at_full_block_size() -> None:
    x = np.random.default_rng(20).standard_normal((1, 1 << 20)).astype(np.float32)
    assert math.prod(_factors(1 << 20)) == 1 << 20
    np.testing.assert_allclose(hadamard(x), hadamard_reference(x), atol=2e-5, rtol=0)


def test_hadamard_gain_is_a_per_row_multiplier() -> None:
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    gains = np.array([0.0, 1.0, 2.5, -3.0], np.float32)
    np.testing.assert_allclose(hadamard(x, gains), hadamard(x) * gains[:, None], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hadamard(x, 2.0), 2 * hadamard(x), rtol=1e-6)
    with pytest.raises(ValueError, match="power of two"):
        hadamard(np.zeros((1, 48), np.float32))


@pytest.mark.parametrize("n", [64, 70_001, (1 << 20) + 70])
def test_rotation_is_orthonormal_and_invertible(n: int) -> None:
    rng = np.random.default_rng(n)
    sizes = block_sizes(n)
    v = np.zeros(sum(sizes), np.float32)
    v[:n] = rng.standard_t(3, n)
    signs = rotation_signs(12345, v.size)
    y = _codecs._rotate(v * signs, sizes)
    starts = np.cumsum([0, *sizes])
    for a, b in itertools.pairwise(starts):  # orthonormal block by block
        assert np.linalg.norm(y[a:b]) == pytest.approx(np.linalg.norm(v[a:b]), rel=1e-5, abs=1e-6)
    back = _codecs._rotate(y, sizes) * signs  # (D H)^-1 = H D
    np.testing.assert_allclose(back, v, atol=1e-4 * float(np.abs(v).max()))


def test_rotation_signs_follow_the_documented_bit_order() -> None:
    seed, n = 99, 1000
    words = np.random.PCG64(seed).random_raw((n + 63) // 64)
    bits = np.unpackbits(np.asarray(words, dtype="<u8").view(np.uint8))[:n]
    expected = 1.0 - 2.0 * bits.astype(np.float32)
    signs = rotation_signs(seed, n)
    np.testing.assert_array_equal(signs, expected)
    np.testing.assert_array_equal(rotation_signs(seed, 77), signs[:77])
    assert abs(float(rotation_signs(seed, 1 << 16).mean())) < 0.02
    assert not np.array_equal(rotation_signs(seed + 1, n), signs)


@st.composite
def ans_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    alphabet = draw(st.integers(1, 300))
    weights = np.array(draw(st.lists(st.integers(0, 1000), min_size=alphabet, max_size=alphabet)), np.int64)
    if weights.sum() == 0:
        weights[0] = 1
    lanes = draw(st.integers(1, 64))
    steps = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    symbols = rng.choice(alphabet, size=steps * lanes, p=weights / weights.sum())
    return symbols, weights, lanes


@settings(max_examples=60, deadline=None)
@given(case=ans_cases(), payload_seed=st.integers(0, 2**32 - 1))
def test_ans_round_trips_symbols_and_the_initial_payload(
    case: tuple[np.ndarray, np.ndarray, int], payload_seed: int
) -> None:
    symbols, weights, lanes = case
    freqs = _ans.normalize_frequencies(weights)
    assert int(freqs.sum()) == 1 << _ans.PRECISION_BITS and ((freqs > 0) == (weights > 0)).all()
    initial = (np.random.default_rng(payload_seed).integers(0, 2**31, lanes) + 2**31).astype(np.uint32)
    states, words = _ans.encode(symbols, freqs, lanes, initial)
    decoded, back = _ans.decode(states, words, freqs, symbols.size, lanes)
    np.testing.assert_array_equal(decoded, symbols)
    np.testing.assert_array_equal(back, initial)


def test_ans_codes_within_a_hair_of_the_model_cross_entropy() -> None:
    rng = np.random.default_rng(4)
    p = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    lanes, steps = 256, 400
    symbols = rng.choice(len(p), size=lanes * steps, p=p)
    freqs = _ans.normalize_frequencies(np.round(p * 1e6).astype(np.int64))
    ideal = float(-np.log2(freqs[symbols] / (1 << _ans.PRECISION_BITS)).sum())
    initial = (rng.integers(0, 2**31, lanes) + 2**31).astype(np.uint32)
    _, words = _ans.encode(symbols, freqs, lanes, initial)
    # Sent: the words and the final states; got back for free: 31 payload bits per lane.
    net = 16 * len(words) + 32 * lanes - _ans.INITIAL_PAYLOAD_BITS * lanes
    # Per lane: the final state sent whole (about 8 bits more than it holds) plus rounding; never below the model.
    assert ideal - 2 * lanes <= net <= ideal + 16 * lanes, (net - ideal) / lanes


def test_ans_decoder_rejects_inconsistent_streams() -> None:
    rng = np.random.default_rng(5)
    freqs = _ans.normalize_frequencies(np.array([5, 3, 1, 1]))
    lanes = 8
    symbols = rng.choice(4, size=lanes * 50, p=[0.5, 0.3, 0.1, 0.1])
    initial = (rng.integers(0, 2**31, lanes) + 2**31).astype(np.uint32)
    states, words = _ans.encode(symbols, freqs, lanes, initial)
    with pytest.raises(_ans.AnsFormatError, match="truncated|valid initial"):
        _ans.decode(states, words[:-1], freqs, symbols.size, lanes)
    with pytest.raises(_ans.AnsFormatError, match="trailing"):
        _ans.decode(states, np.concatenate([words, words[:1]]), freqs, symbols.size, lanes)
    with pytest.raises(_ans.AnsFormatError, match="out of range"):
        _ans.decode(np.full(lanes, 5, np.uint32), words, freqs, symbols.size, lanes)
    with pytest.raises(_ans.AnsFormatError, match="lanes"):
        _ans.decode(states, words, freqs, symbols.size + 1, lanes)
    with pytest.raises(_ans.AnsFormatError, match="precision"):
        _ans.decode(states, words, freqs * 2, symbols.size, lanes)
    with pytest.raises(ValueError, match="frequency 0"):
        _ans.encode(np.full(lanes, 3), np.array([1 << 16, 0, 0, 0]), lanes, initial)


def test_product_frequencies_follow_the_product_model() -> None:
    base = _ans.normalize_frequencies(np.array([700, 250, 45, 5]))
    for group in (1, 2, 4):
        f = _ans.product_frequencies(base, group)
        assert f.size == 4**group and int(f.sum()) == 1 << 16 and (f > 0).all()
        p = base / base.sum()
        joint = p
        for _ in range(group - 1):
            joint = np.outer(p, joint).ravel()
        loss = float(np.sum(joint * np.log2(joint / (f / f.sum()))))
        assert loss < 0.002 * group
    with pytest.raises(_ans.AnsFormatError):
        _ans.product_frequencies(np.ones(100, np.int64), 3)


@pytest.mark.parametrize(("alphabet", "group"), [(4, 4), (24, 2), (3, 4), (5, 1)])
def test_grouped_symbols_pack_and_unpack_by_their_definition(alphabet: int, group: int) -> None:
    rng = np.random.default_rng(alphabet)
    k = rng.integers(0, alphabet, 4000 * group).astype(np.uint8)
    symbols = _codecs._group_symbols(k, alphabet, group)
    expected = (k.reshape(-1, group).astype(np.int64) * alphabet ** np.arange(group)).sum(axis=1)
    np.testing.assert_array_equal(symbols, expected)
    if group in (1, 2, 4, 8):
        odd = _codecs._odd_digits_view(alphabet, group).take(symbols).view(np.uint8)
        np.testing.assert_array_equal(odd, 2 * k + 1)


def test_rotated_coding_is_close_to_the_empirical_entropy() -> None:
    """Coded bits minus the empirical entropy of the (sign, magnitude) symbols: the 0.05 bit/coord budget."""
    rng = np.random.default_rng(8)
    for n in (1 << 17, 1 << 20):
        x = rng.standard_t(3, n).astype(np.float32)
        for bits in (2, 4):
            data = RotatedCodec(bits=bits).encode(x, rng=np.random.default_rng(n))
            seed = int.from_bytes(data[17:25], "little")
            quant = _codecs._quantise(x, seed, bits, block_sizes(n))
            assert quant.magnitudes is not None
            symbols = quant.negative.astype(np.int64) + 2 * quant.magnitudes.astype(np.int64)
            p = np.bincount(symbols) / n
            p = p[p > 0]
            entropy = float(-(p * np.log2(p)).sum())
            coded = len(data) * 8 / n
            assert entropy <= coded <= entropy + 0.05, (n, bits, coded - entropy)
            assert coded <= bits


def test_rotated_decoder_holds_payloads_to_the_lane_count_of_their_size() -> None:
    """A forged lane count (one lane: a Python step per symbol) is refused before any decoding work."""
    x = np.random.default_rng(9).standard_normal(70_000).astype(np.float32)
    codec = RotatedCodec(bits=2)
    data = codec.encode(x, rng=np.random.default_rng(1))
    bits, seed, lanes, n_words = _codecs._ROT_PARAMS.unpack_from(data, 16)
    assert lanes == _codecs._lane_count(sum(block_sizes(x.size))) > 1
    body = data[16:-4]
    for forged_lanes in (1, lanes - 1, lanes + 1):
        params = _codecs._ROT_PARAMS.pack(bits, seed, forged_lanes, n_words)
        forged = _codecs._frame("rotated", 0, x.size, params + body[_codecs._ROT_PARAMS.size :])
        with pytest.raises(UpdateCodecError, match="lane count"):
            codec.decode(forged, max_coords=x.size)
