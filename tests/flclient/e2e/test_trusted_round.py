"""A real federation where the feature module and the global model both arrive through TUF and every update goes
back signed: flower-superlink, the flclient ServerApp (signing and publishing each model version into a TUF
repository) and ``flclient run`` device processes whose only source of the module and the model is that
repository, served by a static HTTP server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flclient import _signing
from flclient.server import LocalSuperLink

from ..artifacts.support import Clock, StaticServer, make_keys, make_pki, make_repository
from .conftest import Devices, run_config, submit_and_wait
from .proxy import FlakyProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _trusting(config: Path, *, repo_url: str, root: Path, model_key: Path) -> None:
    """Make a device configuration TUF-only: no local modules, the repository, the server's model key."""
    text = config.read_text()
    start = text.index("feature_modules = [")
    end = text.index("]", start) + 1
    config.write_text(
        text[:start]
        + "feature_modules = []"
        + text[end:]
        + f'\n[artifacts]\nrepository_url = "{repo_url}"\ntrusted_root = {json.dumps(str(root))}\n'
        + f"timeout_s = 10\n\n[signatures]\nmodel_keys = [{json.dumps(str(model_key))}]\n"
    )


def test_module_and_model_through_tuf_and_updates_verified_before_aggregation(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    module_path, spec, _ = feature_module
    keys = make_keys(tmp_path / "keys")
    repo = make_repository(tmp_path / "repo", keys, Clock())
    name, version = spec.split("@")
    repo.add_target("module", f"modules/{name}/{version}", module_path.read_bytes(), {"kind": "module"})
    root = tmp_path / "root.json"
    root.write_bytes(repo.trusted_root())
    # A third device trusts another model key: it must decline every task, and nothing of it is aggregated.
    impostor = tmp_path / "impostor.pub"
    impostor.write_bytes(_signing.generate_key_pair()[1])
    server = StaticServer(tmp_path / "repo")
    # Device 0 reaches the coordinator over mutual TLS only (CA and certificates made here).
    pki = make_pki(tmp_path / "pki")
    front = FlakyProxy(superlink.url, tls=pki.server_context)
    try:
        devices.configure(3, [front.url, superlink.url, superlink.url])
        for i in range(3):
            model_key = impostor if i == 2 else keys.directory / "model.pub"
            _trusting(devices.configs[i], repo_url=server.url(), root=root, model_key=model_key)
        devices.add_tables(
            0,
            f"[tls]\nca_bundle = {json.dumps(str(pki.ca_pem))}\n"
            f"client_cert = {json.dumps(str(pki.client_cert))}\nclient_key = {json.dumps(str(pki.client_key))}\n",
        )
        for i in range(3):
            devices.start(i)
        cfg = run_config(
            feature_module,
            tmp_path,
            **{
                "min-nodes": 3,
                "model-signing-key": str(keys.files["model"]),
                "artifacts-repo": str(tmp_path / "repo"),
                "artifacts-keys": f"{keys.files['model']},{keys.files['online']}",
                "model-via-tuf": "true",
                "require-signed-updates": "true",
            },
        )
        records = submit_and_wait(superlink, tmp_path, cfg, timeout_s=180)
    finally:
        server.close()
        front.close()
    rounds = [r for r in records if r["event"] == "round"]
    final = next(r for r in records if r["event"] == "evaluate")
    assert len(rounds) == 2, records
    for r in rounds:
        assert r["replies"] == 3 and r["failures"] == {"model-signature-invalid": 1}, r
        assert r["signed_updates"] == {"verified": 2, "rejected": 0} and not r["rejected"], r
        assert r["new_version"] == r["version"] + 1  # both verified updates were aggregated
    assert final["failures"] == {"model-signature-invalid": 1}
    assert final["eval_acc"] > rounds[0]["eval_acc"], records
    # The module and every model version came from the repository; the arrays were never in the tasks.
    for i in range(2):
        index = json.loads((devices.configs[i].parent / "state" / "artifacts" / "index.json").read_text())
        targets = set(index["entries"])
        assert f"modules/{name}/{version}" in targets
        assert {f"checkpoints/global/{r['version']}" for r in rounds} <= targets
        tasks = [t for t in devices.telemetry(i) if t["event"] == "task"]
        assert [t["outcome"] for t in tasks] == ["replied"] * 3
        assert max(t["bytes_down"] for t in tasks) < 4 * 67 * 10  # less than the model: it came through TUF
    assert front.clients == {"device-1"}  # device 0's certificate, seen by the TLS front
    pins = json.loads((Path(cfg["history-dir"]) / "device-keys.json").read_text())
    assert len(pins) == 2  # the two devices' update keys, pinned to their node ids on first use


def test_secagg_rounds_carry_the_model_signature_devices_require(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    devices.configure(3, superlink.url)
    for i in range(3):
        devices.add_tables(i, f"[signatures]\nmodel_keys = [{json.dumps(str(keys.directory / 'model.pub'))}]\n")
        devices.start(i)
    cfg = run_config(
        feature_module,
        tmp_path,
        **{
            "num-server-rounds": 1,
            "min-nodes": 3,
            "secagg": "true",
            "secagg-clip": 4.0,
            "model-signing-key": str(keys.files["model"]),
        },
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    (rnd,) = [r for r in records if r["event"] == "round"]
    assert rnd["secagg"].get("survivors") == 3, rnd  # every device verified the signed model and took part
    assert rnd["new_version"] == rnd["version"] + 1
    final = next(r for r in records if r["event"] == "evaluate")
    assert final["replies"] == 3 and not final["failures"], final
