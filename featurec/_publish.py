"""``featurec repo init|renew`` and ``featurec publish``: feature modules into a TUF repository of plain files.

The repository engine is :class:`flclient.artifacts.ArtifactRepository` (shared with the server plugin, which
publishes model checkpoints through it); this module reads key files and modules, checks them, and maps
the feature author's view (a ``.wasm`` file and key files) onto it.

Keys are the PEM files of ``featurec keygen``. Any key file may be given where a role's key is asked for: a
``.pub`` file only names the key, a ``.key`` file also lets this command sign with it. A feature author
publishes with their own key plus the repository's online (snapshot/timestamp) key::

    featurec publish dist/device_context-1.0.0.wasm --repo repo --key author.key --key online.key
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from securesystemslib.signer import Key, Signer

from flclient.artifacts import (
    ArtifactPin,
    ArtifactPublishError,
    ArtifactRepository,
    RepositoryPolicy,
    key_from_pem,
    signer_from_pem,
)
from flclient.artifacts._repository import DELEGATED_ROLES, TOP_LEVEL_ROLES

from ._errors import KeyFileError, PublishError
from ._inspect import inspect_module

__all__ = [
    "PublishedModule",
    "init_repository",
    "parse_role_values",
    "publish_module",
    "renew_repository",
]

ROLES = TOP_LEVEL_ROLES + DELEGATED_ROLES


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class PublishedModule:
    """What ``featurec publish`` added: the TUF target and the pin a task uses to ask for it."""

    target_path: str
    name: str
    version: str
    sha256: str
    length: int

    @property
    def pin(self) -> ArtifactPin:
        """The task pin (``feature-module = "name@version"``, ``feature-module-sha256 = sha256``)."""
        return ArtifactPin(kind="module", name=self.name, version=self.version, sha256=self.sha256)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror or exc}") from exc


def _signers(paths: Sequence[Path]) -> list[Signer]:
    out: list[Signer] = []
    for path in paths:
        pem = _read(path)
        if b"PRIVATE KEY" not in pem:
            raise KeyFileError(f"{path} is a public key; signing needs the private .key file")
        try:
            out.append(signer_from_pem(pem))
        except (ArtifactPublishError, ValueError) as exc:
            raise KeyFileError(f"{path}: {exc}") from exc
    return out


def _key(path: Path) -> tuple[Key, Signer | None]:
    pem = _read(path)
    try:
        key = key_from_pem(pem)
        signer = signer_from_pem(pem) if b"PRIVATE KEY" in pem else None
    except Exception as exc:  # ArtifactPublishError from a malformed PEM
        raise KeyFileError(f"{path}: {exc}") from exc
    return key, signer


def parse_role_values(items: Sequence[str], *, what: str) -> dict[str, int]:
    """``["timestamp=2", "root=3"]`` -> ``{"timestamp": 2, "root": 3}``; a mistake is one :class:`PublishError`."""
    out: dict[str, int] = {}
    for item in items:
        role, sep, value = item.partition("=")
        if not sep or role not in ROLES:
            raise PublishError(f"{what} must be ROLE=N with ROLE one of {', '.join(ROLES)}; got {item!r}")
        try:
            number = int(value)
        except ValueError:
            raise PublishError(f"{what} {item!r}: {value!r} is not a whole number") from None
        if number < 1:
            raise PublishError(f"{what} {item!r}: must be at least 1")
        out[role] = number
    return out


def _policy(thresholds: Mapping[str, int], expires_days: Mapping[str, int]) -> RepositoryPolicy:
    return RepositoryPolicy(thresholds=dict(thresholds), expiry={r: timedelta(days=d) for r, d in expires_days.items()})


def init_repository(
    directory: Path,
    *,
    role_keys: Mapping[str, Sequence[Path]],
    thresholds: Mapping[str, int] | None = None,
    expires_days: Mapping[str, int] | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> ArtifactRepository:
    """Create a repository whose roles use the given key files (private ones also sign version 1)."""
    keys: dict[str, list[Key]] = {}
    signers: dict[str, Signer] = {}
    for role in ROLES:
        if not role_keys.get(role):
            raise PublishError(f"role {role} needs at least one key file (--{role} FILE)")
        keys[role] = []
        for path in role_keys[role]:
            key, signer = _key(path)
            keys[role].append(key)
            if signer is not None:
                signers[key.keyid] = signer
    return ArtifactRepository.create(
        directory,
        keys=keys,
        signers=list(signers.values()),
        policy=_policy(thresholds or {}, expires_days or {}),
        clock=clock,
    )


def publish_module(
    module: Path,
    *,
    repo: Path,
    keys: Sequence[Path],
    expires_days: Mapping[str, int] | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> PublishedModule:
    """Check ``module`` (a valid ABI module with a manifest) and publish it as ``modules/<name>/<version>``."""
    try:
        data = module.read_bytes()
    except OSError as exc:
        raise PublishError(f"cannot read {module}: {exc.strerror or exc}") from exc
    info = inspect_module(module)
    manifest = info.get("manifest") or {}
    if info.get("problems") or not manifest:
        problems = "; ".join(info.get("problems") or ["no manifest"])
        raise PublishError(f"{module} is not a publishable feature module: {problems}")
    name, version = str(manifest.get("name")), str(manifest.get("version"))
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        pin = ArtifactPin(kind="module", name=name, version=version, sha256=sha256)
    except ValueError as exc:
        raise PublishError(f"{module}: {exc}") from exc
    repository = ArtifactRepository(repo, signers=_signers(keys), policy=_policy({}, expires_days or {}), clock=clock)
    target = repository.add_target(
        "module",
        pin.target_path,
        data,
        {"kind": "module", "name": name, "version": version, "abi_version": manifest.get("abi_version")},
    )
    return PublishedModule(target_path=pin.target_path, name=name, version=version, sha256=sha256, length=target.length)


def renew_repository(
    repo: Path,
    *,
    keys: Sequence[Path],
    roles: Sequence[str] = (),
    expires_days: Mapping[str, int] | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> list[str]:
    """Re-sign ``roles`` (default: every role the keys can sign) and snapshot/timestamp with fresh expiry dates.

    This is the recovery from a freeze: devices that refuse the repository because its metadata expired accept
    it again on their next refresh.
    """
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise PublishError(f"unknown role(s) {', '.join(bad)}; the roles are {', '.join(ROLES)}")
    repository = ArtifactRepository(repo, signers=_signers(keys), policy=_policy({}, expires_days or {}), clock=clock)
    return repository.renew(roles)
