"""Wire formats of the SecAgg+ messages.

A device's message is a signed envelope::

    offset  size  field
    0       3     magic b"FSA"
    3       1     format version (1)
    4       1     kind (1 advertise keys, 2 key shares, 3 masked input, 4 unmask shares)
    5       4     sender's protocol index (u32)
    9       16    round id (binds the message to one round's parameters)
    25      4     body length (u32)
    29      ...   body
    -64     64    Ed25519 signature over the 29 header bytes followed by sha256(body)

A coordinator's request carries no signature (the device checks what it relays: neighbours' signatures, AEAD)
but a CRC-32 against corruption::

    0  3 magic b"FSR" | 3 1 version | 4 1 stage (1 setup, 2 share keys, 3 collect input, 4 unmask)
    5 16 round id     | 21 4 body length | 25 ... body | -4 4 CRC-32 of everything before

All integers are little-endian. Parsers refuse truncated, padded, oversized and corrupted input with
:class:`~flclient.SecAggProtocolError`.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._errors import SecAggProtocolError
from ._shamir import SHARE_BYTES
from ._wire import Reader

__all__ = [
    "Advertisement",
    "Envelope",
    "KeyShares",
    "Request",
    "RevealedShare",
    "UnmaskRequest",
    "UnmaskShares",
    "decode_envelope",
    "decode_relayed_keys",
    "decode_relayed_shares",
    "decode_request",
    "encode_relayed_keys",
    "encode_relayed_shares",
    "seal",
]

ADVERTISE, SHARES, MASKED, UNMASK = 1, 2, 3, 4
KIND_NAMES = {ADVERTISE: "advertise", SHARES: "shares", MASKED: "masked-input", UNMASK: "unmask"}
STAGE_SETUP, STAGE_SHARE_KEYS, STAGE_COLLECT, STAGE_UNMASK = 1, 2, 3, 4

_VERSION = 1
_ENV_HEAD = struct.Struct("<3sBBI16sI")
_REQ_HEAD = struct.Struct("<3sBB16sI")
_SIG = 64
_CRC = struct.Struct("<I")
MAX_BODY = 1 << 30


@dataclass(frozen=True)
class Envelope:
    """A parsed device message; :meth:`verify` checks its signature."""

    kind: int
    sender: int
    round_id: bytes
    body: bytes
    signed: bytes
    signature: bytes

    def verify(self, identity: bytes) -> None:
        """Raise :class:`~flclient.SecAggProtocolError` unless ``identity`` (raw Ed25519 key) signed it."""
        try:
            Ed25519PublicKey.from_public_bytes(identity).verify(self.signature, self.signed)
        except (InvalidSignature, ValueError) as exc:
            raise SecAggProtocolError(f"device {self.sender}: wrong signature on its {KIND_NAMES[self.kind]}") from exc


def _signed_part(head: bytes, body: bytes) -> bytes:
    return head + hashlib.sha256(body).digest()


def seal(kind: int, sender: int, round_id: bytes, body: bytes, key: Ed25519PrivateKey) -> bytes:
    """A signed envelope around ``body``."""
    head = _ENV_HEAD.pack(b"FSA", _VERSION, kind, sender, round_id, len(body))
    return b"".join((head, body, key.sign(_signed_part(head, body))))


def decode_envelope(data: bytes | memoryview, *, max_body: int = MAX_BODY) -> Envelope:
    """Parse (not verify) a device message."""
    r = Reader(data, "device message")
    head = bytes(r.take(_ENV_HEAD.size))
    magic, version, kind, sender, round_id, length = _ENV_HEAD.unpack(head)
    if magic != b"FSA" or version != _VERSION or kind not in KIND_NAMES:
        raise SecAggProtocolError("not a SecAgg device message of a known version and kind")
    if length > max_body:
        raise SecAggProtocolError("device message body is larger than allowed")
    body = bytes(r.take(length))
    signature = bytes(r.take(_SIG))
    r.finish()
    return Envelope(kind, sender, round_id, body, _signed_part(head, body), signature)


@dataclass(frozen=True)
class Request:
    """A parsed coordinator request."""

    stage: int
    round_id: bytes
    body: bytes

    def to_bytes(self) -> bytes:
        """Wire form."""
        head = _REQ_HEAD.pack(b"FSR", _VERSION, self.stage, self.round_id, len(self.body))
        out = head + self.body
        return out + _CRC.pack(zlib.crc32(out))


def decode_request(data: bytes | memoryview, *, max_body: int = MAX_BODY) -> Request:
    """Parse a coordinator request."""
    buf = bytes(data)
    if len(buf) < _REQ_HEAD.size + _CRC.size or _CRC.unpack(buf[-4:])[0] != zlib.crc32(buf[:-4]):
        raise SecAggProtocolError("coordinator request is truncated or corrupted (CRC mismatch)")
    r = Reader(buf[:-4], "coordinator request")
    magic, version, stage, round_id, length = r.unpack(_REQ_HEAD)
    if magic != b"FSR" or version != _VERSION or stage not in (1, 2, 3, 4):
        raise SecAggProtocolError("not a SecAgg coordinator request of a known version and stage")
    if length > max_body:
        raise SecAggProtocolError("coordinator request body is larger than allowed")
    body = bytes(r.take(length))
    r.finish()
    return Request(stage, bytes(round_id), body)


@dataclass(frozen=True)
class Advertisement:
    """Stage 1: the device's X25519 keys for share encryption (``c_pk``) and masks (``s_pk``), and its identity."""

    c_pk: bytes
    s_pk: bytes
    identity: bytes

    def to_bytes(self) -> bytes:
        """Body bytes (96)."""
        return self.c_pk + self.s_pk + self.identity

    @classmethod
    def from_bytes(cls, data: bytes) -> Advertisement:
        """Parse a body."""
        if len(data) != 96:
            raise SecAggProtocolError("an advertisement is 96 bytes")
        return cls(data[:32], data[32:64], data[64:])


@dataclass(frozen=True)
class KeyShares:
    """Stage 2: a commitment to the self-mask seed and one AEAD ciphertext of shares per neighbour."""

    commitment: bytes
    ciphertexts: dict[int, bytes]

    def to_bytes(self) -> bytes:
        """Body bytes."""
        parts = [self.commitment, struct.pack("<I", len(self.ciphertexts))]
        for receiver, ct in sorted(self.ciphertexts.items()):
            parts.append(struct.pack("<IH", receiver, len(ct)) + ct)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyShares:
        """Parse a body (one ciphertext per receiver)."""
        r = Reader(data, "key shares")
        commitment = bytes(r.take(32))
        out: dict[int, bytes] = {}
        for _ in range(r.count(6)):
            receiver = r.u32()
            ct = bytes(r.take(r.u16()))
            if receiver in out:
                raise SecAggProtocolError(f"key shares name receiver {receiver} twice")
            out[receiver] = ct
        r.finish()
        return cls(commitment, out)


@dataclass(frozen=True)
class RevealedShare:
    """Stage 4: a share of ``peer``'s self-mask seed (``kind`` 0) or of its mask key (``kind`` 1)."""

    peer: int
    kind: int
    share: bytes


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 4 body: the shares a device reveals."""

    shares: tuple[RevealedShare, ...]

    def to_bytes(self) -> bytes:
        """Body bytes."""
        parts = [struct.pack("<I", len(self.shares))]
        parts += [struct.pack("<IB", s.peer, s.kind) + s.share for s in self.shares]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskShares:
        """Parse a body."""
        r = Reader(data, "unmask shares")
        out = []
        for _ in range(r.count(5 + SHARE_BYTES)):
            peer, kind = struct.unpack("<IB", r.take(5))
            if kind not in (0, 1):
                raise SecAggProtocolError(f"unknown share kind {kind}")
            out.append(RevealedShare(peer, kind, bytes(r.take(SHARE_BYTES))))
        r.finish()
        return cls(tuple(out))


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 4 request: which neighbours sent a masked input and which dropped after sharing keys."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """Body bytes."""
        return b"".join(struct.pack(f"<I{len(ids)}I", len(ids), *ids) for ids in (self.survivors, self.dropped))

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskRequest:
        """Parse a body."""
        r = Reader(data, "unmask request")
        lists = []
        for _ in range(2):
            n = r.count(4)
            lists.append(tuple(struct.unpack(f"<{n}I", r.take(4 * n))))
        r.finish()
        return cls(lists[0], lists[1])


def encode_relayed_keys(envelopes: list[bytes]) -> bytes:
    """Stage 2 request body: the advertisements of a device's neighbours, as they signed them."""
    return struct.pack("<I", len(envelopes)) + b"".join(struct.pack("<I", len(e)) + e for e in envelopes)


def decode_relayed_keys(data: bytes) -> list[Envelope]:
    """Parse :func:`encode_relayed_keys`."""
    r = Reader(data, "relayed keys")
    out = [decode_envelope(r.take(r.u32()), max_body=96) for _ in range(r.count(4))]
    r.finish()
    return out


def encode_relayed_shares(ciphertexts: dict[int, bytes]) -> bytes:
    """Stage 3 request body: the ciphertexts addressed to one device, by sender."""
    parts = [struct.pack("<I", len(ciphertexts))]
    parts += [struct.pack("<IH", s, len(ct)) + ct for s, ct in sorted(ciphertexts.items())]
    return b"".join(parts)


def decode_relayed_shares(data: bytes) -> dict[int, bytes]:
    """Parse :func:`encode_relayed_shares`."""
    r = Reader(data, "relayed shares")
    out: dict[int, bytes] = {}
    for _ in range(r.count(6)):
        sender = r.u32()
        ct = bytes(r.take(r.u16()))
        if sender in out:
            raise SecAggProtocolError(f"relayed shares name sender {sender} twice")
        out[sender] = ct
    r.finish()
    return out
