"""The Flower-side SecAgg round over an in-process Grid double that runs flclient devices (no SuperLink)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

flwr_app = pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from flclient.protocol import DenseLayerSpec, DenseModelSpec, TrainingSettings, TrainTask  # noqa: E402
from flclient.secagg import InMemorySecAggStore, SecAggDevice, SecAggTaskHandler, flatten_update  # noqa: E402
from flclient.server._secagg import SecAggRoundConfig, secagg_train_round  # noqa: E402

SETTINGS = TrainingSettings(lr=0.1)


class DeviceGrid:
    """Delivers each message to an flclient device's SecAgg handler and returns Flower replies."""

    def __init__(self, n: int, offline_at_collect: set[int]) -> None:
        self.handlers = {
            nid: SecAggTaskHandler(
                device=SecAggDevice(
                    node_id=nid,
                    identity=Ed25519PrivateKey.generate(),
                    store=InMemorySecAggStore(),
                    rng=np.random.default_rng(nid),
                ),
                clip_norm=1.0,
            )
            for nid in range(10, 10 + n)
        }
        self.offline = offline_at_collect
        self.received: list[Any] = []

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        out = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            request = msg.content.config_records["secagg"]["request"]
            update = None
            if "arrays" in msg.content.array_records:
                if nid in self.offline:
                    continue
                old = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
                names = sorted(old)

                def update(old: dict[str, Any] = old, names: list[str] = names, nid: int = nid) -> Any:
                    new = {k: v + 0.01 * (nid % 3) for k, v in old.items()}  # what local training returned
                    return flatten_update(new, names)[0] - flatten_update(old, names)[0]

            reply = self.handlers[nid].answer(request, update=update)
            rd = flwr_app.RecordDict({"secagg": flwr_app.ConfigRecord({"reply": reply})})
            self.received.append(rd)
            out.append(flwr_app.Message(rd, reply_to=msg))
        return out


@pytest.mark.usefixtures("flower_run")
def test_secagg_round_through_flower_records() -> None:
    grid = DeviceGrid(10, offline_at_collect={12, 15})
    params = {"w": np.zeros((3, 4), np.float32), "b": np.ones(4, np.float32)}
    outcome = secagg_train_round(
        grid,  # type: ignore[arg-type]
        list(grid.handlers),
        params,
        TrainTask(model=DenseModelSpec(layers=(DenseLayerSpec(in_features=3, out_features=4),)), settings=SETTINGS),
        SecAggRoundConfig(bits=24, clip=1.0, dropout=0.3),
        round_tag="run1/round1",
    )
    survivors = [nid for nid in grid.handlers if nid not in {12, 15}]
    assert outcome.result.survivors == tuple(survivors)
    expected = np.mean([0.01 * (nid % 3) for nid in survivors])
    np.testing.assert_allclose(outcome.parameters["w"], expected, atol=1e-4)
    np.testing.assert_allclose(outcome.parameters["b"], 1 + expected, atol=1e-4)


class FleetGrid(DeviceGrid):
    """DeviceGrid behind Flower's push/pull API, with node ids, answering evaluate tasks with metrics too: what
    run_federation needs for a SecAgg run."""

    def __init__(self, n: int, offline_at_collect: set[int]) -> None:
        super().__init__(n, offline_at_collect)
        self.pushed: dict[str, Any] = {}

    def get_node_ids(self) -> list[int]:
        return sorted(self.handlers)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata._message_id = f"m{len(self.pushed)}"
            self.pushed[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        msgs = [self.pushed.pop(i) for i in sorted(set(message_ids)) if i in self.pushed]
        train = [m for m in msgs if m.metadata.message_type == "train"]
        out = self.send_and_receive(train)
        for msg in msgs:
            if msg.metadata.message_type == "evaluate":
                metrics = flwr_app.MetricRecord({"num-examples": 3, "eval-acc": 0.5})
                out.append(flwr_app.Message(flwr_app.RecordDict({"metrics": metrics}), reply_to=msg))
        return out


@pytest.mark.usefixtures("flower_run")
def test_run_federation_runs_secagg_training_rounds(tmp_path: Any) -> None:
    import json

    from flclient.server import ModelHistory
    from flclient.server.app import run_federation

    grid = FleetGrid(10, offline_at_collect={12})
    cfg = {
        "num-server-rounds": 1,
        "secagg": "true",
        "round-timeout-s": 2,  # node 12 never answers the collect stage: wait 2 s for it, not 120
        "min-nodes": 10,
        "model-spec": json.dumps({"layers": [[3, 4, "none"]], "loss": "mse"}),
        "history-dir": str(tmp_path / "models"),
        "metrics-path": str(tmp_path / "m.jsonl"),
    }
    run_federation(grid, cfg)  # type: ignore[arg-type]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    train = next(r for r in records if r["event"] == "round")
    assert train["secagg"] == {"survivors": 9, "dropped": 1, "rejected": {}}
    assert (train["version"], train["new_version"]) == (1, 2)
    history = ModelHistory(tmp_path / "models")
    expected = np.mean([0.01 * (nid % 3) for nid in grid.handlers if nid != 12])
    np.testing.assert_allclose(history.load(2)["dense0_bias"] - history.load(1)["dense0_bias"], expected, atol=1e-4)
    final = records[-2]
    assert final["event"] == "evaluate" and final["final"] and final["eval_acc"] == 0.5 and final["replies"] == 10
