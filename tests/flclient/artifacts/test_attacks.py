"""Each attack on the update channel, reproduced against a real repository on loopback and refused by name,
while the device keeps its last good artifacts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from flclient.artifacts import (
    ArtifactNotFound,
    ArtifactPin,
    ArtifactPinMismatch,
    ArtifactRepository,
    ArtifactTampered,
    ArtifactTooLarge,
    ArtifactUnavailable,
    MetadataExpired,
    MetadataMismatch,
    MetadataRollback,
    MetadataUntrusted,
    TrustedArtifacts,
)

from .conftest import World
from .support import endless

V1 = b"\0asm module one " * 100
V2 = b"\0asm module two " * 100


def _good(world: World) -> tuple[TrustedArtifacts, ArtifactPin]:
    """A device that fetched module v1 (and so trusts the repository's current metadata)."""
    pin = world.publish_module("demo", "1.0.0", V1)
    device = world.device()
    device.refresh()
    assert device.fetch(pin).read_bytes() == V1
    return device, pin


def _still_good(device: TrustedArtifacts, pin: ArtifactPin) -> None:
    hit = device.cached(pin)
    assert hit is not None and hit.read_bytes() == V1


def test_fetch_exactly_the_pin_then_serve_it_offline(world: World) -> None:
    device, pin = _good(world)
    with device:
        before = len(world.server.requests)
        assert device.fetch(pin).read_bytes() == V1  # a cache hit: no request at all
        assert len(world.server.requests) == before
        with pytest.raises(ArtifactNotFound, match="modules/demo/9.9.9"):
            device.fetch(ArtifactPin(kind="module", name="demo", version="9.9.9", sha256=pin.sha256))
        wrong = ArtifactPin(kind="module", name="demo", version="1.0.0", sha256="0" * 64)
        with pytest.raises(ArtifactPinMismatch, match="the task pinned 0000"):
            device.fetch(wrong)
        _still_good(device, pin)


def test_tampered_module_is_refused(world: World) -> None:
    device, pin = _good(world)
    pin2 = world.publish_module("demo", "2.0.0", V2)
    target = world.repo_dir / "targets" / "modules" / "demo" / f"{pin2.sha256}.2.0.0"
    target.write_bytes(V2.replace(b"two", b"TWO"))  # same length, other bytes
    with device:
        device.refresh()
        with pytest.raises(ArtifactTampered, match="sha256"):
            device.fetch(pin2)
        assert device.cached(pin2) is None
        assert list((device.config.cache_dir / "tmp").iterdir()) == []
        _still_good(device, pin)


def test_rollback_to_older_metadata_is_refused(world: World) -> None:
    device, pin = _good(world)
    old_timestamp = world.metadata("timestamp.json").read_bytes()
    world.publish_module("demo", "2.0.0", V2)
    with device:
        device.refresh()  # the device now trusts the newer timestamp
        world.server.overrides["metadata/timestamp.json"] = lambda: (200, iter([old_timestamp]))
        with pytest.raises(MetadataRollback, match="rollback"):
            device.refresh()
        _still_good(device, pin)


def test_freeze_is_refused_and_renewing_recovers(world: World) -> None:
    """A device offline for two days: the repository's timestamp (valid one day) has expired."""
    device, pin = _good(world)
    with device:
        world.clock.advance(days=2)
        with pytest.raises(MetadataExpired, match="timestamp.json is expired"):
            device.refresh()
        with pytest.raises(MetadataExpired):
            device.fetch(ArtifactPin(kind="module", name="demo", version="3.0.0", sha256="1" * 64))
        _still_good(device, pin)
        # Documented recovery: the repository's online key re-signs (``featurec repo renew``).
        ArtifactRepository(world.repo_dir, signers=[world.keys.signer("online")], clock=world.clock).renew()
        device.refresh()
        pin2 = world.publish_module("demo", "2.0.0", V2)
        assert device.fetch(pin2).read_bytes() == V2


def test_device_offline_past_root_expiry_recovers_after_root_renewal(world: World) -> None:
    device, pin = _good(world)
    with device:
        world.clock.advance(days=400)
        with pytest.raises(MetadataExpired, match="root"):
            device.refresh()
        _still_good(device, pin)
        signers = [world.keys.signer(n) for n in ("root", "targets", "online", "author", "model")]
        written = ArtifactRepository(world.repo_dir, signers=signers, clock=world.clock).renew()
        assert written[0] == "root"
        device.refresh()  # walks to 2.root.json, then everything else is fresh again
        assert device.fetch(world.publish_module("demo", "2.0.0", V2)).read_bytes() == V2


def test_mix_and_match_metadata_is_refused(world: World) -> None:
    device, pin = _good(world)
    pin2 = world.publish_module("demo", "2.0.0", V2)
    version = Metadata.from_bytes(world.metadata("modules.json").read_bytes()).signed.version
    older = world.metadata(f"{version - 1}.modules.json").read_bytes()
    # A valid, correctly signed modules metadata - just not the one this snapshot names.
    world.server.overrides[f"metadata/{version}.modules.json"] = lambda: (200, iter([older]))
    with device:
        device.refresh()
        with pytest.raises(MetadataMismatch, match="mix-and-match"):
            device.fetch(pin2)
        _still_good(device, pin)


def test_checkpoint_metadata_signed_by_a_feature_author_is_refused(world: World) -> None:
    """An attacker with the author and online keys (not the model key) forges the checkpoints role."""
    params = {"w": np.arange(6, dtype=np.float32)}
    good = world.publish_checkpoint(params, 1)
    device = world.device()
    device.refresh()
    assert device.fetch_checkpoint(good).model_version == 1
    forged_bytes = b"evil checkpoint"
    md = Metadata[Targets].from_bytes(world.metadata("checkpoints.json").read_bytes())
    md.signed.version += 1
    md.signed.targets["checkpoints/global/2"] = TargetFile.from_data("checkpoints/global/2", forged_bytes)
    md.signatures.clear()
    md.sign(world.keys.signer("author"))
    data = md.to_bytes()
    world.metadata(f"{md.signed.version}.checkpoints.json").write_bytes(data)
    world.metadata("checkpoints.json").write_bytes(data)
    attacker = ArtifactRepository(world.repo_dir, signers=[world.keys.signer("online")], clock=world.clock)
    attacker.do_snapshot()
    attacker.do_timestamp()
    evil = ArtifactPin(kind="checkpoint", name="global", version="2", sha256=hashlib.sha256(forged_bytes).hexdigest())
    with device:
        device.refresh()
        with pytest.raises(MetadataUntrusted, match="checkpoints"):
            device.fetch(evil)
        assert device.fetch_checkpoint(good).model_version == 1


def test_checkpoint_listed_by_the_modules_role_is_not_found(world: World) -> None:
    device, pin = _good(world)
    data = b"model from the wrong role"
    author = ArtifactRepository(
        world.repo_dir, signers=[world.keys.signer("author"), world.keys.signer("online")], clock=world.clock
    )
    with author.edit_targets("modules") as targets:
        targets.targets["checkpoints/global/7"] = TargetFile.from_data("checkpoints/global/7", data)
    author.do_snapshot()
    author.do_timestamp()
    with device:
        device.refresh()
        with pytest.raises(ArtifactNotFound, match="checkpoints/global/7"):
            device.fetch(
                ArtifactPin(kind="checkpoint", name="global", version="7", sha256=hashlib.sha256(data).hexdigest())
            )
        _still_good(device, pin)


@pytest.mark.parametrize("where", ["target", "timestamp"])
def test_endless_data_is_cut_off(world: World, where: str) -> None:
    device, pin = _good(world)
    pin2 = world.publish_module("demo", "2.0.0", V2)
    path = f"targets/modules/demo/{pin2.sha256}.2.0.0" if where == "target" else "metadata/timestamp.json"
    world.server.overrides[path] = lambda: (200, endless())
    with device:
        with pytest.raises(ArtifactTooLarge, match="endless data"):
            device.refresh()
            device.fetch(pin2)
        _still_good(device, pin)


def test_unreachable_repository_keeps_the_cache(world: World) -> None:
    device, pin = _good(world)
    world.server.overrides["metadata/timestamp.json"] = lambda: (503, iter([b"busy"]))
    with device:
        with pytest.raises(ArtifactUnavailable, match="HTTP 503"):
            device.refresh()
        assert device.fetch(pin).read_bytes() == V1


def test_download_started_before_the_metadata_is_abandoned_when_the_metadata_refuses(world: World) -> None:
    # The download of a pinned target starts while its metadata is verified. An attacker answering the pinned
    # URL with endless data gains nothing: the metadata disagrees with the pin, the download is stopped and
    # deleted, nothing is installed, and the last good artifact stays.
    device, pin = _good(world)
    wrong = ArtifactPin(kind="module", name="demo", version="1.0.0", sha256="f" * 64)
    world.server.overrides[f"targets/modules/demo/{wrong.sha256}.1.0.0"] = lambda: (200, endless())
    with device:
        with pytest.raises(ArtifactPinMismatch, match="the task pinned ffff"):
            device.fetch(wrong)
        missing = ArtifactPin(kind="module", name="demo", version="9.0.0", sha256="e" * 64)
        world.server.overrides[f"targets/modules/demo/{missing.sha256}.9.0.0"] = lambda: (200, endless())
        with pytest.raises(ArtifactNotFound):
            device.fetch(missing)
        assert list((device.config.cache_dir / "tmp").iterdir()) == []
        assert device.cached(wrong) is None
        _still_good(device, pin)
