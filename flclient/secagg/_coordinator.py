"""The coordinator's side of SecAgg+, free of any transport: requests out, replies in, the sum at the end.

The coordinator holds only masked inputs: each device's input carries its self-mask, and the pairwise masks
cancel only in the sum. After the masked-input stage it asks surviving neighbours for shares of the survivors'
self-mask seeds and of the dropped devices' mask keys (never both for one device), reconstructs those from
``t`` shares each, verifies every reconstruction (the seed against the device's signed commitment, the mask key
against its signed public key), and removes the masks. A stage left with fewer than ``t`` devices, or a secret
with fewer than ``t`` valid shares, aborts the round with :class:`~flclient.SecAggAborted` saying why.

Every reply is checked: its kind, its sender index, its round id, its Ed25519 signature, and that no device
answers a stage twice; a reply that fails is rejected (its device counts as dropped) and listed in
:attr:`SecAggCoordinator.rejected` with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .._errors import SecAggAborted, SecAggError, SecAggProtocolError
from . import _messages as m
from ._device import commitment, pair_sign
from ._packing import unpack_bits
from ._params import SecAggParams
from ._prg import MaskExpander, derive_key
from ._quant import dequantize_sum
from ._shamir import combine, decode_share, elements_to_secret

__all__ = ["SecAggCoordinator", "SecAggResult"]

U32 = npt.NDArray[np.uint32]
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_MAX_RETRIES = 16


@dataclass(frozen=True, kw_only=True)
class SecAggResult:
    """The outcome of a round: the ring sum of the survivors' quantised inputs and who took part."""

    params: SecAggParams
    total: U32
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict)

    def float_sum(self) -> npt.NDArray[np.float32]:
        """The sum of the survivors' updates, dequantised."""
        p = self.params
        return dequantize_sum(self.total, clip=p.clip, levels=p.levels, bits=p.bits)

    def mean(self) -> npt.NDArray[np.float32]:
        """The survivors' mean update."""
        return (self.float_sum() / len(self.survivors)).astype(np.float32)


class SecAggCoordinator:
    """Drive one round: call the ``*`` methods in order, each with the replies (by device index) of the last.

    ``identities`` optionally pins each node id's Ed25519 public key (a registry the operator trusts); without
    it the coordinator accepts the identity a device advertises (trust on first use within the round).

    Example::

        coord = SecAggCoordinator(params)
        requests = coord.setup()                 # {index: bytes} to send
        requests = coord.share_keys(replies)     # replies: {index: bytes} from those that answered
        requests = coord.collect(replies)
        requests = coord.unmask(replies)
        result = coord.finish(replies)           # SecAggResult; raises SecAggAborted when it cannot
    """

    def __init__(self, params: SecAggParams, *, identities: Mapping[int, bytes] | None = None) -> None:
        self.params = params
        self._identities = dict(identities or {})
        self.rejected: dict[int, str] = {}
        self._stage = 0
        self._adverts: dict[int, tuple[m.Advertisement, bytes]] = {}
        self._commitments: dict[int, bytes] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._masked: dict[int, U32] = {}
        self._u2: set[int] = set()
        self._unmask_asked: dict[int, m.UnmaskRequest] = {}

    # -- helpers -------------------------------------------------------------------------------------------------
    def _advance(self, stage: int) -> None:
        if self._stage != stage - 1:
            raise ValueError(f"coordinator stages must run in order; at {self._stage}, asked for {stage}")
        self._stage = stage

    def _open(self, index: int, data: bytes, kind: int, expected: set[int]) -> m.Envelope | None:
        try:
            env = m.decode_envelope(data)
            if env.round_id != self.params.round_id:
                raise SecAggProtocolError(f"device {index}: message from another round (replayed)")
            if env.kind != kind:
                raise SecAggProtocolError(
                    f"device {index}: a {m.KIND_NAMES[env.kind]} message at the wrong stage (replayed)"
                )
            if env.sender != index:
                raise SecAggProtocolError(f"device {index}: message claims to come from device {env.sender}")
            if index not in expected:
                raise SecAggProtocolError(f"device {index}: not expected at this stage")
            if kind != m.ADVERTISE:
                env.verify(self._adverts[index][0].identity)
            return env
        except SecAggError as exc:
            self.rejected[index] = exc.reason
            return None

    def _request(self, stage: int, body: bytes) -> bytes:
        return m.Request(stage, self.params.round_id, body).to_bytes()

    def _need(self, alive: Collection[int], what: str) -> None:
        if len(alive) < self.params.threshold:
            raise SecAggAborted(
                f"only {len(alive)} devices {what}; at least t = {self.params.threshold} are needed: round aborted"
            )

    # -- stages --------------------------------------------------------------------------------------------------
    def setup(self) -> dict[int, bytes]:
        """Stage 0: the round parameters, for every device."""
        self._advance(1)
        body = self.params.to_bytes()
        return {i: self._request(m.STAGE_SETUP, body) for i in range(self.params.n)}

    def share_keys(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Stage 1 replies (advertised keys) in; each device's neighbours' signed advertisements out."""
        self._advance(2)
        seen: set[bytes] = set()
        for i, data in sorted(replies.items()):
            env = self._open(i, data, m.ADVERTISE, set(range(self.params.n)))
            if env is None:
                continue
            try:
                adv = m.Advertisement.from_bytes(env.body)
                pinned = self._identities.get(self.params.node_ids[i])
                if pinned is not None and pinned != adv.identity:
                    raise SecAggProtocolError(f"device {i}: advertised identity is not the registered one")
                env.verify(adv.identity)
                if {adv.c_pk, adv.s_pk} & seen or adv.c_pk == adv.s_pk:
                    raise SecAggProtocolError(f"device {i}: reuses a public key")
            except SecAggError as exc:
                self.rejected[i] = exc.reason
                continue
            seen.update((adv.c_pk, adv.s_pk))
            self._adverts[i] = (adv, data)
        self._need(self._adverts, "advertised keys")
        graph = self.params.graph
        out = {}
        for i in self._adverts:
            relay = [self._adverts[j][1] for j in sorted(graph[i] | {i}) if j in self._adverts]
            out[i] = self._request(m.STAGE_SHARE_KEYS, m.encode_relayed_keys(relay))
        return out

    def collect(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Stage 2 replies (encrypted key shares) in; each device's incoming ciphertexts out."""
        self._advance(3)
        graph = self.params.graph
        for i, data in sorted(replies.items()):
            env = self._open(i, data, m.SHARES, set(self._adverts))
            if env is None:
                continue
            try:
                ks = m.KeyShares.from_bytes(env.body)
                if set(ks.ciphertexts) != graph[i] & set(self._adverts):
                    raise SecAggProtocolError(f"device {i}: key shares not addressed to exactly its neighbours")
            except SecAggError as exc:
                self.rejected[i] = exc.reason
                continue
            self._commitments[i] = ks.commitment
            self._ciphertexts[i] = ks.ciphertexts
        self._u2 = set(self._commitments)
        self._need(self._u2, "shared their keys")
        out = {}
        for j in sorted(self._u2):
            incoming = {i: self._ciphertexts[i][j] for i in sorted(graph[j] & self._u2)}
            out[j] = self._request(m.STAGE_COLLECT, m.encode_relayed_shares(incoming))
        return out

    def unmask(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Stage 3 replies (masked inputs) in; each survivor's list of surviving and dropped neighbours out."""
        self._advance(4)
        p = self.params
        for i, data in sorted(replies.items()):
            env = self._open(i, data, m.MASKED, self._u2)
            if env is None:
                continue
            try:
                self._masked[i] = unpack_bits(env.body, p.bits, p.dim)
            except SecAggError as exc:
                self.rejected[i] = exc.reason
        u3 = set(self._masked)
        self._need(u3, "sent a masked input")
        out = {}
        for j in sorted(u3):
            near = p.graph[j] & self._u2
            ask = m.UnmaskRequest(tuple(sorted(near & u3)), tuple(sorted(near - u3)))
            self._unmask_asked[j] = ask
            out[j] = self._request(m.STAGE_UNMASK, ask.to_bytes())
        return out

    def finish(self, replies: Mapping[int, bytes]) -> SecAggResult:
        """Stage 4 replies (revealed shares) in; the unmasked sum out."""
        self._advance(5)
        p = self.params
        u3 = set(self._masked)
        dropped = self._u2 - u3
        shares: dict[tuple[int, int], dict[int, bytes]] = {}
        answered = 0
        for j, data in sorted(replies.items()):
            env = self._open(j, data, m.UNMASK, set(self._unmask_asked))
            if env is None:
                continue
            try:
                body = m.UnmaskShares.from_bytes(env.body)
                ask = self._unmask_asked[j]
                expected = {(s, 0) for s in ask.survivors} | {(d, 1) for d in ask.dropped}
                got = {(s.peer, s.kind) for s in body.shares}
                if got != expected or len(got) != len(body.shares):
                    raise SecAggProtocolError(f"device {j}: revealed shares do not match what it was asked for")
            except SecAggError as exc:
                self.rejected[j] = exc.reason
                continue
            answered += 1
            for s in body.shares:
                shares.setdefault((s.peer, s.kind), {})[j] = s.share
        if answered < self.params.threshold:
            raise SecAggAborted(
                f"only {answered} devices revealed their shares; at least t = {self.params.threshold} are needed:"
                " round aborted"
            )
        total = np.zeros(p.dim, dtype=np.uint32)
        for i in sorted(u3):
            np.add(total, self._masked[i], out=total)
        expander = MaskExpander(p.dim, p.prg)
        for i in sorted(u3):
            seed = self._reconstruct(i, 0, shares.get((i, 0), {}), self._seed_check(i))
            expander.add(total, derive_key(seed, round_id=p.round_id, label=b"self-mask"), -1)
        for i in sorted(dropped):
            s_pk = self._adverts[i][0].s_pk
            sk = self._reconstruct(i, 1, shares.get((i, 1), {}), _key_check(s_pk))
            s_sk = X25519PrivateKey.from_private_bytes(sk)
            for j in sorted(p.graph[i] & u3):
                shared = s_sk.exchange(X25519PublicKey.from_public_bytes(self._adverts[j][0].s_pk))
                expander.add(total, derive_key(shared, round_id=p.round_id, label=b"pair-mask"), -pair_sign(j, i))
        if p.bits < 32:
            np.bitwise_and(total, np.uint32((1 << p.bits) - 1), out=total)
        return SecAggResult(
            params=p,
            total=total,
            survivors=tuple(p.node_ids[i] for i in sorted(u3)),
            dropped=tuple(p.node_ids[i] for i in sorted(set(range(p.n)) - u3)),
            rejected=dict(self.rejected),
        )

    def _seed_check(self, owner: int) -> Callable[[bytes], bool]:
        expected = self._commitments[owner]
        round_id = self.params.round_id

        def check(seed: bytes) -> bool:
            return commitment(round_id, seed) == expected

        return check

    def _reconstruct(self, owner: int, kind: int, held: Mapping[int, bytes], check: Callable[[bytes], bool]) -> bytes:
        what = "self-mask seed" if kind == 0 else "mask key"
        t = self.params.threshold
        valid = {}
        for j, raw in sorted(held.items()):
            try:
                valid[j + 1] = decode_share(raw)
            except SecAggError:
                continue
        if len(valid) < t:
            raise SecAggAborted(f"device {owner}'s {what} has {len(valid)} shares, fewer than t = {t}: round aborted")
        xs = sorted(valid)
        # A forged share spoils a reconstruction; try other t-subsets until one passes the public check.
        for attempt in range(_MAX_RETRIES):
            pick = xs[attempt : attempt + t] if attempt + t <= len(xs) else _rotate(xs, attempt)[:t]
            try:
                secret = elements_to_secret(combine(pick, np.stack([valid[x] for x in pick])))
            except SecAggError:
                continue
            if check(secret):
                return secret
        raise SecAggAborted(f"device {owner}'s {what} could not be reconstructed from consistent shares: round aborted")


def _rotate(xs: list[int], k: int) -> list[int]:
    h = hashlib.sha256(k.to_bytes(4, "little")).digest()
    return sorted(xs, key=lambda x: hashlib.sha256(h + x.to_bytes(4, "little")).digest())


def _key_check(s_pk: bytes) -> Callable[[bytes], bool]:
    def check(raw: bytes) -> bool:
        return X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(*_RAW) == s_pk

    return check
