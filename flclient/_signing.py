"""Ed25519 detached signatures for artifacts (feature modules, later model checkpoints).

A signature file is JSON::

    {"format": "flclient-ed25519-v1", "key_id": "<16 hex>", "sha256": "<hex>", "signature": "<base64>"}

The signature covers the artifact's bytes. ``key_id`` is the first 16 hex digits of the sha256 of the raw
32-byte public key, so a verifier can pick the key without trying all of them. Keys are PEM files
(PKCS#8 private, SubjectPublicKeyInfo public).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._json import loads_untrusted

__all__ = [
    "SIGNATURE_FORMAT",
    "DetachedSignature",
    "SignatureError",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign",
    "verify",
]

SIGNATURE_FORMAT = "flclient-ed25519-v1"
_MAX_SIGNATURE_FILE = 4096


class SignatureError(ValueError):
    """A key or signature file is malformed, or a signature does not verify. Callers translate it."""


@dataclass(frozen=True, kw_only=True)
class DetachedSignature:
    key_id: str
    sha256: str
    signature: bytes

    def to_bytes(self) -> bytes:
        obj = {
            "format": SIGNATURE_FORMAT,
            "key_id": self.key_id,
            "sha256": self.sha256,
            "signature": base64.b64encode(self.signature).decode(),
        }
        return (json.dumps(obj, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DetachedSignature:
        if len(data) > _MAX_SIGNATURE_FILE:
            raise SignatureError(f"signature file is {len(data)} bytes; a valid one is under {_MAX_SIGNATURE_FILE}")
        try:
            obj = loads_untrusted(data, max_depth=4)  # a flat object; deeper is hostile
        except ValueError as exc:
            raise SignatureError(f"signature file is not JSON: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("format") != SIGNATURE_FORMAT:
            raise SignatureError(f"signature file is not in the {SIGNATURE_FORMAT!r} format")
        fields = {k: obj.get(k) for k in ("key_id", "sha256", "signature")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise SignatureError("signature file needs string fields key_id, sha256 and signature")
        try:
            sig = base64.b64decode(str(fields["signature"]), validate=True)
        except binascii.Error as exc:
            raise SignatureError("signature is not valid base64") from exc
        if len(sig) != 64:
            raise SignatureError(f"an Ed25519 signature is 64 bytes, this one is {len(sig)}")
        return cls(key_id=str(fields["key_id"]), sha256=str(fields["sha256"]), signature=sig)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the private key is not an Ed25519 key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the public key is not an Ed25519 key")
    return key


def sign(data: bytes, private_key: Ed25519PrivateKey) -> DetachedSignature:
    return DetachedSignature(
        key_id=key_id(private_key.public_key()),
        sha256=hashlib.sha256(data).hexdigest(),
        signature=private_key.sign(data),
    )


def verify(data: bytes, signature: DetachedSignature, trusted_keys: Iterable[Ed25519PublicKey]) -> str:
    """Check ``signature`` over ``data`` against the trusted keys; returns the key id that verified."""
    if hashlib.sha256(data).hexdigest() != signature.sha256:
        raise SignatureError("the signature was made for different bytes (sha256 differs)")
    candidates = [k for k in trusted_keys if key_id(k) == signature.key_id]
    if not candidates:
        raise SignatureError(f"signed by key {signature.key_id}, which is not a trusted key")
    for key in candidates:
        try:
            key.verify(signature.signature, data)
        except InvalidSignature:
            continue
        return signature.key_id
    raise SignatureError(f"the signature does not verify with trusted key {signature.key_id}")
