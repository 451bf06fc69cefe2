"""The server plugin's trust: each model version signed and published through TUF once, device updates verified
against keys pinned to node ids on first use (or a registry) before aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

pytest.importorskip("flwr", reason="the server plugin needs the [server] extra")

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flclient import _signing
from flclient.artifacts import UpdateContext, encode_checkpoint, sign_update, verify_checkpoint
from flclient.protocol import DenseLayerSpec, DenseModelSpec, TrainTask
from flclient.server import RunConfig
from flclient.server._records import to_flwr
from flclient.server._trust import DeviceKeyPins, ServerTrust, public_pem

from .conftest import World

PARAMS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
RUN = 2**63 + 11  # Flower's ids are uint64


def _key() -> Ed25519PrivateKey:
    return _signing.load_private_key(_signing.generate_key_pair()[0])


def _reply(
    key: Ed25519PrivateKey,
    *,
    node: int = 7,
    rnd: int = 1,
    version: int = 1,
    arrays: dict[str, np.ndarray] = PARAMS,
    signed: bool = True,
) -> RecordDict:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": 3}),
        }
    )
    if signed:
        ctx = UpdateContext(run_id=RUN, server_round=rnd, node_id=node, model_version=version)
        sig = sign_update(encode_checkpoint(PARAMS, model_version=version), context=ctx, private_key=key)
        content["signature"] = ConfigRecord({"update-signature": sig, "update-key": public_pem(key)})
    return content


MODEL = DenseModelSpec(layers=(DenseLayerSpec(in_features=2, out_features=2),))


def test_models_are_signed_and_published_once_per_version(world: World, tmp_path: Path) -> None:
    cfg = {
        "model-signing-key": str(world.keys.files["model"]),
        "artifacts-repo": str(world.repo_dir),
        "artifacts-keys": f"{world.keys.files['model']},{world.keys.files['online']}",
        "model-via-tuf": "true",
    }
    trust = ServerTrust.from_config(RunConfig.from_run_config(cfg), history_dir=tmp_path / "models")
    assert trust is not None
    task = TrainTask(model=MODEL, arrays=PARAMS)
    content = to_flwr(trust.prepare(task, PARAMS, version=4, run_id=RUN).to_records())
    config = content.config_records["config"]
    assert "arrays" not in content  # the devices take the model from TUF
    assert config["run-id"] == str(RUN) and config["model-pin"] == "global@4"
    model_pub = _signing.load_public_key((world.keys.directory / "model.pub").read_bytes())
    sig = config["model-signature"]
    assert isinstance(sig, bytes)
    verify_checkpoint(PARAMS, model_version=4, signature=sig, trusted_keys=[model_pub])
    with world.device() as device:
        from flclient.artifacts import ArtifactPin

        pin = ArtifactPin.parse("checkpoint", "global@4", sha256=str(config["model-sha256"]))
        np.testing.assert_array_equal(device.fetch_checkpoint(pin).arrays["w"], PARAMS["w"])
    again = to_flwr(
        trust.prepare(TrainTask(model=MODEL), PARAMS, version=4, run_id=RUN).to_records()
    )  # no 2nd publication
    assert again.config_records["config"]["model-sha256"] == config["model-sha256"]
    assert ServerTrust.from_config(RunConfig.from_run_config({}), history_dir=tmp_path) is None
    with pytest.raises(ValueError, match="artifacts-keys"):
        ServerTrust.from_config(
            RunConfig.from_run_config({"artifacts-repo": str(world.repo_dir)}), history_dir=tmp_path
        )
    with pytest.raises(ValueError, match="model-via-tuf needs"):
        ServerTrust.from_config(
            RunConfig.from_run_config({"model-via-tuf": "true", "require-signed-updates": "1"}), history_dir=tmp_path
        )


def test_updates_are_verified_and_keys_pinned_per_node(tmp_path: Path) -> None:
    trust = ServerTrust.from_config(RunConfig.from_run_config({"require-signed-updates": "true"}), history_dir=tmp_path)
    assert trust is not None
    device, thief = _key(), _key()

    def check(content: RecordDict, *, node: int = 7, rnd: int = 1) -> str | None:
        assert trust is not None
        return trust.check_update(content, node_id=node, server_round=rnd, version=1, run_id=RUN)

    assert check(_reply(device)) is None  # first use: device's key pinned to node 7
    assert "unsigned" in str(check(_reply(device, signed=False)))
    assert "pinned" in str(check(_reply(thief)))  # another key for node 7
    assert "not trusted" in str(check(_reply(device), rnd=2))  # replayed into round 2
    assert "not trusted" in str(check(_reply(device, node=7), node=8))  # node 8 presenting node 7's update
    tampered = _reply(device, arrays={**PARAMS, "b": np.ones(3, np.float32)})
    tampered["signature"] = _reply(device)["signature"]
    assert "not trusted" in str(check(tampered))
    assert trust.take_summary() == {"verified": 1, "rejected": 5}
    # Pins survive a restart of the ServerApp (they live in the history directory).
    again = ServerTrust.from_config(RunConfig.from_run_config({"require-signed-updates": "true"}), history_dir=tmp_path)
    assert again is not None
    assert "pinned" in str(again.check_update(_reply(thief), node_id=7, server_round=1, version=1, run_id=RUN))
    # Without require-signed-updates an unsigned update passes, a bad signature still does not.
    lenient = ServerTrust(pins=DeviceKeyPins(tmp_path / "lenient.json"))
    assert lenient.check_update(_reply(device, signed=False), node_id=9, server_round=1, version=1, run_id=RUN) is None
    assert "not trusted" in str(lenient.check_update(_reply(device), node_id=9, server_round=2, version=1, run_id=RUN))


def test_a_device_key_registry_admits_only_registered_keys(tmp_path: Path) -> None:
    registered, stranger = _key(), _key()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dev1.pub").write_bytes(public_pem(registered))
    trust = ServerTrust.from_config(
        RunConfig.from_run_config({"device-keys": str(tmp_path / "keys")}), history_dir=tmp_path / "h"
    )
    assert trust is not None and not trust.require_signed_updates
    ok = trust.check_update(_reply(registered, node=1), node_id=1, server_round=1, version=1, run_id=RUN)
    bad = trust.check_update(_reply(stranger, node=2), node_id=2, server_round=1, version=1, run_id=RUN)
    unsigned = trust.check_update(_reply(stranger, signed=False), node_id=3, server_round=1, version=1, run_id=RUN)
    assert ok is None and "not a registered device key" in str(bad) and unsigned is None
