"""Trusted artifacts in the device's round path: what :class:`~flclient._task.TaskExecutor` asks of them.

A :class:`RoundTrust` bundles the device's trust decisions for one task:

* a feature module the device does not have is fetched through TUF (:meth:`RoundTrust.module`), exactly the
  pinned name, version and sha256, or the task is declined with a reason naming what was refused;
* the global model is taken from a TUF checkpoint pin (``model-pin`` + ``model-sha256`` in the task) and/or
  checked against the server plugin's Ed25519 signature (``model-signature``) before it is loaded
  (:meth:`RoundTrust.global_model`);
* the train reply is signed with the device's update key, bound to run, round, node and model version
  (:meth:`RoundTrust.sign_reply`): a ``"signature"`` ConfigRecord with ``update-signature`` (the signature file)
  and ``update-key`` (the device's Ed25519 public key, PEM) that the server plugin verifies before aggregation.

In ``device.toml``::

    [signatures]
    model_keys = ["trust/model.pub"]      # the server plugin's checkpoint-signing public key(s)
    require_signed_models = true          # default: true when model_keys are given
    update_key = "state/update.key"       # default: <state_dir>/update-signing.key, made on first use
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import _signing
from .._errors import (
    ArtifactCacheError,
    ArtifactError,
    ArtifactNotFound,
    ArtifactPinMismatch,
    ArtifactTampered,
    ArtifactTooLarge,
    ArtifactUnavailable,
    CheckpointError,
    DeviceConfigError,
    FLClientError,
    MetadataExpired,
    MetadataMismatch,
    MetadataRollback,
    MetadataUntrusted,
    TaskDeclined,
    TlsError,
    TlsVerificationFailed,
)
from .._tables import check_keys, config_path
from ..protocol import Key, ModelPin, Record, RoundInfo
from ._pins import ArtifactPin
from ._signed import UpdateContext, encode_checkpoint, sign_update, verify_checkpoint

if TYPE_CHECKING:
    from ._client import ArtifactsConfig, TrustedArtifacts

__all__ = [
    "MODEL_PIN",
    "MODEL_SHA256",
    "MODEL_SIGNATURE",
    "SIGNATURE_RECORD",
    "UPDATE_KEY",
    "UPDATE_SIGNATURE",
    "RoundTrust",
    "SignatureConfig",
    "load_update_key",
    "refusal_reason",
    "update_payload",
]

# The protocol's names for the task keys and the reply record this module deals in.
MODEL_PIN = Key.MODEL_PIN
MODEL_SHA256 = Key.MODEL_SHA256
MODEL_SIGNATURE = Key.MODEL_SIGNATURE
SIGNATURE_RECORD = Record.SIGNATURE
UPDATE_SIGNATURE = Record.UPDATE_SIGNATURE
UPDATE_KEY = Record.UPDATE_KEY

_REASONS: tuple[tuple[type[FLClientError], str], ...] = (
    (ArtifactNotFound, "artifact-not-found"),
    (ArtifactPinMismatch, "artifact-pin-mismatch"),
    (ArtifactTampered, "artifact-tampered"),
    (ArtifactTooLarge, "artifact-too-large"),
    (ArtifactUnavailable, "artifact-unavailable"),
    (ArtifactCacheError, "artifact-cache"),
    (MetadataExpired, "metadata-expired"),
    (MetadataRollback, "metadata-rollback"),
    (MetadataMismatch, "metadata-mismatch"),
    (MetadataUntrusted, "metadata-untrusted"),
    (TlsVerificationFailed, "tls-verification-failed"),
    (CheckpointError, "checkpoint-untrusted"),
)


def refusal_reason(exc: FLClientError) -> str:
    """The decline reason for an artifact or TLS error: what was refused, in a word (``metadata-rollback``...)."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, TlsError):
        return "tls-error"
    return "artifact-error" if isinstance(exc, ArtifactError) else "untrusted"


@dataclass(frozen=True, kw_only=True)
class SignatureConfig:
    """The ``[signatures]`` table: model keys the device trusts, whether it requires them, its update key."""

    model_keys: tuple[Path, ...] = ()
    require_signed_models: bool = False
    update_key: Path | None = None

    def __post_init__(self) -> None:
        if not all(isinstance(p, Path) for p in self.model_keys):
            raise TypeError("SignatureConfig.model_keys must be pathlib.Path objects")
        if self.update_key is not None and not isinstance(self.update_key, Path):
            raise TypeError("SignatureConfig.update_key must be a pathlib.Path or None")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base_dir: Path) -> SignatureConfig:
        """Build from the ``[signatures]`` table; a mistake is one :class:`~flclient.DeviceConfigError`."""
        check_keys(raw, "signatures", {"model_keys", "require_signed_models", "update_key"})

        def resolve(value: object, key: str) -> Path:
            return config_path(value, f"signatures.{key}", base_dir)

        keys = raw.get("model_keys", [])
        if not isinstance(keys, list):
            raise DeviceConfigError("signatures.model_keys must be a list of public key files")
        model_keys = tuple(resolve(k, "model_keys") for k in keys)
        require = raw.get("require_signed_models", bool(model_keys))
        if not isinstance(require, bool):
            raise DeviceConfigError(f"signatures.require_signed_models must be true or false, got {require!r}")
        update_key = resolve(raw["update_key"], "update_key") if "update_key" in raw else None
        return cls(model_keys=model_keys, require_signed_models=require, update_key=update_key)

    def load_model_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """The model keys as Ed25519 public keys; an unreadable or wrong file is a DeviceConfigError."""
        out: list[Ed25519PublicKey] = []
        for path in self.model_keys:
            try:
                out.append(_signing.load_public_key(path.read_bytes()))
            except OSError as exc:
                raise DeviceConfigError(f"cannot read model key {path}: {exc.strerror or exc}") from exc
            except _signing.SignatureError as exc:
                raise DeviceConfigError(f"model key {path}: {exc}") from exc
        return tuple(out)


def load_update_key(path: Path) -> Ed25519PrivateKey:
    """The device's Ed25519 update-signing key at ``path``, created (mode 0600, atomically) on first use."""
    from .._atomic import atomic_write_bytes

    try:
        return _signing.load_private_key(path.read_bytes())
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DeviceConfigError(f"cannot read the update key {path}: {exc.strerror or exc}") from exc
    except _signing.SignatureError as exc:
        raise DeviceConfigError(f"update key {path}: {exc}") from exc
    private_pem, _ = _signing.generate_key_pair()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, private_pem, mode=0o600)
    except OSError as exc:
        raise DeviceConfigError(f"cannot write the update key {path}: {exc.strerror or exc}") from exc
    return _signing.load_private_key(private_pem)


def update_payload(reply_arrays: Mapping[str, np.ndarray] | None, encoded: bytes | None, model_version: int) -> bytes:
    """The bytes an update signature covers: the encoded update, or the canonical encoding of plain arrays."""
    if encoded is not None:
        return encoded
    if reply_arrays is None:
        raise ValueError("an update payload needs the encoded update or the reply arrays")
    return encode_checkpoint(reply_arrays, model_version=model_version)


@dataclass
class RoundTrust:
    """The device's trust in one place: TUF artifacts, trusted model keys and the update key.

    ``artifacts`` fetches modules and checkpoints that are not local (``None``: local modules only);
    ``model_keys`` verify ``model-signature``; with ``require_signed_models`` a model that is neither a TUF
    checkpoint nor signed by one of them is declined; ``update_key`` signs train replies for the node id
    SuperLink gave the device at connect.
    """

    artifacts: TrustedArtifacts | None = None
    model_keys: tuple[Ed25519PublicKey, ...] = ()
    require_signed_models: bool = False
    update_key: Ed25519PrivateKey | None = None

    def __post_init__(self) -> None:
        if self.require_signed_models and not self.model_keys and self.artifacts is None:
            raise ValueError("require_signed_models needs model_keys or TUF artifacts to verify models with")

    @classmethod
    def from_config(
        cls, artifacts: ArtifactsConfig | None, signatures: SignatureConfig | None, *, state_dir: Path
    ) -> RoundTrust | None:
        """The device's trust from its ``[artifacts]`` and ``[signatures]`` tables; ``None`` without either.

        A device with either table signs its updates, with ``signatures.update_key`` or
        ``state_dir/update-signing.key`` (made on first use).
        """
        if artifacts is None and signatures is None:
            return None
        from ._client import TrustedArtifacts

        sig = signatures or SignatureConfig()
        model_keys = sig.load_model_keys()
        update_key = load_update_key(sig.update_key or state_dir / "update-signing.key")
        if sig.require_signed_models and not model_keys and artifacts is None:
            raise DeviceConfigError("signatures.require_signed_models needs model_keys or an [artifacts] repository")
        fetcher = TrustedArtifacts(artifacts) if artifacts is not None else None
        return cls(
            artifacts=fetcher,
            model_keys=model_keys,
            require_signed_models=sig.require_signed_models,
            update_key=update_key,
        )

    # -- feature modules -----------------------------------------------------------------------------------------
    def module(self, name: str, version: str, sha256: str) -> Path | None:
        """The pinned module's verified file through TUF, or ``None`` without artifacts; declines on refusal."""
        if self.artifacts is None:
            return None
        try:
            pin = ArtifactPin(kind="module", name=name, version=version, sha256=sha256)
        except ValueError as exc:
            raise TaskDeclined("feature-module-pin", str(exc)) from exc
        try:
            return self.artifacts.fetch(pin).path
        except (ArtifactError, TlsError) as exc:
            raise TaskDeclined(refusal_reason(exc), f"feature module {pin}: {exc}") from exc

    # -- frozen backbones ----------------------------------------------------------------------------------------
    def backbone(self, name: str, version: str, sha256: str) -> Path | None:
        """The pinned backbone's verified file through TUF (cached under the cache's size cap, fetched once), or
        ``None`` without artifacts; declines on refusal."""
        if self.artifacts is None:
            return None
        try:
            pin = ArtifactPin(kind="backbone", name=name, version=version, sha256=sha256)
        except ValueError as exc:
            raise TaskDeclined("backbone-pin", str(exc)) from exc
        try:
            return self.artifacts.fetch(pin).path
        except (ArtifactError, TlsError) as exc:
            raise TaskDeclined(refusal_reason(exc), f"backbone {pin}: {exc}") from exc

    # -- the global model ----------------------------------------------------------------------------------------
    def global_model(
        self,
        arrays: Mapping[str, np.ndarray] | None,
        *,
        pin: ModelPin | None,
        signature: bytes | None,
        version: int,
    ) -> dict[str, np.ndarray]:
        """The global model to load: from its TUF ``pin`` when the task names one, else the task's arrays; checked
        against the model ``signature`` when the device holds model keys. Declines (``model-untrusted``,
        ``model-signature-missing``, ``model-signature-invalid``, or an artifact refusal) otherwise."""
        via_tuf = False
        if pin is not None:
            if self.artifacts is not None:
                arrays = self._checkpoint(pin, version)
                via_tuf = True
            elif arrays is None:
                raise TaskDeclined(
                    "no-model", "the model is only offered through TUF and this device has no [artifacts]"
                )
        if arrays is None:
            raise TaskDeclined("no-model", "the instruction carries no 'arrays' record and no model pin")
        if signature is not None and self.model_keys:
            try:
                verify_checkpoint(arrays, model_version=version, signature=signature, trusted_keys=self.model_keys)
            except CheckpointError as exc:
                raise TaskDeclined("model-signature-invalid", str(exc)) from exc
        elif self.require_signed_models and not via_tuf:
            if signature is None:
                raise TaskDeclined(
                    "model-signature-missing", f"model v{version} carries no signature and this device requires one"
                )
            raise TaskDeclined("model-untrusted", f"model v{version} is signed, but this device holds no model key")
        return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}

    def _checkpoint(self, model: ModelPin, version: int) -> Mapping[str, np.ndarray]:
        assert self.artifacts is not None
        try:
            pin = ArtifactPin(kind="checkpoint", name=model.name, version=model.version, sha256=model.sha256)
        except ValueError as exc:
            raise TaskDeclined("bad-config", f"{MODEL_PIN}: {exc}") from exc
        if pin.version != str(version):
            raise TaskDeclined(
                "bad-config", f"{MODEL_PIN} names version {pin.version}, the task model-version {version}"
            )
        try:
            return self.artifacts.fetch_checkpoint(pin).arrays
        except (ArtifactError, CheckpointError, TlsError) as exc:
            raise TaskDeclined(refusal_reason(exc), f"model checkpoint {pin}: {exc}") from exc

    # -- the reply -----------------------------------------------------------------------------------------------
    def sign_reply(self, payload: bytes, round_info: RoundInfo, *, node_id: int) -> tuple[bytes, bytes] | None:
        """The device's signature over a train reply whose update bytes are ``payload`` (see
        :func:`update_payload`) for this run, round, node and model version, and its public key (PEM); ``None``
        when the device has no update key."""
        if self.update_key is None:
            return None
        context = UpdateContext(
            run_id=round_info.run_id,
            server_round=round_info.server_round,
            node_id=node_id,
            model_version=round_info.model_version,
        )
        public = self.update_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return sign_update(payload, context=context, private_key=self.update_key), public

    def close(self) -> None:
        """Close the artifacts client; idempotent."""
        if self.artifacts is not None:
            self.artifacts.close()
