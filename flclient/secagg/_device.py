"""The device side of SecAgg+ as an explicit, persisted state machine.

Stages: ``advertised -> shared -> masked -> done``, or ``dropped`` from any of them. Every request is answered by
computing the reply, then committing the new stage *and* the reply in one transaction, then returning it. A
device restarted mid-protocol therefore either re-sends the identical reply (the same request again), continues
with the next stage, or has dropped out; it never answers one stage twice with different content, so it never
sends two different masked inputs and never reveals both shares (self-mask seed and mask key) of one neighbour.
Secrets are erased from the store when the round ends or the device drops out.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .._errors import SecAggError, SecAggProtocolError, SecAggStateError
from . import _messages as m
from ._packing import pack_bits
from ._params import SecAggParams
from ._prg import MaskExpander, derive_key
from ._quant import quantize, skellam_noise
from ._shamir import SHARE_BYTES, decode_share, encode_share, split
from ._store import RoundRecord, SecAggStore

__all__ = ["SecAggDevice", "commitment", "open_share", "pair_sign", "seal_share"]

RandomBytes = Callable[[int], bytes]
UpdateSource = Callable[[], npt.ArrayLike]

_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_STAGE_AFTER = {
    m.STAGE_SETUP: "advertised",
    m.STAGE_SHARE_KEYS: "shared",
    m.STAGE_COLLECT: "masked",
    m.STAGE_UNMASK: "done",
}
_STAGE_BEFORE = {m.STAGE_SHARE_KEYS: "advertised", m.STAGE_COLLECT: "shared", m.STAGE_UNMASK: "masked"}


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def commitment(round_id: bytes, seed: bytes) -> bytes:
    """The public commitment to a self-mask seed (it lets the server check a reconstruction)."""
    return hashlib.sha256(b"flclient-secagg-seed\x00" + round_id + seed).digest()


def pair_sign(me: int, other: int) -> int:
    """+1 if ``me`` adds the pairwise mask shared with ``other``, -1 if it subtracts it."""
    return 1 if me < other else -1


def _share_aead(c_sk: bytes, c_pk_other: bytes, round_id: bytes) -> ChaCha20Poly1305:
    shared = X25519PrivateKey.from_private_bytes(c_sk).exchange(X25519PublicKey.from_public_bytes(c_pk_other))
    return ChaCha20Poly1305(derive_key(shared, round_id=round_id, label=b"share-encryption"))


def seal_share(c_sk: bytes, c_pk_to: bytes, round_id: bytes, sender: int, receiver: int, plaintext: bytes) -> bytes:
    """AEAD-encrypt shares for one neighbour; the direction is in the nonce, both indices in the associated data."""
    nonce = struct.pack("<II4x", sender, receiver)
    aad = round_id + struct.pack("<II", sender, receiver)
    return _share_aead(c_sk, c_pk_to, round_id).encrypt(nonce, plaintext, aad)


def open_share(c_sk: bytes, c_pk_from: bytes, round_id: bytes, sender: int, receiver: int, ct: bytes) -> bytes:
    """Inverse of :func:`seal_share`; a tampered or misaddressed ciphertext raises an error."""
    nonce = struct.pack("<II4x", sender, receiver)
    aad = round_id + struct.pack("<II", sender, receiver)
    try:
        pt = _share_aead(c_sk, c_pk_from, round_id).decrypt(nonce, ct, aad)
    except InvalidTag as exc:
        raise SecAggProtocolError(f"the key shares from device {sender} were tampered with or misaddressed") from exc
    if len(pt) != 8 + 2 * SHARE_BYTES or struct.unpack("<II", pt[:8]) != (sender, receiver):
        raise SecAggProtocolError(f"the key shares from device {sender} are malformed")
    return pt[8:]


@dataclass
class SecAggDevice:
    """One device's SecAgg+ participant: feed it each coordinator request, send back what it returns.

    ``identity`` signs every message; ``store`` persists the state machine (use
    :class:`~flclient.secagg.SqliteSecAggStore` on a device); ``random_bytes`` supplies key material and
    ``rng`` the stochastic rounding and distributed-DP noise (inject both in tests).

    Example::

        device = SecAggDevice(node_id=7, identity=store.identity(), store=store, rng=np.random.default_rng())
        reply = device.handle(request_bytes, update=lambda: flat_clipped_delta)
    """

    node_id: int
    identity: Ed25519PrivateKey
    store: SecAggStore
    rng: np.random.Generator
    random_bytes: RandomBytes = os.urandom
    _expander: MaskExpander | None = field(default=None, init=False, repr=False)

    @property
    def identity_public(self) -> bytes:
        """The raw Ed25519 public key the coordinator should know this device by."""
        return self.identity.public_key().public_bytes(*_RAW)

    def handle(self, request: bytes, *, update: UpdateSource | None = None) -> bytes:
        """Answer one coordinator request; ``update`` (the flat float update) is read only when masking.

        Raises :class:`~flclient.SecAggProtocolError` for a malformed, forged or replayed request and
        :class:`~flclient.SecAggStateError` when the device has dropped out of (or never joined) the round.
        """
        req = m.decode_request(request)
        digest = hashlib.sha256(request).digest()
        record = self.store.load(req.round_id)
        if record is not None and record.stage == _STAGE_AFTER[req.stage]:
            if record.request_digest == digest:
                return record.reply
            raise SecAggProtocolError(
                f"a different request for the {record.stage!r} stage, which this device already answered: refused"
            )
        if req.stage == m.STAGE_SETUP:
            if record is not None:
                raise SecAggProtocolError("setup for a round this device already joined (replayed): refused")
            return self._setup(req, digest)
        if record is None:
            raise SecAggStateError("no state for this round (never joined, or the state was lost): dropping out")
        if record.stage == "dropped":
            raise SecAggStateError("this device dropped out of the round")
        if record.stage != _STAGE_BEFORE[req.stage]:
            raise SecAggProtocolError(
                f"request for stage {req.stage} while at {record.stage!r}: out of order or replayed"
            )
        try:
            if req.stage == m.STAGE_SHARE_KEYS:
                return self._share_keys(req, digest, record)
            if req.stage == m.STAGE_COLLECT:
                if update is None:
                    raise SecAggStateError("the collect stage needs the update")
                return self._collect(req, digest, record, update)
            return self._unmask(req, digest, record)
        except SecAggError as exc:
            self._drop(req.round_id, record, str(exc))
            raise

    def drop(self, round_id: bytes, reason: str = "dropped by the device") -> None:
        """Leave a round for good, erasing its secrets (idempotent)."""
        record = self.store.load(round_id)
        if record is not None and record.stage not in ("done", "dropped"):
            self._drop(round_id, record, reason)

    def _drop(self, round_id: bytes, record: RoundRecord, reason: str) -> None:
        self.store.save(round_id, record.stage, RoundRecord(stage="dropped", state={"reason": reason}))

    # -- stages --------------------------------------------------------------------------------------------------
    def _setup(self, req: m.Request, digest: bytes) -> bytes:
        params = SecAggParams.from_bytes(req.body)
        if params.round_id != req.round_id:
            raise SecAggProtocolError("the setup request's round id does not match its parameters")
        try:
            me = params.index_of(self.node_id)
        except ValueError as exc:
            raise SecAggProtocolError(str(exc)) from exc
        c_sk = X25519PrivateKey.from_private_bytes(self.random_bytes(32))
        s_sk = X25519PrivateKey.from_private_bytes(self.random_bytes(32))
        adv = m.Advertisement(
            c_sk.public_key().public_bytes(*_RAW), s_sk.public_key().public_bytes(*_RAW), self.identity_public
        )
        reply = m.seal(m.ADVERTISE, me, params.round_id, adv.to_bytes(), self.identity)
        state = {"params": req.body.hex(), "me": me, "c_sk": _raw_private(c_sk).hex(), "s_sk": _raw_private(s_sk).hex()}
        self.store.save(
            params.round_id, None, RoundRecord(stage="advertised", state=state, request_digest=digest, reply=reply)
        )
        return reply

    def _share_keys(self, req: m.Request, digest: bytes, record: RoundRecord) -> bytes:
        st = dict(record.state)
        params = SecAggParams.from_bytes(bytes.fromhex(st["params"]))
        me: int = st["me"]
        mine = params.neighbours(me)
        keys: dict[int, list[str]] = {}
        seen: set[bytes] = set()
        own_ok = False
        for env in m.decode_relayed_keys(req.body):
            if env.kind != m.ADVERTISE or env.round_id != params.round_id:
                raise SecAggProtocolError(
                    f"relayed advertisement of device {env.sender} is from another round or stage"
                )
            adv = m.Advertisement.from_bytes(env.body)
            env.verify(adv.identity)
            if env.sender == me:
                own_ok = (
                    adv.identity == self.identity_public
                    and adv.c_pk
                    == X25519PrivateKey.from_private_bytes(bytes.fromhex(st["c_sk"])).public_key().public_bytes(*_RAW)
                    and adv.s_pk
                    == X25519PrivateKey.from_private_bytes(bytes.fromhex(st["s_sk"])).public_key().public_bytes(*_RAW)
                )
                continue
            if env.sender not in mine or env.sender in keys:
                raise SecAggProtocolError(f"device {env.sender} is not a neighbour or is relayed twice")
            if adv.c_pk in seen or adv.s_pk in seen or adv.c_pk == adv.s_pk:
                raise SecAggProtocolError("relayed public keys are not all distinct")
            seen.update((adv.c_pk, adv.s_pk))
            keys[env.sender] = [adv.c_pk.hex(), adv.s_pk.hex(), adv.identity.hex()]
        if not own_ok:
            raise SecAggProtocolError("the relayed keys do not include this device's own advertisement unchanged")
        if len(keys) < params.threshold:
            raise SecAggProtocolError(
                f"only {len(keys)} neighbours advertised keys; the threshold is {params.threshold}"
            )
        seed = self.random_bytes(32)
        order = sorted(keys)
        shares = split([seed, bytes.fromhex(st["s_sk"])], params.threshold, [j + 1 for j in order], self.random_bytes)
        c_sk = bytes.fromhex(st["c_sk"])
        cts = {}
        for row, j in enumerate(order):
            pt = struct.pack("<II", me, j) + encode_share(shares[row, 0]) + encode_share(shares[row, 1])
            cts[j] = seal_share(c_sk, bytes.fromhex(keys[j][0]), params.round_id, me, j, pt)
        body = m.KeyShares(commitment(params.round_id, seed), cts).to_bytes()
        reply = m.seal(m.SHARES, me, params.round_id, body, self.identity)
        st.update(keys={str(j): v for j, v in keys.items()}, seed=seed.hex())
        self.store.save(
            params.round_id, "advertised", RoundRecord(stage="shared", state=st, request_digest=digest, reply=reply)
        )
        return reply

    def _collect(self, req: m.Request, digest: bytes, record: RoundRecord, update: UpdateSource) -> bytes:
        st = dict(record.state)
        params = SecAggParams.from_bytes(bytes.fromhex(st["params"]))
        me: int = st["me"]
        keys: dict[str, list[str]] = st["keys"]
        relayed = m.decode_relayed_shares(req.body)
        if len(relayed) < params.threshold:
            raise SecAggProtocolError(
                f"only {len(relayed)} neighbours shared keys; the threshold is {params.threshold}"
            )
        c_sk = bytes.fromhex(st["c_sk"])
        received: dict[str, str] = {}
        for sender, ct in relayed.items():
            if str(sender) not in keys:
                raise SecAggProtocolError(f"key shares relayed from device {sender}, which is not a neighbour")
            received[str(sender)] = open_share(
                c_sk, bytes.fromhex(keys[str(sender)][0]), params.round_id, sender, me, ct
            ).hex()
        x = np.asarray(update(), dtype=np.float32).reshape(-1)
        if x.size != params.dim:
            raise SecAggStateError(f"the update has {x.size} coordinates; the round expects {params.dim}")
        acc, _clamped = quantize(x, clip=params.clip, levels=params.levels, bits=params.bits, rng=self.rng)
        if params.noise_std > 0:
            variance = (params.noise_std * params.levels / params.clip) ** 2
            acc = (acc.astype(np.int64) + skellam_noise(params.dim, variance=variance, rng=self.rng)).astype(np.uint32)
        expander = self._mask_expander(params)
        expander.add(acc, derive_key(bytes.fromhex(st["seed"]), round_id=params.round_id, label=b"self-mask"))
        s_sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(st["s_sk"]))
        for sender in sorted(relayed):
            shared = s_sk.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(keys[str(sender)][1])))
            expander.add(acc, derive_key(shared, round_id=params.round_id, label=b"pair-mask"), pair_sign(me, sender))
        if params.bits < 32:
            np.bitwise_and(acc, np.uint32((1 << params.bits) - 1), out=acc)
        reply = m.seal(m.MASKED, me, params.round_id, pack_bits(acc, params.bits), self.identity)
        st.update(received=received)
        self.store.save(
            params.round_id, "shared", RoundRecord(stage="masked", state=st, request_digest=digest, reply=reply)
        )
        return reply

    def _unmask(self, req: m.Request, digest: bytes, record: RoundRecord) -> bytes:
        st = dict(record.state)
        params = SecAggParams.from_bytes(bytes.fromhex(st["params"]))
        me: int = st["me"]
        received: dict[str, str] = st["received"]
        ask = m.UnmaskRequest.from_bytes(req.body)
        survivors, dropped = set(ask.survivors), set(ask.dropped)
        if len(survivors) != len(ask.survivors) or len(dropped) != len(ask.dropped) or survivors & dropped:
            raise SecAggProtocolError("the unmask request names a device twice or as both survivor and dropped")
        if not (survivors | dropped) <= {int(k) for k in received}:
            raise SecAggProtocolError("the unmask request names devices that never sent this device key shares")
        if len(survivors) < params.threshold:
            raise SecAggProtocolError(
                f"only {len(survivors)} surviving neighbours (threshold {params.threshold}): refusing to reveal shares"
            )
        out = []
        for peer in sorted(survivors | dropped):
            pt = bytes.fromhex(received[str(peer)])
            kind = 0 if peer in survivors else 1
            share = pt[kind * SHARE_BYTES : (kind + 1) * SHARE_BYTES]
            decode_share(share)
            out.append(m.RevealedShare(peer, kind, share))
        reply = m.seal(m.UNMASK, me, params.round_id, m.UnmaskShares(tuple(out)).to_bytes(), self.identity)
        done = {"me": me, "revealed": {str(s.peer): s.kind for s in out}}
        self.store.save(
            params.round_id, "masked", RoundRecord(stage="done", state=done, request_digest=digest, reply=reply)
        )
        return reply

    def _mask_expander(self, params: SecAggParams) -> MaskExpander:
        if self._expander is None or self._expander.dim != params.dim or self._expander.prg != params.prg:
            self._expander = MaskExpander(params.dim, params.prg)
        return self._expander
