"""A device whose device.toml has a [data] table instead of [device] data takes part in a real federation
(SuperLink, ServerApp, ``flclient run`` processes): its records were moved into the example store with
``flclient data import``, each round reads at most max_examples of them, and what the rounds read is used."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flclient.server import LocalSuperLink

from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e


def _flclient(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "flclient", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_device_reading_the_example_store_trains_with_the_others(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(2, superlink.url)
    config = devices.configs[0]
    text = config.read_text()
    npz = re.search(r'^data = "(.*)"$', text, flags=re.MULTILINE)
    assert npz is not None
    config.write_text(text.replace(npz.group(0) + "\n", "") + '\n[data]\ncollection = "digits"\nmax_examples = 40\n')
    out = _flclient("data", "import", npz.group(1), "--config", str(config), "--collection", "digits")
    imported = re.search(r"imported ([\d,]+) examples", out)
    assert imported is not None, out
    rows = int(imported.group(1).replace(",", ""))
    assert rows > 40
    devices.start(0)
    devices.start(1)
    records = submit_and_wait(superlink, tmp_path, run_config(feature_module, tmp_path))
    rounds = [r for r in records if r["event"] == "round"]
    assert len(rounds) == 2 and all(r["replies"] == 2 and not r["failures"] for r in rounds), rounds
    trained = [t for t in devices.telemetry(0) if t.get("event") == "task" and t.get("message_type") == "train"]
    assert [t["outcome"] for t in trained] == ["replied", "replied"], trained
    assert all(0 < t["num_examples"] <= 40 for t in trained), trained  # one bounded snapshot per round
    (stats,) = json.loads(_flclient("data", "stats", "--config", str(config), "--json"))["collections"]
    assert stats["rows"] == rows and stats["unused"] <= rows - 80  # both rounds marked what they read
