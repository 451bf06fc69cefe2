"""``flclient predict`` and ``Client.predict``: the device's last global model on local records, offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from flclient import DeviceConfig
from flclient._cli import main
from flclient._client import local_predictor
from flclient._task import LocalData
from flclient.fleet._objects import ArrayRecord, ConfigRecord

from .features import wat

SPEC = json.dumps({"layers": [[1, 2, "none"]], "loss": "cross_entropy"})


class _Data:
    def load(self) -> LocalData:
        x = np.linspace(-1.0, 1.0, 40)
        return LocalData(columns={"x": x}, labels=(x > 0).astype(np.int64))


def _device(tmp_path: Path) -> tuple[Path, str]:
    module = tmp_path / "doubler.wasm"
    module.write_bytes(wat.doubler())
    (tmp_path / "d.npz").write_bytes(b"")  # device.toml's paths must exist when it is loaded
    (tmp_path / "device.toml").write_text(
        '[superlink]\nurl = "http://127.0.0.1:9093"\n'
        f'[device]\nstate_dir = "state"\ndata = "d.npz"\nfeature_modules = [{json.dumps(str(module))}]\n'
    )
    return tmp_path / "device.toml", hashlib.sha256(module.read_bytes()).hexdigest()


def test_predict_runs_the_model_the_last_round_brought(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path, sha = _device(tmp_path)
    np.savez(tmp_path / "in.npz", x=np.array([-1.0, 1.0]))
    assert main(["predict", "--config", str(config_path), "--input", str(tmp_path / "in.npz")]) == 1
    assert "no global model" in capsys.readouterr().err
    executor = local_predictor(DeviceConfig.from_toml(config_path))
    executor.data = _Data()
    weight = np.array([[-3.0, 3.0]], np.float32)  # class 1 for positive inputs
    config = {"feature-module": "doubler@1.0.0", "feature-module-sha256": sha, "model-spec": SPEC, "epochs": 1}
    content = {
        "config": ConfigRecord(config),
        "arrays": ArrayRecord({"dense0_weight": weight, "dense0_bias": np.zeros(2, np.float32)}),
    }
    executor.run("evaluate", content)
    executor.close()
    assert main(["predict", "--config", str(config_path), "--input", str(tmp_path / "in.npz")]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["0", "1"]
    (tmp_path / "in.csv").write_text("x\n-2\n0.5\n3\n")
    out = tmp_path / "out.npz"
    assert (
        main(["predict", "--config", str(config_path), "--input", str(tmp_path / "in.csv"), "--output", str(out)]) == 0
    )
    with np.load(out) as f:
        assert f["predicted"].tolist() == [0, 1, 1] and f["outputs"].shape == (3, 2)
    assert main(["predict", "--config", str(config_path), "--input", str(tmp_path / "in.txt")]) == 1
