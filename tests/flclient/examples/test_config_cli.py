"""The [data] table of device.toml (one-line DeviceConfigError naming the key), [device] data no longer required,
and ``flclient data stats|import|prune`` (one line on error, exit codes, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flclient import DeviceConfig, DeviceConfigError, ExampleSelection, ExampleStore, RetentionPolicy
from flclient._cli import main

BASE: dict[str, Any] = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "s"}}


def _config(tmp: Path, table: dict[str, Any] | None = None, **device: Any) -> DeviceConfig:
    raw: dict[str, Any] = {**BASE, "device": {**BASE["device"], **device}}
    if table is not None:
        raw["data"] = table
    return DeviceConfig.from_mapping(raw, base_dir=tmp)


def test_data_table_builds_the_store_config(tmp_path: Path) -> None:
    table = {
        "store": "ex.sqlite",
        "collection": "vib",
        "window_s": 86400,
        "max_examples": 500,
        "unused_first": False,
        "max_age_s": 604800,
        "max_rows": 1000,
        "max_bytes": 1 << 20,
        "collections": {"vib": {"max_rows": 10}, "temp": {"max_age_s": 60.5}},
    }
    cfg = _config(tmp_path, table).example_store
    assert cfg is not None and cfg.store == tmp_path / "ex.sqlite"
    assert cfg.selection == ExampleSelection(collection="vib", window_s=86400, max_examples=500, unused_first=False)
    assert cfg.retention == RetentionPolicy(max_age_s=604800, max_rows=1000, max_bytes=1 << 20)
    assert cfg.collection_retention == {"vib": RetentionPolicy(max_rows=10), "temp": RetentionPolicy(max_age_s=60.5)}
    default = _config(tmp_path, {}).example_store
    assert default is not None and default.store == tmp_path / "s" / "examples.sqlite"
    assert default.selection == ExampleSelection() and not default.retention.limited


def test_device_data_is_optional_and_exclusive_with_the_data_table(tmp_path: Path) -> None:
    assert _config(tmp_path).data is None and _config(tmp_path).example_store is None
    assert _config(tmp_path, data="d.npz").data == tmp_path / "d.npz"
    with pytest.raises(DeviceConfigError, match="device.data and a \\[data\\] table"):
        _config(tmp_path, {}, data="d.npz")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"store": 3}, "data.store must be a path string"),
        ({"max_rows": 0}, "data.max_rows must be a positive integer, got 0"),
        ({"max_rows": 1.5}, "data.max_rows must be a positive integer"),
        ({"max_bytes": True}, "data.max_bytes must be a positive integer"),
        ({"max_age_s": "1d"}, "data.max_age_s must be a positive number"),
        ({"window_s": -5}, "data.window_s must be a positive number"),
        ({"max_examples": 0}, "data.max_examples must be a positive integer"),
        ({"unused_first": "yes"}, "data.unused_first must be true or false"),
        ({"collection": "a b"}, "data.collection must be a collection name"),
        ({"retention": 3}, r"unknown key\(s\) in \[data\]: \['retention'\]"),
        ({"collections": 3}, "data.collections must be a table"),
        ({"collections": {"vib": 3}}, r"\[data.collections.vib\] must be a table"),
        ({"collections": {"vib": {"rows": 3}}}, r"unknown key\(s\) in \[data.collections.vib\]"),
        ({"collections": {"vib": {"max_rows": -1}}}, "data.collections.vib.max_rows must be a positive integer"),
        ({"collections": {"a b": {"max_rows": 1}}}, "data.collections.a b: 'a b' is not a collection name"),
    ],
)
def test_a_wrong_data_key_is_one_error_naming_it(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceConfigError, match=message) as info:
        _config(tmp_path, table)
    assert "\n" not in str(info.value)


def test_a_data_table_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeviceConfigError, match=r"\[data\] must be a table"):
        DeviceConfig.from_mapping({**BASE, "data": "x.sqlite"}, base_dir=tmp_path)


def test_a_client_without_any_data_source_says_what_to_give(tmp_path: Path) -> None:
    from flclient import Client
    from flclient.fleet import MemorySuperLink

    with pytest.raises(DeviceConfigError, match=r"Client\(config, data=...\)"):
        Client(_config(tmp_path), transport=MemorySuperLink())


def _device_toml(tmp: Path, data: str = "[data]\nmax_rows = 4\n") -> Path:
    path = tmp / "device.toml"
    path.write_text(f'[superlink]\nurl = "http://127.0.0.1:9093"\n[device]\nstate_dir = "state"\n{data}')
    return path


def test_cli_imports_reports_and_prunes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _device_toml(tmp_path)
    npz = tmp_path / "d.npz"
    np.savez(npz, temp=np.arange(3.0), label=np.array([0, 1, 0]), when=np.array([10.0, 20.0, 30.0]))
    assert (
        main(["data", "import", str(npz), "--config", str(config), "--collection", "vib", "--timestamps", "when"]) == 0
    )
    assert "imported 3 examples" in capsys.readouterr().out
    assert main(["data", "import", str(npz), "--config", str(config)]) == 0  # into 'default'; 6 > max_rows 4
    capsys.readouterr()
    assert main(["data", "stats", "--config", str(config), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["store"] == str(tmp_path / "state" / "examples.sqlite")
    rows = {c["name"]: c["rows"] for c in stats["collections"]}
    assert rows == {"default": 3, "vib": 1}  # the oldest (vib at 10 and 20 s) went first
    assert main(["data", "stats", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "2 collection(s), 4 examples" in text and "vib: 1 examples (1 unused)" in text and "columns temp" in text
    config.write_text(config.read_text().replace("max_rows = 4", "max_rows = 2"))
    assert main(["data", "prune", "--config", str(config), "--vacuum", "--verify"]) == 0
    assert "pruned 2 examples" in capsys.readouterr().out
    with ExampleStore(tmp_path / "state" / "examples.sqlite") as store:
        assert sum(s.rows for s in store.stats()) == 2


def test_cli_errors_are_one_line_with_exit_code_1(tmp_path: Path) -> None:
    config = _device_toml(tmp_path)
    (tmp_path / "nodata").mkdir()
    cases = [
        (["data", "import", str(tmp_path / "missing.npz"), "--config", str(config)], "cannot import"),
        (["data", "stats", "--config", str(_device_toml(tmp_path / "nodata", data=""))], "has no [data] table"),
        (["data", "prune", "--config", str(tmp_path / "absent.toml")], "cannot read"),
    ]
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "flclient", *argv], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("flclient: error: ") and message in lines[0], proc.stderr
    usage = subprocess.run([sys.executable, "-m", "flclient", "data"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
