"""The whole protocol in process: exact sums under dropouts, aborts, forged/replayed/tampered messages."""

from __future__ import annotations

import numpy as np
import pytest

from flclient.secagg import SecAggAborted, pack_bits
from flclient.secagg._messages import Request, decode_request

from ._sim import Federation

N, D = 50, 257


def _quantised_sum(fed: Federation, survivors: list[int]) -> np.ndarray:
    """Recompute every survivor's quantised input with its device's rng seed (the device's own first draw)."""
    p = fed.params
    total = np.zeros(p.dim, dtype=np.uint64)
    for i in survivors:
        total += fed.quantised(i)
    return (total % (1 << p.bits)).astype(np.uint32)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.3])
def test_unmasked_sum_is_exact_with_dropouts_after_masking(fraction: float) -> None:
    fed = Federation(N, D, seed=1)
    dropped = set(np.random.default_rng(5).choice(N, size=int(fraction * N), replace=False).tolist())
    result = fed.run(drop_after_shares=dropped)
    survivors = sorted(set(range(N)) - dropped)
    assert result.survivors == tuple(1000 + i for i in survivors)
    np.testing.assert_array_equal(result.total, _quantised_sum(fed, survivors))
    expected = np.sum([fed.inputs[i] for i in survivors], axis=0)
    assert np.abs(result.float_sum() - expected).max() < len(survivors) / fed.params.levels
    assert result.rejected == {}


def test_dropouts_in_every_stage() -> None:
    fed = Federation(N, D, seed=2)
    result = fed.run(drop_after_shares={3, 4}, drop_before_unmask={7, 8, 9})
    survivors = sorted(set(range(N)) - {3, 4})
    np.testing.assert_array_equal(result.total, _quantised_sum(fed, survivors))


def test_below_threshold_aborts_with_the_reason() -> None:
    fed = Federation(N, D, seed=3)
    with pytest.raises(SecAggAborted, match=r"only 24 devices sent a masked input; at least t = 25"):
        fed.run(drop_after_shares=set(range(26)))


def test_too_few_revealers_aborts() -> None:
    fed = Federation(N, D, seed=4)
    with pytest.raises(SecAggAborted, match="revealed their shares|fewer than t"):
        fed.run(drop_before_unmask=set(range(30)))


def test_server_never_receives_an_unmasked_input() -> None:
    fed = Federation(12, 4096, seed=6, dropout=0.2)
    result = fed.run()
    p = fed.params
    plain = [fed.quantised(i) for i in range(12)]
    packed = [pack_bits(q, p.bits) for q in plain]
    for blob in fed.seen:
        for q in packed:
            assert q[:64] not in blob
    masked = [m for m in fed.coordinator._masked.values()]
    for q, y in zip(plain, masked, strict=True):
        # a masked input agrees with the plain one on about 1 coordinate in 2^b
        assert np.mean(q == y) < 0.01
    assert len(result.survivors) == 12


def test_wrong_signature_is_rejected() -> None:
    fed = Federation(N, D, seed=7)

    def forge(stage: int, i: int, blob: bytes) -> bytes:
        return blob[:-1] + bytes([blob[-1] ^ 1]) if (stage, i) == (3, 5) else blob

    result = fed.run(tamper=forge)
    assert "wrong signature" in result.rejected[5]
    assert 1005 not in result.survivors


def test_replayed_message_is_rejected() -> None:
    fed = Federation(N, D, seed=8)
    replay: dict[str, bytes] = {}

    def swap(stage: int, i: int, blob: bytes) -> bytes:
        if (stage, i) == (2, 9):
            replay["shares"] = blob
        if (stage, i) == (3, 9):
            return replay["shares"]  # an earlier stage's message, replayed
        return blob

    result = fed.run(tamper=swap)
    assert "replayed" in result.rejected[9]
    # and a message from another round
    other = Federation(N, D, seed=9)
    old = other.coordinator.setup()[0]
    adv = other.devices[0].handle(old)
    fed2 = Federation(N, D, seed=10)
    result2 = fed2.run(tamper=lambda s, i, b: adv if (s, i) == (1, 0) else b)
    assert "another round" in result2.rejected[0]


def test_tampered_share_is_detected_by_the_receiver() -> None:
    fed = Federation(N, D, seed=11)

    def flip(stage: int, i: int, blob: bytes) -> bytes:
        if i != 2:
            return blob
        # a malicious relay: flips one ciphertext bit and fixes the request's CRC
        req = decode_request(blob)
        body = req.body[:-5] + bytes([req.body[-5] ^ 0x40]) + req.body[-4:]
        return Request(req.stage, req.round_id, body).to_bytes()

    result = fed.run(tamper_requests=flip)
    assert "tampered" in fed.device_errors[2]
    assert 1002 not in result.survivors  # device 2 refused the round; the rest still aggregate exactly
    survivors = [i for i in range(N) if i != 2]
    np.testing.assert_array_equal(result.total, _quantised_sum(fed, survivors))


def test_distributed_noise_sums() -> None:
    fed = Federation(20, 2000, seed=12, noise_std=0.05, bits=24, dropout=0.2)
    result = fed.run()
    expected = np.sum(fed.inputs, axis=0)
    err = result.float_sum() - expected
    assert 0.5 * 0.05 * np.sqrt(20) < err.std() < 2 * 0.05 * np.sqrt(20)
