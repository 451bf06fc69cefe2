"""The device configuration's [artifacts], [tls] and [signatures] tables, and the Client they build: the
coordinator connection over pinned TLS (a CA made in the test) fails closed on the wrong CA."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from flclient import Client, DeviceConfig, DeviceConfigError, FleetUnavailable, _signing
from flclient.artifacts import TlsConfig, TlsVerificationFailed

from .conftest import World
from .support import Pki, StaticServer, make_pki


def _base(url: str = "http://127.0.0.1:9093") -> dict[str, dict[str, object]]:
    return {"superlink": {"url": url}, "device": {"state_dir": "state", "data": "data.npz"}}


def test_trust_tables_parse_and_reject_mistakes(tmp_path: Path) -> None:
    plain = DeviceConfig.from_mapping(_base(), base_dir=tmp_path)
    assert plain.artifacts is None and plain.tls is None and plain.signatures is None
    raw = {
        **_base("https://coordinator:9093"),
        "artifacts": {"repository_url": "https://repo:8443/fleet", "trusted_root": "trust/root.json"},
        "tls": {"ca_bundle": "trust/ca.pem", "client_cert": "trust/dev.crt", "client_key": "trust/dev.key"},
        "signatures": {"model_keys": ["trust/model.pub"]},
    }
    cfg = DeviceConfig.from_mapping(raw, base_dir=tmp_path)
    assert cfg.artifacts is not None and cfg.artifacts.trusted_root == tmp_path / "trust" / "root.json"
    assert cfg.artifacts.cache_dir == tmp_path / "state" / "artifacts"
    assert cfg.tls == TlsConfig(
        ca_bundle=tmp_path / "trust/ca.pem",
        client_cert=tmp_path / "trust/dev.crt",
        client_key=tmp_path / "trust/dev.key",
    )
    assert cfg.signatures is not None and cfg.signatures.require_signed_models  # model keys given: required
    assert cfg.signatures.model_keys == (tmp_path / "trust" / "model.pub",)
    for bad, match in (
        ({"tls": {"ca_bundle": "ca.pem"}}, "needs an https superlink.url"),
        ({"tls": {"cafile": "ca.pem"}}, r"unknown key\(s\) in \[tls\]"),
        ({"artifacts": {"trusted_root": "root.json"}}, "repository_url is required"),
        ({"signatures": {"model_keys": "model.pub"}}, "must be a list"),
        ({"signatures": {"require_signed_models": "yes"}}, "true or false"),
        ({"signatures": {"sign": True}}, r"unknown key\(s\) in \[signatures\]"),
        ({"artifacts": "https://repo"}, r"\[artifacts\] must be a table"),
    ):
        with pytest.raises(DeviceConfigError, match=match):
            DeviceConfig.from_mapping({**_base(), **bad}, base_dir=tmp_path)


def test_client_builds_trust_from_its_tables(world: World) -> None:
    root = world.tmp / "root.json"
    root.write_bytes(world.repo.trusted_root())
    model_pub = world.keys.directory / "model.pub"
    raw = {
        **_base(),
        "artifacts": {"repository_url": world.server.url(), "trusted_root": str(root)},
        "signatures": {"model_keys": [str(model_pub)]},
    }
    cfg = DeviceConfig.from_mapping(raw, base_dir=world.tmp)
    with Client(cfg, data=object()) as client:  # type: ignore[arg-type]
        trust = client.executor.trust
        assert trust is not None and trust.artifacts is not None and trust.require_signed_models
        assert trust.model_keys[0] == _signing.load_public_key(model_pub.read_bytes())
        key_file = world.tmp / "state" / "update-signing.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert trust.update_key is not None
    with pytest.raises(DeviceConfigError, match="model key"):
        bad = {**raw, "signatures": {"model_keys": [str(root)]}}  # not a key
        Client(DeviceConfig.from_mapping(bad, base_dir=world.tmp / "other"), data=object())  # type: ignore[arg-type]


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[StaticServer, Pki]]:
    # A TLS endpoint with a CA made here (it answers Fleet API POSTs with 501: enough to show TLS got through).
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "www").mkdir()
    server = StaticServer(tmp_path / "www", tls=pki.server_context)
    try:
        yield server, pki
    finally:
        server.close()


def _client(tmp: Path, url: str, tls: TlsConfig) -> Client:
    raw = {
        "superlink": {"url": url, "request_timeout_s": 5, "max_backoff_s": 1},
        "device": {"state_dir": str(tmp / "state"), "data": "d.npz"},
        "tls": {k: str(v) for k, v in vars(tls).items() if v is not None},
    }
    return Client(DeviceConfig.from_mapping(raw, base_dir=tmp), data=object(), sleep=lambda s: None)  # type: ignore[arg-type]


def test_coordinator_connection_with_the_pinned_ca_and_client_certificate(
    coordinator: tuple[StaticServer, Pki], tmp_path: Path
) -> None:
    server, pki = coordinator
    tls = TlsConfig(ca_bundle=pki.ca_pem, client_cert=pki.client_cert, client_key=pki.client_key)
    client = _client(tmp_path / "ok", server.url("https", "localhost"), tls)
    with client, pytest.raises(FleetUnavailable, match="HTTP 501"):  # TLS verified both ways, then HTTP answered
        client.run_once()


def test_coordinator_with_another_ca_fails_closed(coordinator: tuple[StaticServer, Pki], tmp_path: Path) -> None:
    server, pki = coordinator
    other = make_pki(tmp_path / "other-pki")
    tls = TlsConfig(ca_bundle=other.ca_pem, client_cert=pki.client_cert, client_key=pki.client_key)
    client = _client(tmp_path / "mitm", server.url("https", "localhost"), tls)
    with client, pytest.raises(TlsVerificationFailed, match="certificate verify failed"):
        client.run_once()  # not retried, nothing sent: the request never left the handshake
    assert server.requests == []
