"""Run-config keys of a backbone model: the pin, from a sha256 or the server's file, and the LoRA aggregation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flclient import RunConfigError
from flclient.protocol import BackboneLoRASpec, RunConfig, plan_from_config

LORA = json.dumps(
    {"kind": "backbone-lora", "backbone": "onnx", "adapted": [[8, 4]], "head": [[4, 2]], "rank": 2, "alpha": 4}
)
SHA = "ab" * 32


def test_the_pin_comes_from_backbone_and_its_sha256() -> None:
    plan = plan_from_config(RunConfig(model_spec=LORA, backbone="tiny@1.0", backbone_sha256=SHA))
    assert plan.pins.backbone is not None
    assert (str(plan.pins.backbone), plan.pins.backbone.sha256) == ("tiny@1.0", SHA)
    assert isinstance(plan.model, BackboneLoRASpec) and plan.model.lora_a == "frozen"
    assert "dense0_lora_a" not in plan.model.parameter_names()


def test_fedavg_ab_trains_and_sends_a() -> None:
    plan = plan_from_config(
        RunConfig(model_spec=LORA, backbone="tiny@1.0", backbone_sha256=SHA, lora_aggregation="fedavg-ab")
    )
    assert isinstance(plan.model, BackboneLoRASpec) and plan.model.lora_a == "trained"
    assert "dense0_lora_a" in plan.model.parameter_names()


def test_the_pin_of_a_server_file_is_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "tiny_backbone.onnx"
    path.write_bytes(b"not really onnx")
    plan = plan_from_config(RunConfig(model_spec=LORA, backbone_path=path))
    assert plan.pins.backbone is not None
    assert plan.pins.backbone.sha256 == hashlib.sha256(b"not really onnx").hexdigest()
    assert str(plan.pins.backbone) == "tiny_backbone@local"
    with pytest.raises(RunConfigError) as info:
        RunConfig(model_spec=LORA, backbone_path=path, backbone_sha256=SHA)
    assert info.value.key == "backbone-sha256"
    with pytest.raises(RunConfigError) as info:
        RunConfig(model_spec=LORA, backbone_path=tmp_path / "missing.onnx")
    assert info.value.key == "backbone-path"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"model-spec": LORA}, "backbone"),
        ({"model-spec": LORA, "backbone": "tiny@1.0"}, "backbone"),
        ({"model-spec": LORA, "backbone-sha256": SHA}, "backbone-sha256"),
        ({"model-spec": LORA, "backbone": "tiny", "backbone-sha256": SHA}, "backbone"),
        ({"model-spec": LORA, "backbone": "tiny@1.0", "backbone-sha256": "x"}, "backbone-sha256"),
        (
            {"model-spec": LORA, "backbone": "tiny@1.0", "backbone-sha256": SHA, "lora-aggregation": "avg"},
            "lora-aggregation",
        ),
    ],
)
def test_a_backbone_run_config_is_refused_naming_the_key(values: dict[str, str], key: str) -> None:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_run_config(values)
    assert info.value.key == key, str(info.value)
