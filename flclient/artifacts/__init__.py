"""Trusted artifacts over the air: feature modules and model checkpoints through The Update Framework.

Device side: :class:`TrustedArtifacts` fetches pinned artifacts (:class:`ArtifactPin`) through
``tuf.ngclient`` over httpx (:class:`HttpxFetcher`, pinned TLS with :class:`TlsConfig`) into a content-addressed,
size-capped :class:`ArtifactCache`. Publishing side: :class:`ArtifactRepository` keeps a TUF repository of plain
files (``featurec publish`` for modules, :meth:`ArtifactRepository.publish_checkpoint` for the server plugin).
Model checkpoints and device updates also travel with Ed25519 signatures (:func:`sign_checkpoint`,
:func:`verify_checkpoint`, :func:`sign_update`, :func:`verify_update`).
"""

from .._errors import (
    ArtifactCacheError,
    ArtifactError,
    ArtifactNotFound,
    ArtifactPinMismatch,
    ArtifactPublishError,
    ArtifactTampered,
    ArtifactTooLarge,
    ArtifactUnavailable,
    CheckpointError,
    MetadataError,
    MetadataExpired,
    MetadataMismatch,
    MetadataRollback,
    MetadataUntrusted,
    SignedArtifactError,
    TlsConfigError,
    TlsError,
    TlsVerificationFailed,
    UpdateSignatureError,
)
from ._cache import ArtifactCache, CachedArtifact
from ._client import ArtifactsConfig, TrustedArtifacts
from ._fetcher import HttpxFetcher
from ._pins import ArtifactKind, ArtifactPin
from ._repository import ArtifactRepository, RepositoryPolicy, key_from_pem, signer_from_pem
from ._round import RoundTrust, SignatureConfig, load_update_key, refusal_reason, update_payload
from ._signed import (
    Checkpoint,
    UpdateContext,
    checkpoint_sha256,
    decode_checkpoint,
    encode_checkpoint,
    sign_checkpoint,
    sign_update,
    verify_checkpoint,
    verify_update,
)
from ._tls import TlsConfig, tls_failure

__all__ = [
    "ArtifactCache",
    "ArtifactCacheError",
    "ArtifactError",
    "ArtifactKind",
    "ArtifactNotFound",
    "ArtifactPin",
    "ArtifactPinMismatch",
    "ArtifactPublishError",
    "ArtifactRepository",
    "ArtifactTampered",
    "ArtifactTooLarge",
    "ArtifactUnavailable",
    "ArtifactsConfig",
    "CachedArtifact",
    "Checkpoint",
    "CheckpointError",
    "HttpxFetcher",
    "MetadataError",
    "MetadataExpired",
    "MetadataMismatch",
    "MetadataRollback",
    "MetadataUntrusted",
    "RepositoryPolicy",
    "RoundTrust",
    "SignatureConfig",
    "SignedArtifactError",
    "TlsConfig",
    "TlsConfigError",
    "TlsError",
    "TlsVerificationFailed",
    "TrustedArtifacts",
    "UpdateContext",
    "UpdateSignatureError",
    "checkpoint_sha256",
    "decode_checkpoint",
    "encode_checkpoint",
    "key_from_pem",
    "load_update_key",
    "refusal_reason",
    "sign_checkpoint",
    "sign_update",
    "signer_from_pem",
    "tls_failure",
    "update_payload",
    "verify_checkpoint",
    "verify_update",
]
