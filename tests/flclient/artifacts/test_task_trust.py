"""Trusted artifacts in the real task path: ``TaskExecutor`` with a ``RoundTrust`` against a TUF repository served
on loopback (module and model fetched through TUF, signatures checked before loading, the reply signed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from flclient import TaskDeclined, _signing
from flclient._concerns import NodeBinding
from flclient._task import LocalData, TaskExecutor
from flclient.artifacts import (
    RoundTrust,
    UpdateContext,
    encode_checkpoint,
    load_update_key,
    sign_checkpoint,
    verify_update,
)
from flclient.artifacts._round import SIGNATURE_RECORD, UPDATE_KEY, UPDATE_SIGNATURE
from flclient.fleet._objects import ArrayRecord, ConfigRecord, ConfigValue, RecordDict

from ..features import wat
from .conftest import World

SPEC = json.dumps({"layers": [[1, 2, "none"]], "loss": "cross_entropy"})
PARAMS = {"dense0_weight": np.array([[0.1, -0.1]], np.float32), "dense0_bias": np.zeros(2, np.float32)}


class _Data:
    def load(self) -> LocalData:
        x = np.linspace(-1.0, 1.0, 40)
        return LocalData(columns={"x": x}, labels=(x > 0).astype(np.int64))


def _task(module_sha: str, extra: dict[str, ConfigValue] | None = None, *, arrays: bool = True) -> RecordDict:
    config: dict[str, ConfigValue] = {
        "feature-module": "doubler@1.0.0",
        "feature-module-sha256": module_sha,
        "model-spec": SPEC,
        "server-round": 3,
        "model-version": 1,
        "run-id": "18446744073709551557",  # a uint64 run id, sent as a string
        "epochs": 1,
        **(extra or {}),
    }
    content: RecordDict = {"config": ConfigRecord(config)}
    if arrays:
        content["arrays"] = ArrayRecord(dict(PARAMS))
    return content


def _publish_module(world: World) -> str:
    data = wat.doubler()
    world.publish_module("doubler", "1.0.0", data)
    return hashlib.sha256(data).hexdigest()


def test_module_and_model_through_tuf_and_the_reply_signed(world: World) -> None:
    sha = _publish_module(world)
    model_pin = world.publish_checkpoint(PARAMS, 1)
    update_key = load_update_key(world.tmp / "state" / "update.key")
    assert load_update_key(world.tmp / "state" / "update.key").public_key() == update_key.public_key()  # kept
    trust = RoundTrust(artifacts=world.device(), update_key=update_key, require_signed_models=True)
    executor = TaskExecutor(data=_Data(), trust=trust, node=NodeBinding(node_id=42))
    try:
        # No arrays in the task: the model comes from its TUF pin, which is what makes it trusted here.
        content = _task(sha, {"model-pin": "global@1", "model-sha256": model_pin.sha256}, arrays=False)
        outcome = executor.run("train", content)
    finally:
        executor.close()
        trust.close()
    reply = outcome.content
    assert isinstance(reply["arrays"], ArrayRecord)
    record = reply[SIGNATURE_RECORD]
    assert isinstance(record, ConfigRecord)
    signature, public = record.values[UPDATE_SIGNATURE], record.values[UPDATE_KEY]
    assert isinstance(signature, bytes) and isinstance(public, bytes)
    payload = encode_checkpoint(reply["arrays"].arrays, model_version=1)
    ctx = UpdateContext(run_id=18446744073709551557, server_round=3, node_id=42, model_version=1)
    assert verify_update(payload, signature, context=ctx, trusted_keys=[_signing.load_public_key(public)])
    paths = {f"/{p}" for p in world.server.requests}
    assert any(p.startswith("/targets/modules/doubler/") for p in paths)
    assert any(p.startswith("/targets/checkpoints/global/") for p in paths)


def test_refused_module_is_declined_with_its_reason_and_the_last_good_one_stays(world: World) -> None:
    sha = _publish_module(world)
    trust = RoundTrust(artifacts=world.device())
    executor = TaskExecutor(data=_Data(), trust=trust)
    try:
        assert executor.run("train", _task(sha)).num_examples > 0
        # A task pinning a module the repository never published, and one whose bytes were tampered with.
        with pytest.raises(TaskDeclined) as info:
            executor.run("train", _task("ab" * 32, {"feature-module": "doubler@2.0.0"}))
        assert info.value.reason == "artifact-not-found"
        evil = wat.doubler(code_manifest=wat.manifest(version="3.0.0"))
        pin = world.publish_module("doubler", "3.0.0", evil)
        target = next((world.repo_dir / "targets" / "modules" / "doubler").glob(f"{pin.sha256}.*"))
        target.chmod(0o644)
        target.write_bytes(evil[:-1] + b"\x00")
        with pytest.raises(TaskDeclined) as info:
            executor.run("train", _task(pin.sha256, {"feature-module": "doubler@3.0.0"}))
        assert info.value.reason == "artifact-tampered"
        assert executor.run("train", _task(sha)).num_examples > 0  # the last good module still runs
    finally:
        executor.close()
        trust.close()


def test_model_signatures_are_checked_before_the_model_is_loaded(world: World) -> None:
    sha = _publish_module(world)
    server_key = _signing.load_private_key(_signing.generate_key_pair()[0])
    other_key = _signing.load_private_key(_signing.generate_key_pair()[0])
    good = sign_checkpoint(PARAMS, model_version=1, private_key=server_key)
    trust = RoundTrust(artifacts=world.device(), model_keys=(server_key.public_key(),), require_signed_models=True)
    executor = TaskExecutor(data=_Data(), trust=trust)
    try:
        assert executor.run("evaluate", _task(sha, {"model-signature": good})).num_examples > 0
        cases: list[tuple[dict[str, ConfigValue], str]] = [
            ({}, "model-signature-missing"),
            ({"model-signature": sign_checkpoint(PARAMS, model_version=1, private_key=other_key)}, "invalid"),
            ({"model-signature": good, "model-version": 2}, "model-signature-invalid"),  # replayed for v2
            ({"model-signature": b"junk"}, "model-signature-invalid"),
        ]
        for extra, reason in cases:
            with pytest.raises(TaskDeclined) as info:
                executor.run("train", _task(sha, extra))
            assert reason in info.value.reason, (extra.keys(), info.value)
        tampered = _task(sha, {"model-signature": good})
        tampered["arrays"] = ArrayRecord({**PARAMS, "dense0_bias": np.ones(2, np.float32)})
        with pytest.raises(TaskDeclined, match="not trusted"):
            executor.run("train", tampered)
    finally:
        executor.close()
        trust.close()


def test_without_trust_the_task_path_is_unchanged(tmp_path: Path) -> None:
    # No RoundTrust: no module fetching, no signature record (and flclient.artifacts is not needed).
    executor = TaskExecutor(data=_Data())
    with pytest.raises(TaskDeclined) as info:
        executor.run("train", _task("ab" * 32))
    assert info.value.reason == "feature-module-pin"
    with pytest.raises(TaskDeclined) as info:
        executor.run("train", _task("ab" * 32, arrays=False))
    assert info.value.reason == "no-model"


def test_a_backbone_is_fetched_once_through_tuf_by_its_exact_pin(world: World) -> None:
    data = b"frozen backbone bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    world.repo.add_target("backbone", "backbones/tiny/1", data, {"kind": "backbone"})
    trust = RoundTrust(artifacts=world.device())
    path = trust.backbone("tiny", "1", sha)
    assert path is not None and path.read_bytes() == data
    assert trust.backbone("tiny", "1", sha) == path  # from the cache, no second download
    with pytest.raises(TaskDeclined):
        trust.backbone("tiny", "1", "0" * 64)  # the same name with other bytes is never used
    with pytest.raises(TaskDeclined) as info:
        trust.backbone("Tiny!", "1", sha)
    assert info.value.reason == "backbone-pin"
    assert RoundTrust(artifacts=None).backbone("tiny", "1", sha) is None
