"""Federated LoRA fine-tuning of a frozen ONNX backbone through a real SuperLink: accuracy improves, replies carry
only the adapters' B and the head, and round 2 onwards reuses each device's cached backbone activations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flclient.server import LocalSuperLink
from tests.fixtures.backbone.tiny_backbone import tiny_backbone_bytes

from .conftest import Devices, run_config, submit_and_wait

pytestmark = pytest.mark.e2e
HIDDEN, WIDTH, CLASSES = 32, 16, 10
LORA = json.dumps(
    {
        "kind": "backbone-lora",
        "backbone": "onnx",
        "adapted": [[HIDDEN, WIDTH, "none"]],
        "head": [[WIDTH, CLASSES, "none"]],
        "rank": 4,
        "alpha": 8,
        "seed": 3,
    }
)


def test_a_lora_federation_improves_and_sends_only_adapters(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    backbone = tmp_path / "tiny_backbone.onnx"
    backbone.write_bytes(tiny_backbone_bytes(n_in=67, hidden=HIDDEN, n_out=WIDTH))
    devices.configure(2, superlink.url)
    for i in range(2):
        text = devices.configs[i].read_text()
        devices.configs[i].write_text(
            text.replace("[device]\n", f"[device]\nbackbones = [{json.dumps(str(backbone))}]\n", 1)
        )
        devices.start(i)
    cfg = run_config(
        feature_module, tmp_path, **{"model-spec": LORA, "backbone-path": str(backbone), "num-server-rounds": 3}
    )
    records = submit_and_wait(superlink, tmp_path, cfg)
    rounds = [r for r in records if r["event"] == "round"]
    evals = [r for r in records if r["event"] == "evaluate"]
    for r in rounds + evals:  # the measured numbers, for the log
        print(
            r["event"],
            r["round"],
            {k: r.get(k) for k in ("eval_acc", "reply_update_bytes", "activations_reused", "device_s", "train_s")},
        )
    print("backbone bytes", backbone.stat().st_size)
    assert len(rounds) == 3 and all(r["replies"] == 2 for r in rounds), records
    # B (rank x width) and the head (width x classes + classes) per device: never the backbone, never A.
    per_device = 4 * (4 * WIDTH + WIDTH * CLASSES + CLASSES)
    assert [r["reply_update_bytes"] for r in rounds] == [2 * per_device] * 3
    assert rounds[0]["activations_reused"] == 0
    assert [r["activations_reused"] for r in rounds[1:]] == [2, 2]
    assert rounds[0]["eval_acc"] is not None and evals[-1]["eval_acc"] is not None
    assert evals[-1]["eval_acc"] > rounds[0]["eval_acc"] + 0.1, (rounds, evals)
