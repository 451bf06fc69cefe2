"""The server plugin's side of trusted artifacts: signed global models, checkpoints through TUF, signed updates.

Run-config keys (all optional; without any of them nothing here is active; see ``docs/run-config.md``):

``model-signing-key``      Ed25519 private key (PEM, ``featurec keygen``): every global model version sent to the
                           devices carries ``model-signature`` over its canonical checkpoint encoding
``artifacts-repo``         a TUF repository directory (``ArtifactRepository``): every model version is published as
                           the checkpoint ``global@<version>`` and tasks carry ``model-pin`` + ``model-sha256``
``artifacts-keys``         comma-separated private key files for that publishing: the ``checkpoints`` role key
                           and the online snapshot/timestamp key
``model-via-tuf``          true: tasks carry only the pin, not the arrays (devices download the checkpoint through
                           TUF, and a device's cache spares it the download of a version it already has)
``require-signed-updates`` true: a train reply without a valid update signature is rejected before aggregation
``device-keys``            a directory of ``*.pub`` device update keys: only those are accepted (a registry)

How the server learns device keys. A reply carries the device's Ed25519 update key beside its signature. With
``device-keys`` the key must be one of the registered ones; in any case the key is pinned to the node id on
first use (trust on first use), in ``<history-dir>/device-keys.json``, and a later reply from that node id
signed by any other key is rejected. This is defensible because the node id is not self-asserted: SuperLink
authenticates every request of a node with the node's own ECDSA identity key (``flwr-public-key``), so only that
device could have introduced its first update key; from then on the update signature gives end-to-end
integrity that no relay between device and ServerApp (SuperLink included) can forge, and it binds each update
to run, round, node and model version, so a captured update cannot be replayed elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flwr.app import Message, RecordDict

from .. import _signing
from .._atomic import atomic_write_bytes
from .._errors import ArtifactPublishError, ProtocolError, RunConfigError, UpdateSignatureError
from ..artifacts import ArtifactRepository, UpdateContext, sign_checkpoint, signer_from_pem, verify_update
from ..artifacts._round import update_payload
from ..protocol import EvaluateTask, ModelPin, TrainReply, TrainTask
from ._records import from_flwr

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["DeviceKeyPins", "ServerTrust"]


def _read(path: Path, key: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise RunConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc


@dataclass
class DeviceKeyPins:
    """Which update key each node id uses, pinned on first use and kept in ``path`` (JSON, atomic writes)."""

    path: Path
    registry: frozenset[str] | None = None
    _pins: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"device key pins {self.path} cannot be read: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise ValueError(f"device key pins {self.path} must map node ids to PEM keys")
        self._pins = dict(raw)

    def key_for(self, node_id: int, offered_pem: bytes) -> Ed25519PublicKey:
        """The key to verify ``node_id``'s update with: its pinned key, or ``offered_pem`` pinned now.

        Raises :class:`~flclient.UpdateSignatureError` for a key that is unregistered, malformed or not the
        one pinned for this node."""
        try:
            offered = _signing.load_public_key(offered_pem)
        except _signing.SignatureError as exc:
            raise UpdateSignatureError(f"node {node_id} sent an unusable update key: {exc}") from exc
        offered_id = _signing.key_id(offered)
        if self.registry is not None and offered_id not in self.registry:
            raise UpdateSignatureError(f"node {node_id}'s update key {offered_id} is not a registered device key")
        pinned = self._pins.get(str(node_id))
        if pinned is None:
            self._pins[str(node_id)] = offered_pem.decode("ascii")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(self._pins, indent=1, sort_keys=True).encode(), mode=0o600)
            return offered
        key = _signing.load_public_key(pinned.encode("ascii"))
        if _signing.key_id(key) != offered_id:
            raise UpdateSignatureError(
                f"node {node_id} signed with key {offered_id}, but key {_signing.key_id(key)} is pinned for it"
            )
        return key


@dataclass
class ServerTrust:
    """Signs and publishes global models, verifies device updates (see the module docstring)."""

    signing_key: Ed25519PrivateKey | None = None
    repository: ArtifactRepository | None = None
    model_via_tuf: bool = False
    require_signed_updates: bool = False
    pins: DeviceKeyPins | None = None
    verified: int = 0
    rejected: int = 0
    _published: dict[int, ModelPin] = field(default_factory=dict, init=False)
    _signatures: dict[int, bytes] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.model_via_tuf and self.repository is None:
            raise ValueError("model-via-tuf needs artifacts-repo (and artifacts-keys)")

    @classmethod
    def from_config(cls, run: RunConfig, *, history_dir: Path | None = None) -> ServerTrust | None:
        """The trust settings of a run; ``None`` when none is set. Device key pins live in ``history_dir``
        (default: the run's ``history-dir``). A key or directory that cannot be loaded raises
        :class:`~flclient.RunConfigError` naming its run-config key."""
        if not (run.model_signing_key or run.artifacts_repo or run.require_signed_updates or run.device_keys):
            return None
        key = None
        if run.model_signing_key is not None:
            try:
                key = _signing.load_private_key(_read(run.model_signing_key, "model-signing-key"))
            except _signing.SignatureError as exc:
                raise RunConfigError("model-signing-key", str(exc)) from exc
        repo = None
        if run.artifacts_repo is not None:
            try:
                signers = [signer_from_pem(_read(p, "artifacts-keys")) for p in run.artifacts_keys]
                repo = ArtifactRepository(run.artifacts_repo, signers=signers)
            except ArtifactPublishError as exc:
                raise RunConfigError("artifacts-repo", str(exc)) from exc
        registry = None
        if run.device_keys is not None:
            directory = run.device_keys.expanduser()
            try:
                registry = frozenset(
                    _signing.key_id(_signing.load_public_key(p.read_bytes())) for p in sorted(directory.glob("*.pub"))
                )
            except (OSError, _signing.SignatureError) as exc:
                raise RunConfigError("device-keys", str(exc)) from exc
        return cls(
            signing_key=key,
            repository=repo,
            model_via_tuf=run.model_via_tuf,
            require_signed_updates=run.require_signed_updates,
            pins=DeviceKeyPins((history_dir or run.history_dir) / "device-keys.json", registry=registry),
        )

    # -- the task ------------------------------------------------------------------------------------------------
    def prepare(
        self, task: TrainTask | EvaluateTask, params: Mapping[str, np.ndarray], *, version: int, run_id: int
    ) -> TrainTask | EvaluateTask:
        """The task with the model's signature / TUF pin and the run id; without arrays when the model goes
        through TUF only. Each model version is signed and published once."""
        task = replace(task, round=replace(task.round, run_id=run_id))
        if self.signing_key is not None:
            if version not in self._signatures:
                self._signatures = {
                    version: sign_checkpoint(params, model_version=version, private_key=self.signing_key)
                }
            task = replace(task, model_signature=self._signatures[version])
        if self.repository is not None:
            if version not in self._published:
                info = self.repository.publish_checkpoint(params, name="global", model_version=version)
                self._published[version] = ModelPin(
                    name="global", version=str(version), sha256=str(info.hashes["sha256"])
                )
            task = replace(task, pins=replace(task.pins, model=self._published[version]))
            if self.model_via_tuf:
                task = replace(task, arrays=None)
        return task

    # -- the replies ---------------------------------------------------------------------------------------------
    def refuse(self, reply: Message, *, server_round: int, version: int, run_id: int) -> str | None:
        """Why this train reply must not be aggregated, or ``None``: its update signature is checked against
        the node's pinned key, in this run, round and model version."""
        node_id = int(reply.metadata.src_node_id)
        return self.check_update(
            reply.content, node_id=node_id, server_round=server_round, version=version, run_id=run_id
        )

    def check_update(
        self, content: RecordDict, *, node_id: int, server_round: int, version: int, run_id: int
    ) -> str | None:
        """:meth:`refuse` for a reply's content sent by ``node_id``."""
        try:
            reply = TrainReply.from_records(from_flwr(content))
        except (ProtocolError, ValueError) as exc:
            self.rejected += 1
            return f"not a train reply: {exc}"
        if reply.signature is None:
            if self.require_signed_updates:
                self.rejected += 1
                return "unsigned update (require-signed-updates)"
            return None
        try:
            payload = update_payload(reply.arrays, reply.payload, version)
            assert self.pins is not None
            key = self.pins.key_for(node_id, reply.signature.public_key)
            ctx = UpdateContext(run_id=run_id, server_round=server_round, node_id=node_id, model_version=version)
            verify_update(payload, reply.signature.signature, context=ctx, trusted_keys=[key])
        except (UpdateSignatureError, ValueError) as exc:
            self.rejected += 1
            return f"bad update signature: {exc}"
        self.verified += 1
        return None

    def take_summary(self) -> dict[str, int]:
        """Updates verified and rejected since the last call (for the round's metrics record)."""
        out = {"verified": self.verified, "rejected": self.rejected}
        self.verified = self.rejected = 0
        return out


def public_pem(key: Ed25519PrivateKey) -> bytes:
    """The PEM of ``key``'s public half (what a device sends as ``update-key``)."""
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
