"""A repository, its static server on loopback and a device, fresh for each test (attacks change them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flclient.artifacts import ArtifactPin, ArtifactRepository, ArtifactsConfig, TrustedArtifacts

from .support import Clock, Keys, StaticServer, make_keys, make_repository


@dataclass
class World:
    tmp: Path
    keys: Keys
    clock: Clock
    repo: ArtifactRepository
    server: StaticServer

    @property
    def repo_dir(self) -> Path:
        return self.repo.directory

    def publish_module(self, name: str, version: str, data: bytes) -> ArtifactPin:
        self.repo.add_target("module", f"modules/{name}/{version}", data, {"kind": "module"})
        return ArtifactPin(kind="module", name=name, version=version, sha256=hashlib.sha256(data).hexdigest())

    def publish_checkpoint(self, params: dict[str, np.ndarray], version: int) -> ArtifactPin:
        info = self.repo.publish_checkpoint(params, name="global", model_version=version)
        return ArtifactPin(kind="checkpoint", name="global", version=str(version), sha256=info.hashes["sha256"])

    def device(self, name: str = "dev", **config: object) -> TrustedArtifacts:
        root = self.tmp / f"{name}-root.json"
        if not root.exists():
            root.write_bytes((self.repo_dir / "metadata" / "1.root.json").read_bytes())
        cfg = ArtifactsConfig(
            repository_url=self.server.url(),
            trusted_root=root,
            cache_dir=self.tmp / name,
            timeout_s=5.0,
            deadline_s=10.0,
            **config,  # type: ignore[arg-type]
        )
        return TrustedArtifacts(cfg, clock=self.clock.epoch)

    def metadata(self, name: str) -> Path:
        return self.repo_dir / "metadata" / name


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    keys = make_keys(tmp_path / "keys")
    repo = make_repository(tmp_path / "repo", keys, clock)
    server = StaticServer(tmp_path / "repo")
    try:
        yield World(tmp_path, keys, clock, repo, server)
    finally:
        server.close()
