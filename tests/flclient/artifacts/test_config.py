"""Pins and the ``[artifacts]`` configuration: validated, one sentence per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient._errors import DeviceConfigError
from flclient.artifacts import ArtifactPin, ArtifactsConfig

SHA = "ab" * 32


def test_pin_parse_and_target_path() -> None:
    pin = ArtifactPin.parse("module", "device_context@1.0.0", sha256=SHA)
    assert pin.target_path == "modules/device_context/1.0.0"
    assert ArtifactPin.from_target_path(pin.target_path, sha256=SHA) == pin
    assert (
        ArtifactPin(kind="checkpoint", name="global", version="12", sha256=SHA).target_path == "checkpoints/global/12"
    )
    for bad in ("device_context", "../x@1", "x@../1", "X@1"):
        with pytest.raises(ValueError):
            ArtifactPin.parse("module", bad, sha256=SHA)
    with pytest.raises(ValueError, match="sha256"):
        ArtifactPin.parse("module", "x@1", sha256=SHA.upper())


@given(st.text(max_size=30), st.text(max_size=30))
def test_pin_parse_accepts_only_safe_names(name: str, version: str) -> None:
    try:
        pin = ArtifactPin.parse("module", f"{name}@{version}", sha256=SHA)
    except ValueError:
        return
    assert ".." not in pin.target_path.split("/") and pin.target_path.count("/") == 2


def test_artifacts_config_from_mapping(tmp_path: Path) -> None:
    raw = {
        "repository_url": "https://artifacts:8443/fleet",
        "trusted_root": "trust/root.json",
        "cache_max_mib": 64,
        "tls": {"ca_bundle": "trust/ca.pem"},
    }
    cfg = ArtifactsConfig.from_mapping(raw, base_dir=tmp_path, state_dir=tmp_path / "state")
    assert cfg.trusted_root == tmp_path / "trust/root.json" and cfg.cache_dir == tmp_path / "state/artifacts"
    assert cfg.cache_max_bytes == 64 << 20 and cfg.tls is not None and cfg.tls.pinned
    for change, message in (
        ({"repository_url": "ftp://x"}, "http"),
        ({"cache_max_mib": 0}, "positive"),
        ({"colour": "red"}, "unknown key"),
        ({"tls": {"ca": "x"}}, "unknown key"),
        ({"repository_url": "http://x", "tls": {"ca_bundle": "ca.pem"}}, "https"),
    ):
        with pytest.raises(DeviceConfigError, match=message):
            ArtifactsConfig.from_mapping({**raw, **change}, base_dir=tmp_path, state_dir=tmp_path)
    del raw["trusted_root"]
    with pytest.raises(DeviceConfigError, match="trusted_root"):
        ArtifactsConfig.from_mapping(raw, base_dir=tmp_path, state_dir=tmp_path)
