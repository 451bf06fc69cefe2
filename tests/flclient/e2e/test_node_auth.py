"""Node authentication against a real SuperLink: ``flower-superlink --enable-supernode-auth`` over TLS, one device
whose key was exported with ``flclient node-key export`` and registered with ``flwr supernode register``, and one
whose key was not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flclient.server import LocalSuperLink
from flclient.server._local import SuperLinkTls

from ..artifacts.support import make_pki
from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e


def test_a_registered_device_trains_and_an_unregistered_one_stops_with_one_line(
    devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki", require_client_cert=False)
    server_pem = pki.directory / "server.pem"  # certificate and key in one file
    tls = SuperLinkTls(certfile=server_pem, keyfile=server_pem, ca_certfile=pki.ca_pem)
    with LocalSuperLink(tmp_path / "flwr", tls=tls, supernode_auth=True) as link:
        devices.configure(2, link.url)
        for i in range(2):
            devices.add_tables(i, f"[tls]\nca_bundle = {json.dumps(str(pki.ca_pem))}\n")
        exported = tmp_path / "device0.pub"
        export = ["node-key", "export", "--config", str(devices.configs[0]), "--output", str(exported)]
        subprocess.run(
            [sys.executable, "-m", "flclient", *export],
            check=True,
            capture_output=True,
        )
        link.register_node_key(exported)
        devices.start(0)
        devices.start(1)
        deadline = time.monotonic() + 30
        while devices.alive(1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not devices.alive(1), "the unregistered device kept retrying"
        assert devices.procs[1].returncode != 0
        errors = [line for line in devices.log(1).splitlines() if line.startswith("flclient: error:")]
        assert len(errors) == 1 and "this device is not registered with the SuperLink" in errors[0]
        cfg = run_config(feature_module, tmp_path, **{"num-server-rounds": 1, "min-nodes": 1})
        records = submit_and_wait(link, tmp_path, cfg)
        rounds = [r for r in records if r["event"] in ("round", "evaluate")]
        assert rounds and all(r["replies"] == 1 for r in rounds)
        assert devices.alive(0)
        devices.stop_all()
