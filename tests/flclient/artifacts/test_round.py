"""One federated round end to end, where the feature module and the global model both arrive through TUF and
the device's update goes back signed: published by ``featurec publish`` and the server-side repository API,
served by a static server on loopback, fetched, verified, run, signed, verified by the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurec._cli import main as featurec_main
from flclient import _signing
from flclient.artifacts import (
    ArtifactPin,
    ArtifactRepository,
    UpdateContext,
    encode_checkpoint,
    sign_checkpoint,
    sign_update,
    verify_checkpoint,
    verify_update,
)
from flclient.features import FeatureModule

from ..features import wat
from .conftest import World


def test_round_with_module_and_model_through_tuf(world: World, capsys: object) -> None:
    module_file = world.tmp / "doubler-1.0.0.wasm"
    module_file.write_bytes(wat.doubler())
    keys = world.keys.files
    code = featurec_main(
        [
            "publish",
            str(module_file),
            "--repo",
            str(world.repo_dir),
            "--key",
            str(keys["author"]),
            "--key",
            str(keys["online"]),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    sha = out.split('feature-module-sha256 = "')[1].split('"')[0]

    # Server side: publish the global model through TUF (the model key + the online key), and sign it.
    server = ArtifactRepository(
        world.repo_dir, signers=[world.keys.signer("model"), world.keys.signer("online")], clock=world.clock
    )
    model_key = _signing.load_private_key(keys["model"].read_bytes())
    params = {"w": np.array([[0.5]], np.float32), "b": np.zeros(1, np.float32)}
    info = server.publish_checkpoint(params, name="global", model_version=1)
    # What the coordinator's task carries: pins, and the model signature (bytes fit a ConfigRecord).
    module_spec, module_sha = "doubler@1.0.0", sha
    model_pin = ArtifactPin(kind="checkpoint", name="global", version="1", sha256=info.hashes["sha256"])
    model_signature = sign_checkpoint(params, model_version=1, private_key=model_key)

    # Device side.
    device_key = _signing.load_private_key(_signing.generate_key_pair()[0])
    with world.device() as device:
        device.refresh()
        module_pin = ArtifactPin.parse("module", module_spec, sha256=module_sha)
        artifact = device.fetch(module_pin)
        checkpoint = device.fetch_checkpoint(model_pin)
        verify_checkpoint(
            checkpoint.arrays,
            model_version=1,
            signature=model_signature,
            trusted_keys=[model_key.public_key()],
        )
        with FeatureModule.load(Path(artifact.path), expected_sha256=artifact.sha256) as module:
            x_raw = np.linspace(-1.0, 1.0, 32)
            features = module.extract({"x": x_raw})["y"].reshape(-1, 1).astype(np.float32)
        y = 3.0 * x_raw.reshape(-1, 1).astype(np.float32)
        w, b = checkpoint.arrays["w"].copy(), checkpoint.arrays["b"].copy()
        for _ in range(20):
            err = features @ w + b - y
            w -= 0.1 * features.T @ err / len(y)
            b -= 0.1 * err.mean(axis=0)
        update = {"w": w, "b": b}
        ctx = UpdateContext(run_id=1, server_round=1, node_id=7, model_version=1)
        payload = encode_checkpoint(update, model_version=1)
        signature = sign_update(payload, context=ctx, private_key=device_key)

    # Server: verify before aggregating, then publish version 2; the device gets it through TUF as well.
    assert verify_update(payload, signature, context=ctx, trusted_keys=[device_key.public_key()])
    assert abs(float(w[0, 0]) - 1.5) < abs(0.5 - 1.5)  # the round learned something (y = 3x = 1.5 * 2x)
    info2 = server.publish_checkpoint(update, name="global", model_version=2)
    with world.device() as device:
        v2 = device.fetch_checkpoint(
            ArtifactPin(kind="checkpoint", name="global", version="2", sha256=info2.hashes["sha256"])
        )
        np.testing.assert_array_equal(v2.arrays["w"], w)
