"""Backbone models on the device: the pinned backbone found by sha256, LoRA/head training on the spec's backend,
only adapter and head tensors in the reply, and the activation cache reused across rounds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flclient import TaskDeclined
from flclient._task import LocalData, TaskExecutor
from flclient.protocol import (
    ArtifactPins,
    BackboneHeadSpec,
    BackboneLoRASpec,
    BackbonePin,
    DenseLayerSpec,
    FeaturePin,
    RoundInfo,
    TrainingSettings,
    TrainReply,
    TrainTask,
    model_spec_from_json,
)
from tests.fixtures.backbone.tiny_backbone import IN, OUT, tiny_backbone_bytes

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (the [onnx] extra)")
pytest.importorskip("onnx", reason="lifting LoRA layers out of a graph needs the onnx package")

MODULE_SHA = "cd" * 32
CLASSES = 3


@dataclass
class _Column:
    name: str
    dtype: str = "f32"


@dataclass
class _Manifest:
    name: str = "identity"
    version: str = "1.0.0"

    @property
    def inputs(self) -> list[_Column]:
        return [_Column("raw")]

    @property
    def outputs(self) -> list[_Column]:
        return [_Column("raw")]


class _IdentityModule:
    """A feature module double: passes the ``raw`` column through (the tests are about what comes after it)."""

    manifest = _Manifest()
    sha256 = MODULE_SHA

    def extract(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = columns["raw"]
        return {"raw": raw, "status": np.zeros(len(raw), dtype=np.int32)}

    def close(self) -> None:
        pass


class _Data:
    def __init__(self, seed: int = 0, n: int = 240) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((n, IN)).astype(np.float32)
        teacher = np.random.default_rng(99).standard_normal((IN, CLASSES))
        self.y = np.argmax(self.x @ teacher, axis=1).astype(np.int64)
        self.loads = 0

    def load(self) -> LocalData:
        self.loads += 1
        return LocalData(columns={"raw": self.x}, labels=self.y)


@pytest.fixture
def backbone(tmp_path: Path) -> tuple[Path, BackbonePin]:
    path = tmp_path / "tiny_backbone.onnx"
    path.write_bytes(tiny_backbone_bytes())
    return path, BackbonePin(name="tiny", version="1", sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _executor(tmp_path: Path, backbone: Path, **kw: Any) -> TaskExecutor:
    executor = TaskExecutor(data=_Data(), backbones=[backbone], activation_cache_dir=tmp_path / "state", **kw)
    executor._modules[MODULE_SHA] = _IdentityModule()  # type: ignore[assignment] - the module double above
    return executor


LORA = BackboneLoRASpec(
    backbone_format="onnx",
    adapted=(DenseLayerSpec(in_features=16, out_features=OUT),),
    head=(DenseLayerSpec(in_features=OUT, out_features=CLASSES),),
    rank=2,
    alpha=4.0,
    seed=5,
)


def _task(model: Any, params: dict[str, np.ndarray], pin: BackbonePin, version: int = 0) -> TrainTask:
    return TrainTask(
        model=model,
        round=RoundInfo(server_round=version + 1, model_version=version),
        settings=TrainingSettings(epochs=3, batch_size=16, lr=0.2, eval_fraction=0.25),
        pins=ArtifactPins(feature_module=FeaturePin(name="identity", version="1.0.0", sha256=MODULE_SHA), backbone=pin),
        arrays=params,
    )


def _train(executor: TaskExecutor, task: TrainTask) -> TrainReply:
    outcome = executor.run("train", task.to_records())
    assert isinstance(outcome.reply, TrainReply)
    return outcome.reply


def test_a_lora_round_sends_only_b_and_the_head_and_round_two_reuses_the_activations(
    tmp_path: Path, backbone: tuple[Path, BackbonePin]
) -> None:
    path, pin = backbone
    params = LORA.initial_parameters(0)
    assert set(params) == {"dense0_lora_b", "dense1_weight", "dense1_bias"}
    executor = _executor(tmp_path, path)
    first = _train(executor, _task(LORA, params, pin))
    assert first.arrays is not None and set(first.arrays) == set(params)
    assert first.metrics.update_bytes == sum(v.nbytes for v in first.arrays.values())
    assert first.metrics.update_bytes < path.stat().st_size / 4  # the backbone never travels
    assert first.metrics.activations_reused == 0
    assert np.any(first.arrays["dense0_lora_b"] != 0)  # B trained (A frozen at the seed's draw)
    second = _train(executor, _task(LORA, dict(first.arrays), pin, version=1))
    assert second.metrics.activations_reused == 1
    # A fresh executor (a restarted device) finds them on disk too.
    third = _train(_executor(tmp_path, path), _task(LORA, dict(second.arrays or {}), pin, version=2))
    assert third.metrics.activations_reused == 1


def test_a_changed_backbone_misses_the_cache(tmp_path: Path, backbone: tuple[Path, BackbonePin]) -> None:
    path, pin = backbone
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_backbone_bytes(seed=8))
    other_pin = BackbonePin(name="tiny", version="2", sha256=hashlib.sha256(other.read_bytes()).hexdigest())
    executor = TaskExecutor(data=_Data(), backbones=[path, other], activation_cache_dir=tmp_path / "state")
    executor._modules[MODULE_SHA] = _IdentityModule()  # type: ignore[assignment]
    params = LORA.initial_parameters(0)
    assert _train(executor, _task(LORA, params, pin)).metrics.activations_reused == 0
    assert _train(executor, _task(LORA, params, other_pin)).metrics.activations_reused == 0
    assert _train(executor, _task(LORA, params, other_pin)).metrics.activations_reused == 1


def test_federated_lora_rounds_improve_accuracy(tmp_path: Path, backbone: tuple[Path, BackbonePin]) -> None:
    path, pin = backbone
    executor = _executor(tmp_path, path)
    params = LORA.initial_parameters(0)
    accs = []
    for version in range(4):
        reply = _train(executor, _task(LORA, params, pin, version))
        assert reply.arrays is not None and reply.metrics.eval_acc is not None
        accs.append(reply.metrics.eval_acc)
        params = dict(reply.arrays)
    assert accs[-1] > accs[0] + 0.1, accs


def test_fedavg_of_a_and_b_trains_and_sends_a(tmp_path: Path, backbone: tuple[Path, BackbonePin]) -> None:
    path, pin = backbone
    model = model_spec_from_json(json.dumps({**json.loads(LORA.to_json()), "lora-a": "trained"}))
    params = model.initial_parameters(0)
    reply = _train(_executor(tmp_path, path), _task(model, params, pin))
    assert reply.arrays is not None and "dense0_lora_a" in reply.arrays
    assert not np.array_equal(reply.arrays["dense0_lora_a"], params["dense0_lora_a"])


def test_a_head_on_a_backbone_trains_the_head_only(tmp_path: Path, backbone: tuple[Path, BackbonePin]) -> None:
    path, pin = backbone
    model = BackboneHeadSpec(backbone_format="onnx", head=(DenseLayerSpec(in_features=OUT, out_features=CLASSES),))
    params = model.initial_parameters(1)
    reply = _train(_executor(tmp_path, path), _task(model, params, pin))
    assert reply.arrays is not None and set(reply.arrays) == {"dense0_weight", "dense0_bias"}
    assert reply.metrics.activations_reused == 0


def test_a_backbone_the_device_lacks_is_declined_naming_the_pin(
    tmp_path: Path, backbone: tuple[Path, BackbonePin]
) -> None:
    path, _ = backbone
    missing = BackbonePin(name="tiny", version="9", sha256="0" * 64)
    with pytest.raises(TaskDeclined) as info:
        _train(_executor(tmp_path, path), _task(LORA, LORA.initial_parameters(0), missing))
    assert info.value.reason == "backbone-pin" and "tiny@9" in info.value.detail


def test_device_toml_lists_backbones_and_caps_the_activation_cache(tmp_path: Path) -> None:
    from flclient import DeviceConfig, DeviceConfigError

    base = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "s", "data": "d.npz"}}
    cfg = DeviceConfig.from_mapping(base, base_dir=tmp_path)
    assert cfg.backbones == () and cfg.activation_cache_mib == 256
    dev = {**base["device"], "backbones": ["models/b.onnx"], "activation_cache_mib": 8}
    cfg = DeviceConfig.from_mapping({**base, "device": dev}, base_dir=tmp_path)
    assert cfg.backbones == (tmp_path / "models" / "b.onnx",) and cfg.activation_cache_mib == 8
    for bad in ({"backbones": "b.onnx"}, {"activation_cache_mib": -1}, {"activation_cache_mib": 1.5}):
        with pytest.raises(DeviceConfigError, match="device.backbones|activation_cache_mib"):
            DeviceConfig.from_mapping({**base, "device": {**base["device"], **bad}}, base_dir=tmp_path)


def test_a_backbone_pin_names_its_tuf_target() -> None:
    from flclient.artifacts import ArtifactPin

    pin = ArtifactPin(kind="backbone", name="tiny", version="1", sha256="a" * 64)
    assert pin.target_path == "backbones/tiny/1"
    assert ArtifactPin.from_target_path("backbones/tiny/1", sha256="a" * 64) == pin


def test_predict_runs_the_last_global_lora_model_on_raw_records(
    tmp_path: Path, backbone: tuple[Path, BackbonePin]
) -> None:
    path, pin = backbone
    executor = _executor(tmp_path, path, model_path=tmp_path / "state" / "global-model.npz")
    data = _Data(seed=3, n=50)
    with pytest.raises(TaskDeclined) as info:
        executor.predict({"raw": data.x})
    assert info.value.reason == "no-model"
    params = LORA.initial_parameters(0)
    for version in range(4):
        reply = _train(executor, _task(LORA, params, pin, version))
        params = dict(reply.arrays or {})
    # The model predict runs is the one the last task brought (version 3's input), not the trained reply.
    restarted = _executor(tmp_path, path, model_path=tmp_path / "state" / "global-model.npz")
    out = restarted.predict({"raw": data.x})
    assert out.shape == (50, CLASSES)
    acc = float(np.mean(np.argmax(out, axis=1) == data.y))
    assert acc > 0.5, acc  # well above the 1/3 of chance after three rounds of training
