"""``flclient node-key show|export``: the device's key in the format ``flwr supernode register`` reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from flclient._cli import main
from flclient._state import StateStore
from flclient.fleet import NodeKey


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "device.toml"
    path.write_text('[superlink]\nurl = "https://127.0.0.1:9093"\n\n[device]\nstate_dir = "state"\ndata = "d.npz"\n')
    return path


def _device_key(tmp_path: Path) -> NodeKey:
    with StateStore(tmp_path / "state" / "state.db") as store:
        pem = store.get_meta("node_key")
    assert pem is not None
    return NodeKey.from_pem(pem)


def test_show_prints_the_key_the_device_signs_with_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["node-key", "show", "--config", str(config)]) == 0
    first = capsys.readouterr().out
    assert main(["node-key", "show", "--config", str(config)]) == 0
    assert capsys.readouterr().out == first  # created once, before the first run, then the same key
    assert first == _device_key(tmp_path).public_openssh().decode() + "\n"


def test_export_writes_a_file_that_flwr_supernode_register_accepts(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    config = _config(tmp_path)
    out = tmp_path / "device.pub"
    assert main(["node-key", "export", "--config", str(config), "--output", str(out)]) == 0
    # what SuperLink stores for the node is exactly the key the device presents in every request
    assert try_load_public_key(out) == _device_key(tmp_path).public_pem


def test_export_to_an_unwritable_place_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert main(["node-key", "export", "--config", str(config), "--output", str(tmp_path / "no" / "k.pub")]) == 1
    assert "cannot write the public key" in capsys.readouterr().err
