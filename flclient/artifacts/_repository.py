"""The publishing side: a TUF repository of plain files that any static web server can serve.

Layout (consistent snapshots, so a reader mid-update never mixes two states)::

    DIR/metadata/1.root.json ... N.root.json   every root version (devices walk them to rotate keys)
    DIR/metadata/N.targets.json                top-level targets: delegations only
    DIR/metadata/N.modules.json                feature modules, signed by feature-author keys
    DIR/metadata/N.checkpoints.json            model checkpoints, signed by the server plugin's model key
    DIR/metadata/N.snapshot.json, timestamp.json
    DIR/metadata/<role>.json                   a copy of each role's newest version, for this publisher
    DIR/targets/modules/<name>/<sha256>.<version>, DIR/targets/checkpoints/<name>/<sha256>.<model version>

The top-level ``targets`` role delegates ``modules/*/*`` (and frozen backbones, ``backbones/*/*``) and
``checkpoints/*/*`` to the two roles above as terminating delegations: a feature author's key can publish modules
and backbones and nothing else, and the model-signing key checkpoints and nothing else. Every edit is written
target first, then metadata bottom-up, ``timestamp.json`` last, each file atomically: the repository is valid at
every instant.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.repository import Repository

from .._atomic import atomic_write_bytes
from .._errors import ArtifactPublishError
from ._pins import ArtifactPin
from ._signed import encode_checkpoint

__all__ = [
    "DELEGATED_ROLES",
    "TOP_LEVEL_ROLES",
    "ArtifactRepository",
    "RepositoryPolicy",
    "key_from_pem",
    "signer_from_pem",
]

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
DELEGATED_ROLES = ("modules", "checkpoints")
# Frozen backbones are offline releases like feature modules: the same role signs both.
_ROLE_PATHS = {"modules": ("modules/*/*", "backbones/*/*"), "checkpoints": ("checkpoints/*/*",)}
_KIND_ROLE = {"module": "modules", "checkpoint": "checkpoints", "backbone": "modules"}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _default_expiry() -> dict[str, timedelta]:
    return {
        "root": timedelta(days=365),
        "targets": timedelta(days=90),
        "modules": timedelta(days=90),
        "checkpoints": timedelta(days=30),
        "snapshot": timedelta(days=7),
        "timestamp": timedelta(days=1),
    }


@dataclass(frozen=True, kw_only=True)
class RepositoryPolicy:
    """How long each role's metadata stays valid after it is signed, and how many signatures each role needs.

    ``timestamp`` expires soonest on purpose: it is what a freeze attack would replay, so the repository's
    online key must re-sign it (``featurec repo renew``) more often than ``expiry["timestamp"]``.
    """

    expiry: Mapping[str, timedelta] = field(default_factory=_default_expiry)
    thresholds: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        roles = set(TOP_LEVEL_ROLES + DELEGATED_ROLES)
        full = {**_default_expiry(), **dict(self.expiry)}
        unknown = (set(full) | set(self.thresholds)) - roles
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; the roles are {sorted(roles)}")
        for role, delta in full.items():
            if not isinstance(delta, timedelta) or delta <= timedelta(0):
                raise ValueError(f"expiry of {role} must be a positive timedelta, got {delta!r}")
        for role, t in self.thresholds.items():
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                raise ValueError(f"threshold of {role} must be an int >= 1, got {t!r}")
        object.__setattr__(self, "expiry", full)

    def threshold(self, role: str) -> int:
        """Signatures ``role`` needs (default 1)."""
        return int(self.thresholds.get(role, 1))


def key_from_pem(pem: bytes) -> Key:
    """The TUF public key of a PEM file from ``featurec keygen`` (public, or private: its public half)."""
    try:
        if b"PRIVATE KEY" in pem:
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ArtifactPublishError("key", "only Ed25519 keys (from 'featurec keygen') are supported")
            public: Any = private.public_key()
        else:
            public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ArtifactPublishError("key", f"not an unencrypted PEM key: {exc}") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise ArtifactPublishError("key", "only Ed25519 keys (from 'featurec keygen') are supported")
    return SSlibKey.from_crypto(public)


def signer_from_pem(pem: bytes) -> Signer:
    """A TUF signer for an unencrypted Ed25519 PEM private key from ``featurec keygen``."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ArtifactPublishError("key", f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ArtifactPublishError("key", "only Ed25519 keys (from 'featurec keygen') are supported")
    return CryptoSigner(private)


class ArtifactRepository(Repository):
    """A TUF repository in ``directory``, edited with whichever private keys the caller holds.

    ``signers`` may hold keys of several roles; each edit is signed by every signer of the edited role and
    fails with :class:`~flclient.ArtifactPublishError` (writing nothing) when they do not reach its threshold.
    Dates come from ``clock`` (UTC).

    Example (the server plugin publishing the global model after a round)::

        repo = ArtifactRepository(Path("repo"), signers=[model_key, online_key])
        info = repo.publish_checkpoint(params, name="global", model_version=7)
    """

    def __init__(
        self,
        directory: Path,
        *,
        signers: Iterable[Signer] = (),
        policy: RepositoryPolicy | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.directory = Path(directory)
        self.policy = policy or RepositoryPolicy()
        self._clock = clock
        self._signers: dict[str, Signer] = {s.public_key.keyid: s for s in signers}
        # Metadata of roles being created (not on disk yet); everything else is read from disk when needed.
        self._metadata: dict[str, Metadata[Any]] = {}
        self._bytes: dict[str, bytes] = {}
        if not (self._meta_dir / "root.json").exists():
            raise ArtifactPublishError(str(self.directory), "not a repository (no metadata/root.json); create it first")

    # -- creation --------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        keys: Mapping[str, Sequence[Key]],
        signers: Iterable[Signer],
        policy: RepositoryPolicy | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> ArtifactRepository:
        """Write version 1 of every role into an empty ``directory`` and return the repository.

        ``keys`` maps each role (the four top-level ones and both delegated ones) to its public keys;
        ``signers`` must reach the threshold of root, targets, snapshot and timestamp. A delegated role whose
        signers are absent gets its first metadata when something is first published to it.
        """
        directory = Path(directory)
        policy = policy or RepositoryPolicy()
        missing = [r for r in TOP_LEVEL_ROLES + DELEGATED_ROLES if not keys.get(r)]
        if missing:
            raise ArtifactPublishError(str(directory), f"no public key given for role(s) {', '.join(missing)}")
        for role in TOP_LEVEL_ROLES + DELEGATED_ROLES:
            if len({k.keyid for k in keys[role]}) < policy.threshold(role):
                raise ArtifactPublishError(
                    str(directory), f"role {role}: threshold {policy.threshold(role)} > {len(keys[role])} key(s)"
                )
        if (directory / "metadata" / "root.json").exists():
            raise ArtifactPublishError(str(directory), "a repository already exists here")
        now = clock()
        root = Root(expires=now, consistent_snapshot=True)
        for role in TOP_LEVEL_ROLES:
            for key in keys[role]:
                root.add_key(key, role)
            root.roles[role].threshold = policy.threshold(role)
        targets = Targets(expires=now)
        targets.delegations = Delegations(
            keys={k.keyid: k for role in DELEGATED_ROLES for k in keys[role]},
            roles={
                role: DelegatedRole(
                    name=role,
                    keyids=sorted({k.keyid for k in keys[role]}),
                    threshold=policy.threshold(role),
                    terminating=True,
                    paths=list(_ROLE_PATHS[role]),
                )
                for role in DELEGATED_ROLES
            },
        )
        (directory / "metadata").mkdir(parents=True, exist_ok=True)
        (directory / "targets").mkdir(parents=True, exist_ok=True)
        repo = cls.__new__(cls)
        repo.directory, repo.policy, repo._clock = directory, policy, clock
        repo._signers = {s.public_key.keyid: s for s in signers}
        repo._metadata, repo._bytes = {}, {}
        root_md, targets_md = Metadata(root), Metadata(targets)
        repo._metadata["root"], repo._metadata["targets"] = root_md, targets_md
        for role in TOP_LEVEL_ROLES:  # every threshold is checked before anything is written
            repo._signers_for(role)
        repo._write("root", root_md)
        repo._write("targets", targets_md)
        for role in DELEGATED_ROLES:
            if repo._can_sign(role):
                repo._write(role, Metadata(Targets(expires=now)))
        repo._write("snapshot", Metadata(Snapshot(expires=now, meta=dict(repo.targets_infos))))
        repo._write("timestamp", Metadata(Timestamp(expires=now, snapshot_meta=repo.snapshot_info)))
        return repo

    # -- tuf.repository.Repository ---------------------------------------------------------------------------------
    @property
    def _meta_dir(self) -> Path:
        return self.directory / "metadata"

    def open(self, role: str) -> Metadata[Any]:
        """The newest metadata of ``role``, read from disk every time (another publisher may have written it);
        an empty version 1 for a delegated role never published to."""
        path = self._meta_dir / f"{role}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if role in self._metadata:  # being created, not written yet
                return copy.deepcopy(self._metadata[role])
            if role not in DELEGATED_ROLES:
                raise ArtifactPublishError(str(self.directory), f"metadata/{role}.json is missing") from None
            return Metadata(Targets(version=1, expires=self._clock()))
        except OSError as exc:
            raise ArtifactPublishError(str(path), f"cannot read: {exc.strerror or exc}") from exc
        try:
            md: Metadata[Any] = Metadata.from_bytes(data)
        except DeserializationError as exc:
            raise ArtifactPublishError(str(path), f"not valid TUF metadata: {exc}") from exc
        self._bytes[role] = data
        return md

    def close(self, role: str, md: Metadata[Any]) -> None:
        """Store the next version of ``role``: bump the version, set the expiry, sign, write."""
        if self._exists(role):
            md.signed.version += 1
        self._write(role, md)

    def _exists(self, role: str) -> bool:
        return (self._meta_dir / f"{role}.json").exists()

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        """The version, length and hashes of every targets metadata file that exists."""
        infos: dict[str, MetaFile] = {}
        for role in ("targets", *DELEGATED_ROLES):
            if not self._exists(role):
                continue
            md = self.open(role)
            data = self._bytes[role]
            infos[f"{role}.json"] = MetaFile(
                version=md.signed.version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()}
            )
        return infos

    @property
    def snapshot_info(self) -> MetaFile:
        """The version, length and hashes of the newest snapshot."""
        md = self.open("snapshot")
        data = self._bytes["snapshot"]
        digest = hashlib.sha256(data).hexdigest()
        return MetaFile(version=md.signed.version, length=len(data), hashes={"sha256": digest})

    # -- signing and writing ---------------------------------------------------------------------------------------
    def _role_keys(self, role: str) -> tuple[list[str], int]:
        if role in TOP_LEVEL_ROLES:
            root = self.open("root").signed
            assert isinstance(root, Root)
            r = root.roles[role]
            return list(r.keyids), r.threshold
        targets = self.open("targets").signed
        assert isinstance(targets, Targets)
        if targets.delegations is None or targets.delegations.roles is None or role not in targets.delegations.roles:
            raise ArtifactPublishError(str(self.directory), f"role {role!r} is not delegated by targets")
        d = targets.delegations.roles[role]
        return list(d.keyids), d.threshold

    def _can_sign(self, role: str) -> bool:
        keyids, threshold = self._role_keys(role)
        return sum(k in self._signers for k in keyids) >= threshold

    def _signers_for(self, role: str) -> list[Signer]:
        keyids, threshold = self._role_keys(role)
        held = [self._signers[k] for k in keyids if k in self._signers]
        if len(held) < threshold:
            raise ArtifactPublishError(
                role,
                f"needs {threshold} signature(s) from its key(s) {', '.join(k[:12] for k in keyids)}; "
                f"the keys given provide {len(held)}",
            )
        return held

    def _write(self, role: str, md: Metadata[Any]) -> None:
        signers = self._signers_for(role)
        if role == "root":
            # A new root must also satisfy the root it replaces.
            previous = self.open("root")
            if previous.signed.version < md.signed.version:
                old = previous.signed
                assert isinstance(old, Root)
                old_ids = old.roles["root"].keyids
                held = [k for k in old_ids if k in self._signers]
                if len(held) < old.roles["root"].threshold:
                    raise ArtifactPublishError("root", "a new root needs the threshold of the current root's keys too")
                signers += [self._signers[k] for k in held if self._signers[k] not in signers]
        md.signed.expires = self._clock() + self.policy.expiry[role]
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        data = md.to_bytes()
        version = md.signed.version
        if role != "timestamp":
            atomic_write_bytes(self._meta_dir / f"{version}.{role}.json", data)
        atomic_write_bytes(self._meta_dir / f"{role}.json", data)
        self._metadata.pop(role, None)
        self._bytes[role] = data

    # -- operations ------------------------------------------------------------------------------------------------
    def add_target(self, pin_kind: str, target_path: str, data: bytes, custom: Mapping[str, Any]) -> TargetFile:
        """Publish ``data`` as ``target_path`` in the role of ``pin_kind`` (``"module"``, ``"backbone"`` or
        ``"checkpoint"``).

        Published versions are immutable: the same path with other bytes is refused, the same bytes again is a
        no-op that returns the existing target.
        """
        role = _KIND_ROLE[pin_kind]
        target = TargetFile.from_data(target_path, data, ["sha256"])
        target.unrecognized_fields["custom"] = dict(custom)
        existing = self.targets(role).targets.get(target_path) if self._exists(role) else None
        if existing is not None:
            if existing.hashes == target.hashes and existing.length == target.length:
                return existing
            raise ArtifactPublishError(
                target_path, "is already published with different bytes; publish it under a new version"
            )
        self._signers_for(role)
        self._signers_for("snapshot")
        self._signers_for("timestamp")
        dirname, _, basename = target_path.rpartition("/")
        atomic_write_bytes(self.directory / "targets" / dirname / f"{target.hashes['sha256']}.{basename}", data)
        with self.edit_targets(role) as targets:
            targets.targets[target_path] = target
        self.do_snapshot()
        self.do_timestamp()
        return target

    def publish_checkpoint(self, arrays: Mapping[str, np.ndarray], *, name: str, model_version: int) -> TargetFile:
        """Publish the global model ``name`` at ``model_version`` (canonical checkpoint encoding) through TUF."""
        data = encode_checkpoint(arrays, model_version=model_version)
        digest = hashlib.sha256(data).hexdigest()
        pin = ArtifactPin(kind="checkpoint", name=name, version=str(model_version), sha256=digest)
        return self.add_target(
            "checkpoint",
            pin.target_path,
            data,
            {"kind": "checkpoint", "name": name, "model_version": model_version, "format": "flclient-checkpoint-v1"},
        )

    def renew(self, roles: Iterable[str] = ()) -> list[str]:
        """Re-sign ``roles`` with fresh expiry dates, then snapshot and timestamp: the recovery from a freeze.

        With no roles, every role whose keys were given is renewed (snapshot and timestamp always are).
        Returns the roles written, in order.
        """
        wanted = list(roles)
        unknown = set(wanted) - set(TOP_LEVEL_ROLES + DELEGATED_ROLES)
        if unknown:
            raise ArtifactPublishError(str(self.directory), f"unknown role(s) {sorted(unknown)}")
        order = ["root", "targets", *DELEGATED_ROLES]
        chosen = [r for r in order if r in wanted] if wanted else [r for r in order if self._can_sign(r)]
        self._signers_for("snapshot")
        self._signers_for("timestamp")
        for role in chosen:
            self._signers_for(role)
        written: list[str] = []
        for role in chosen:
            if role in DELEGATED_ROLES and not self._exists(role):
                continue
            with self.edit(role):
                pass
            written.append(role)
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)
        return [*written, "snapshot", "timestamp"]

    def trusted_root(self) -> bytes:
        """The newest ``root.json``: ship it with device configurations as the trust anchor."""
        self.open("root")
        return self._bytes["root"]
