"""Pinned TLS against a local HTTPS server whose CA (and client certificate) are made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flclient.artifacts import (
    ArtifactPin,
    ArtifactsConfig,
    ArtifactUnavailable,
    TlsConfig,
    TlsConfigError,
    TlsVerificationFailed,
    TrustedArtifacts,
    tls_failure,
)

from .support import Clock, Pki, StaticServer, make_keys, make_pki, make_repository

MODULE = b"\0asm over tls" * 50


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[StaticServer, Pki, Path, ArtifactPin]]:
    import hashlib

    clock = Clock()
    keys = make_keys(tmp_path / "keys")
    repo = make_repository(tmp_path / "repo", keys, clock)
    repo.add_target("module", "modules/tls/1.0.0", MODULE, {})
    pin = ArtifactPin(kind="module", name="tls", version="1.0.0", sha256=hashlib.sha256(MODULE).hexdigest())
    (tmp_path / "root.json").write_bytes(repo.trusted_root())
    pki = make_pki(tmp_path / "pki")
    server = StaticServer(tmp_path / "repo", tls=pki.server_context)
    try:
        yield server, pki, tmp_path, pin
    finally:
        server.close()


def _device(tmp: Path, url: str, tls: TlsConfig, name: str) -> TrustedArtifacts:
    cfg = ArtifactsConfig(
        repository_url=url, trusted_root=tmp / "root.json", cache_dir=tmp / name, tls=tls, timeout_s=5, deadline_s=10
    )
    return TrustedArtifacts(cfg, clock=Clock().epoch)


def test_pinned_ca_and_client_certificate(https: tuple[StaticServer, Pki, Path, ArtifactPin]) -> None:
    server, pki, tmp, pin = https
    tls = TlsConfig(ca_bundle=pki.ca_pem, client_cert=pki.client_cert, client_key=pki.client_key)
    with _device(tmp, server.url("https", "localhost"), tls, "ok") as device:
        assert device.fetch(pin).read_bytes() == MODULE
    # The same context serves the coordinator connection (httpx, as the Fleet transport uses it).
    with httpx.Client(verify=tls.ssl_context(), trust_env=False) as client:
        assert client.get(server.url("https", "127.0.0.1") + "/metadata/timestamp.json").status_code == 200


def test_another_ca_fails_closed(https: tuple[StaticServer, Pki, Path, ArtifactPin], tmp_path: Path) -> None:
    server, pki, tmp, pin = https
    other = make_pki(tmp_path / "other-pki")
    tls = TlsConfig(ca_bundle=other.ca_pem, client_cert=pki.client_cert, client_key=pki.client_key)
    with _device(tmp, server.url("https", "localhost"), tls, "mitm") as device:
        with pytest.raises(TlsVerificationFailed, match="certificate verify failed"):
            device.refresh()
        assert device.cached(pin) is None
    with httpx.Client(verify=tls.ssl_context(), trust_env=False) as client, pytest.raises(httpx.ConnectError) as info:
        client.get(server.url("https", "localhost") + "/metadata/timestamp.json")
    assert isinstance(tls_failure(info.value, host="localhost"), TlsVerificationFailed)


def test_server_refuses_a_device_without_client_certificate(https: tuple[StaticServer, Pki, Path, ArtifactPin]) -> None:
    server, pki, tmp, _ = https
    device = _device(tmp, server.url("https", "localhost"), TlsConfig(ca_bundle=pki.ca_pem), "anon")
    with device, pytest.raises(ArtifactUnavailable):
        device.refresh()


def test_tls_config_mistakes(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="CA bundle"):
        TlsConfig(ca_bundle=tmp_path / "missing.pem").ssl_context()
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="client certificate"):
        TlsConfig(client_cert=tmp_path / "junk.pem").ssl_context()
    with pytest.raises(ValueError, match="needs client_cert"):
        TlsConfig(client_key=tmp_path / "k.pem")
    with pytest.raises(TlsConfigError, match=r"unknown key\(s\) in \[tls\]"):
        TlsConfig.from_mapping({"cafile": "x"}, base_dir=tmp_path)
    cfg = TlsConfig.from_mapping({"ca_bundle": "ca.pem"}, base_dir=tmp_path)
    assert cfg.ca_bundle == tmp_path / "ca.pem" and cfg.pinned
