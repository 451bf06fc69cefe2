"""Property tests of every SecAgg parser: round trips, and truncated/corrupted input refused."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import flclient.secagg as sa
from flclient.secagg import SecAggParams, SecAggProtocolError, pack_bits, unpack_bits
from flclient.secagg import _messages as m
from flclient.secagg import _shamir as sh

_KEY = Ed25519PrivateKey.generate()


def test_public_names() -> None:
    assert sa.__all__ == sorted(sa.__all__)
    assert {n for n in dir(sa) if not n.startswith("_")} >= set(sa.__all__)


@st.composite
def packed_values(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 32))
    vals = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    return np.array(vals, dtype=np.uint32), bits


@given(packed_values())
def test_packing_round_trip(case: tuple[np.ndarray, int]) -> None:
    values, bits = case
    data = pack_bits(values, bits)
    assert len(data) == -(-values.size * bits // 8)
    np.testing.assert_array_equal(unpack_bits(data, bits, values.size), values)


@given(packed_values(), st.data())
def test_packing_rejects_truncation_and_padding(case: tuple[np.ndarray, int], data: st.DataObject) -> None:
    values, bits = case
    blob = pack_bits(values, bits)
    if blob:
        cut = data.draw(st.integers(0, len(blob) - 1))
        with pytest.raises(SecAggProtocolError):
            unpack_bits(blob[:cut], bits, values.size)
        spare = len(blob) * 8 - values.size * bits
        if spare:
            with pytest.raises(SecAggProtocolError, match="padding"):
                unpack_bits(blob[:-1] + bytes([blob[-1] | 0x80]), bits, values.size)
    with pytest.raises(SecAggProtocolError):
        unpack_bits(blob + b"\0", bits, values.size)


def test_packing_refuses_values_too_wide() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([8], dtype=np.uint32), 3)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(1, 8), st.data())
def test_shamir_round_trip_from_any_t_shares(s1: bytes, s2: bytes, t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(t, 12))
    xs = data.draw(st.lists(st.integers(1, sh.PRIME - 1), min_size=n, max_size=n, unique=True))
    rng = np.random.default_rng(0)
    shares = sh.split([s1, s2], t, xs, rng.bytes)
    pick = data.draw(st.lists(st.sampled_from(range(n)), min_size=t, max_size=t, unique=True))
    got = sh.combine([xs[i] for i in pick], shares[pick])
    assert sh.elements_to_secret(got[0]) == s1
    assert sh.elements_to_secret(got[1]) == s2
    for row in shares:
        assert sh.decode_share(sh.encode_share(row[0])).tolist() == row[0].tolist()


@given(st.binary(min_size=0, max_size=40))
def test_share_decoding_rejects_bad_lengths_and_values(blob: bytes) -> None:
    if len(blob) != sh.SHARE_BYTES:
        with pytest.raises(SecAggProtocolError):
            sh.decode_share(blob)
    with pytest.raises(SecAggProtocolError, match="outside the field"):
        sh.decode_share(b"\xff\xff\xff\xff" * sh.CHUNKS)


def test_fewer_than_t_shares_do_not_give_the_secret() -> None:
    secret = bytes(range(32))
    shares = sh.split([secret], 3, [1, 2, 3], np.random.default_rng(1).bytes)
    # most often the interpolation is not even a 32-byte value; it is never the secret
    with contextlib.suppress(SecAggProtocolError):
        assert sh.elements_to_secret(sh.combine([1, 2], shares[:2])[0]) != secret


params_strategy = st.builds(
    lambda n, seed, bits, tag, dim: SecAggParams(
        round_tag=tag,
        node_ids=tuple(range(5, 5 + n)),
        degree=n - 1,
        threshold=(n - 1) // 2 + 1,
        bits=bits,
        clip=0.5,
        dim=dim,
        graph_seed=seed,
    ),
    st.integers(2, 30),
    st.binary(min_size=32, max_size=32),
    st.integers(12, 32),
    st.text(max_size=20),
    st.integers(1, 1 << 20),
)


@given(params_strategy, st.data())
def test_params_round_trip_and_rejection(params: SecAggParams, data: st.DataObject) -> None:
    blob = params.to_bytes()
    assert SecAggParams.from_bytes(blob) == params
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggProtocolError):
        SecAggParams.from_bytes(blob[:cut])
    with pytest.raises(SecAggProtocolError):
        SecAggParams.from_bytes(blob + b"x")


@given(st.integers(1, 4), st.integers(0, 1000), st.binary(min_size=16, max_size=16), st.binary(max_size=300), st.data())
def test_envelope_round_trip_and_tampering(
    kind: int, sender: int, rid: bytes, body: bytes, data: st.DataObject
) -> None:
    blob = m.seal(kind, sender, rid, body, _KEY)
    env = m.decode_envelope(blob)
    assert (env.kind, env.sender, env.round_id, env.body) == (kind, sender, rid, body)
    pub = _KEY.public_key().public_bytes_raw()
    env.verify(pub)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggProtocolError):
        m.decode_envelope(blob[:cut])
    pos = data.draw(st.integers(5, len(blob) - 1))
    flipped = blob[:pos] + bytes([blob[pos] ^ 0x01]) + blob[pos + 1 :]
    with pytest.raises(SecAggProtocolError):
        m.decode_envelope(flipped).verify(pub)


@given(st.integers(1, 4), st.binary(min_size=16, max_size=16), st.binary(max_size=300), st.data())
def test_request_round_trip_and_corruption(stage: int, rid: bytes, body: bytes, data: st.DataObject) -> None:
    blob = m.Request(stage, rid, body).to_bytes()
    assert m.decode_request(blob) == m.Request(stage, rid, body)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggProtocolError):
        m.decode_request(blob[:cut])
    pos = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggProtocolError):
        m.decode_request(blob[:pos] + bytes([blob[pos] ^ 0x10]) + blob[pos + 1 :])


@given(st.dictionaries(st.integers(0, 2**32 - 1), st.binary(max_size=80), max_size=8), st.data())
def test_relayed_and_key_shares_bodies(cts: dict[int, bytes], data: st.DataObject) -> None:
    assert m.decode_relayed_shares(m.encode_relayed_shares(cts)) == cts
    ks = m.KeyShares(b"c" * 32, cts)
    assert m.KeyShares.from_bytes(ks.to_bytes()) == ks
    blob = ks.to_bytes()
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggProtocolError):
        m.KeyShares.from_bytes(blob[:cut])


@given(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=10), st.lists(st.integers(0, 2**32 - 1), max_size=5))
def test_unmask_bodies(survivors: list[int], dropped: list[int]) -> None:
    req = m.UnmaskRequest(tuple(survivors), tuple(dropped))
    assert m.UnmaskRequest.from_bytes(req.to_bytes()) == req
    with pytest.raises(SecAggProtocolError):
        m.UnmaskRequest.from_bytes(req.to_bytes()[:-1])
    shares = m.UnmaskShares(tuple(m.RevealedShare(p, p % 2, bytes(sh.SHARE_BYTES)) for p in survivors))
    assert m.UnmaskShares.from_bytes(shares.to_bytes()) == shares
    with pytest.raises(SecAggProtocolError):
        m.UnmaskShares.from_bytes(shares.to_bytes() + b"\0")
