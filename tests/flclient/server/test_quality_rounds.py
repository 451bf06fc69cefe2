"""run_federation over an in-process Grid of real TaskExecutors (doubler WASM module, numpy runtime, no SuperLink):
the federated-statistics round, separate evaluation rounds reported per device class, and server optimisers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

flwr_app = pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")

from flclient import TaskDeclined  # noqa: E402
from flclient._task import LocalData, TaskExecutor  # noqa: E402
from flclient.features import FeatureModule  # noqa: E402
from flclient.fleet._objects import ArrayRecord, ConfigRecord, MetricRecord  # noqa: E402
from flclient.protocol import ErrorReply  # noqa: E402
from flclient.server._stats import ScalerStore  # noqa: E402
from flclient.server.app import run_federation  # noqa: E402

from ..features.wat import doubler  # noqa: E402

SPEC = json.dumps({"layers": [[1, 2, "none"]], "loss": "cross_entropy"})


@dataclass(frozen=True)
class _Data:
    local: LocalData

    def load(self) -> LocalData:
        return self.local


class ExecutorGrid:
    """A Flower Grid double: each message runs on an flclient TaskExecutor; replies are Flower Messages."""

    def __init__(self, executors: dict[int, TaskExecutor]) -> None:
        self.executors = executors
        self.sent: list[tuple[str, str, dict[str, np.ndarray]]] = []  # (type, group, arrays) per message
        self.sent_to: list[tuple[str, int, str]] = []  # (type, node, group) per message
        self.replies: list[tuple[str, int, dict[str, Any]]] = []  # (type, node, metrics)
        self.uploaded: list[tuple[str, int, str, bytes]] = []  # (type, node, array name, the bytes sent)
        self._pending: dict[str, Any] = {}  # pushed message id -> its reply
        self._ids = itertools.count()

    def get_node_ids(self) -> list[int]:
        return list(self.executors)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        return [self._reply(msg) for msg in messages]

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        """Run every message now; its reply waits for :meth:`pull_messages`."""
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata._message_id = mid  # what the SuperLink assigns on push
            self._pending[mid] = self._reply(msg)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self._pending.pop(m) for m in list(message_ids) if m in self._pending]

    def _reply(self, msg: Any) -> Any:
        kind, nid = msg.metadata.message_type, msg.metadata.dst_node_id
        content: dict[str, Any] = {"config": ConfigRecord(dict(msg.content.config_records["config"]))}
        arrays = {}
        if "arrays" in msg.content.array_records:
            arrays = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
            content["arrays"] = ArrayRecord(arrays)
        self.sent.append((kind, msg.metadata.group_id, arrays))
        self.sent_to.append((kind, nid, msg.metadata.group_id))
        try:
            reply = self.executors[nid].run(kind, content).content
        except TaskDeclined as exc:
            error = ErrorReply(kind="declined", code=exc.reason, detail=exc.detail)
            return flwr_app.Message(flwr_app.Error(2, error.to_reason()), reply_to=msg)
        rd = flwr_app.RecordDict()
        for name, rec in reply.items():
            if isinstance(rec, ArrayRecord):
                self.uploaded += [(kind, nid, k, np.ascontiguousarray(v).tobytes()) for k, v in rec.arrays.items()]
                rd[name] = flwr_app.ArrayRecord(
                    {k: flwr_app.Array(np.ascontiguousarray(v)) for k, v in rec.arrays.items()}
                )
            elif isinstance(rec, MetricRecord):
                rd[name] = flwr_app.MetricRecord(dict(rec.values))
                self.replies.append((kind, nid, dict(rec.values)))
            else:
                rd[name] = flwr_app.ConfigRecord(dict(rec.values))
        return flwr_app.Message(rd, reply_to=msg)


def _grid(tmp_path: Path, *, personal: bool = False) -> tuple[ExecutorGrid, str, np.ndarray]:
    path = tmp_path / "doubler.wasm"
    path.write_bytes(doubler())
    with FeatureModule.load(path) as fm:
        sha = fm.sha256
    rng = np.random.default_rng(5)
    executors, union = {}, []
    for nid, (loc, n, cls) in enumerate([(-4.0, 60, "phone"), (1.0, 25, "phone"), (9.0, 90, "watch")], start=11):
        x = rng.normal(loc, 3.0, n)
        labels = (x > 2.0).astype(np.int64)  # one global threshold: a linear model can learn it
        union.append(2 * x)
        data = LocalData(columns={"x": x}, labels=labels, device_class=cls)
        head = tmp_path / f"head{nid}.npz" if personal else None
        executors[nid] = TaskExecutor(data=_Data(data), feature_modules=[path], personal_path=head)
    return ExecutorGrid(executors), sha, np.concatenate(union)


def _cfg(tmp_path: Path, sha: str, **extra: Any) -> dict[str, Any]:
    return {
        "num-server-rounds": 3,
        "min-nodes": 3,
        "node-wait-s": 1,
        "feature-module": "doubler@1.0.0",
        "feature-module-sha256": sha,
        "model-spec": SPEC,
        "lr": 0.5,
        "epochs": 2,
        "history-dir": str(tmp_path / "models"),
        "metrics-path": str(tmp_path / "metrics.jsonl"),
        **extra,
    }


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("flower_run")
def test_stats_round_scaler_and_evaluation_rounds(tmp_path: Path) -> None:
    grid, sha, union = _grid(tmp_path)
    cfg = _cfg(tmp_path, sha, **{"federated-scaler": True, "eval-every": 1, "server-optimizer": "fedavgm"})
    run_federation(grid, cfg)  # type: ignore[arg-type]
    records = _records(tmp_path)

    # The statistics round: a versioned scaler equal to the union's, carried by every later task.
    stats = next(r for r in records if r["event"] == "stats")
    assert stats["devices"] == 3 and stats["scaler_version"] == 1 and stats["count"] == len(union)
    scaler = ScalerStore(tmp_path / "models" / "scalers").load(1)
    np.testing.assert_allclose([scaler.mean[0], scaler.std[0]], [union.mean(), union.std()], rtol=1e-9)
    assert all("failures" not in r or not r["failures"] for r in records)

    # Evaluation rounds are separate and never change the model: what an evaluation round sends is what the
    # next round sends, and only training rounds commit versions.
    kinds = [(k, g) for k, g, _ in grid.sent[::3]]
    assert kinds == [
        ("query", "stats"),
        ("train", "1"),
        ("evaluate", "eval-1"),
        ("train", "2"),
        ("evaluate", "eval-2"),
        ("train", "3"),
        ("evaluate", "4"),
    ]
    sent = grid.sent[::3]
    for i in (2, 4):
        for k, v in sent[i][2].items():
            np.testing.assert_array_equal(v, sent[i + 1][2][k])
    evals = [r for r in records if r["event"] == "evaluate"]
    trains = [r for r in records if r["event"] == "round"]
    assert [e["version"] for e in evals] == [t["new_version"] for t in trains]
    assert [e["final"] for e in evals] == [False, False, True]
    assert all("new_version" not in e for e in evals)

    # Metrics per device class, weighted by evaluation examples.
    final = evals[-1]
    assert set(final["by_class"]) == {"phone", "watch"}
    phone = [m for k, nid, m in grid.replies[-3:] if nid in (11, 12)]
    expected = sum(m["eval-examples"] * m["eval-acc"] for m in phone) / sum(m["eval-examples"] for m in phone)
    assert final["by_class"]["phone"]["eval_acc"] == pytest.approx(expected)
    assert final["by_class"]["phone"]["devices"] == 2 and final["by_class"]["watch"]["devices"] == 1
    assert final["eval_acc"] > 0.7  # the federation learns the global threshold


@pytest.mark.usefixtures("flower_run")
def test_a_stale_scaler_is_refused_by_devices_and_reported(tmp_path: Path) -> None:
    grid, sha, _ = _grid(tmp_path)
    for ex in grid.executors.values():
        ex._scaler_version = 7  # these devices already trained with a newer scaler than the server will send
    run_federation(grid, _cfg(tmp_path, sha, **{"federated-scaler": True, "num-server-rounds": 1}))  # type: ignore[arg-type]
    rounds = [r for r in _records(tmp_path) if r["event"] == "round"]
    assert rounds[0]["failures"] == {"stale-scaler": 3} and rounds[0]["new_version"] == rounds[0]["version"]


SPEC2 = json.dumps({"layers": [[1, 8, "relu"], [8, 2, "none"]], "loss": "cross_entropy"})


@pytest.mark.parametrize("codec", ["", "fp32"], ids=["arrays", "fp32-update"])
@pytest.mark.usefixtures("flower_run")
def test_personal_heads_are_never_uploaded(tmp_path: Path, codec: str) -> None:
    grid, sha, _ = _grid(tmp_path, personal=True)
    extra = {"model-spec": SPEC2, "personal-layers": 1, "federated-scaler": True, "eval-every": 1}
    if codec:
        extra["update-codec"] = codec
    run_federation(grid, _cfg(tmp_path, sha, **extra))  # type: ignore[arg-type]
    records = _records(tmp_path)
    assert all(not r.get("failures") and not r.get("rejected") for r in records), records
    uploaded = b"".join(b for _, _, _, b in grid.uploaded)
    assert not any(name.startswith("dense1_") for _, _, name, _ in grid.uploaded)
    for nid, ex in grid.executors.items():
        head = np.load(tmp_path / f"head{nid}.npz")
        assert set(head.files) == {"dense1_weight", "dense1_bias"}
        for name in head.files:
            assert head[name].tobytes() not in uploaded  # not the private head, in any reply of any round
            assert head[name][:2].tobytes() not in uploaded  # nor a piece of it
        np.testing.assert_array_equal(ex._personal_head()["dense1_weight"], head["dense1_weight"])
    # The server's copy of the head never moves; the shared layer does.
    sent = [a for k, _, a in grid.sent if k == "train"]
    np.testing.assert_array_equal(sent[0]["dense1_weight"], sent[-1]["dense1_weight"])
    assert not np.array_equal(sent[0]["dense0_weight"], sent[-1]["dense0_weight"])
    final = next(r for r in records if r.get("final"))
    assert set(final["per_device"]) == {"11", "12", "13"}
    assert final["eval_acc"] > 0.7


def test_personal_layers_must_leave_a_shared_layer() -> None:
    from flclient._task import personal_parameter_names

    cfg: dict[str, Any] = {"model-spec": SPEC2}
    assert personal_parameter_names(cfg) == frozenset()
    assert personal_parameter_names({**cfg, "personal-layers": 1}) == {"dense1_weight", "dense1_bias"}
    with pytest.raises(TaskDeclined, match="personal-layers"):
        personal_parameter_names({**cfg, "personal-layers": 2})


def test_device_class_comes_from_device_toml_or_the_data(tmp_path: Path) -> None:
    from flclient import DeviceConfig, DeviceConfigError
    from flclient._task import NpzDataSource

    base = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "s", "data": "d.npz"}}
    assert DeviceConfig.from_mapping(base, base_dir=tmp_path).device_class is None
    dev = {**base["device"], "device_class": "rpi4b"}
    assert DeviceConfig.from_mapping({**base, "device": dev}, base_dir=tmp_path).device_class == "rpi4b"
    with pytest.raises(DeviceConfigError, match="device_class"):
        DeviceConfig.from_mapping({**base, "device": {**dev, "device_class": "a b"}}, base_dir=tmp_path)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1)), label=np.zeros(2), device_class=np.array("watch"))
    assert NpzDataSource(tmp_path / "d.npz").load().device_class == "watch"


@pytest.mark.usefixtures("flower_run")
def test_a_resumed_run_continues_with_the_saved_server_momentum(tmp_path: Path) -> None:
    import shutil

    from flclient.server._history import ModelHistory

    def run(directory: Path, **extra: Any) -> ModelHistory:
        directory.mkdir(exist_ok=True)
        grid, sha, _ = _grid(directory)
        cfg = _cfg(directory, sha, **{"server-optimizer": "fedavgm", "server-momentum": 0.9, **extra})
        run_federation(grid, cfg)  # type: ignore[arg-type]
        return ModelHistory(directory / "models")

    whole = run(tmp_path / "whole")  # three rounds in one go
    first = run(tmp_path / "split", **{"num-server-rounds": 2})
    assert set(first.load_optimizer_state()) == {"m/dense0_weight", "m/dense0_bias"}
    shutil.copytree(tmp_path / "split", tmp_path / "stateless")  # as a history from before states were saved:
    index = tmp_path / "stateless" / "models" / "index.json"
    index.write_text(json.dumps([{k: v for k, v in e.items() if k != "optimizer_state"} for e in first.versions()]))
    for path in (tmp_path / "stateless" / "models").glob("*.opt.npz"):
        path.unlink()
    resumed = run(tmp_path / "split", **{"num-server-rounds": 1, "start-version": first.head})
    assert resumed.versions()[-1]["optimizer_state"]
    for name, value in whole.load().items():
        np.testing.assert_allclose(resumed.load()[name], value, rtol=1e-6)
    # the same resume without the saved momentum lands elsewhere
    stateless = run(tmp_path / "stateless", **{"num-server-rounds": 1, "start-version": first.head})
    assert not np.allclose(stateless.load()["dense0_weight"], whole.load()["dense0_weight"], rtol=1e-3)


def test_the_server_plugin_does_not_import_the_device_task_executor() -> None:
    import subprocess
    import sys

    import flclient._personal
    import flclient._task

    assert flclient._task.personal_parameter_names is flclient._personal.personal_parameter_names  # re-exported
    code = "import sys, flclient.server.app; print('flclient._task' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class _HostileUploader:
    """A device whose train replies carry hand-made hostile update payloads (one per round) instead of its own."""

    def __init__(self, inner: TaskExecutor, payloads: list[bytes]) -> None:
        self.inner = inner
        self.payloads = iter(payloads)

    def run(self, message_type: str, content: Any) -> Any:
        outcome = self.inner.run(message_type, content)
        if message_type == "train" and "update" in outcome.content:
            payload = np.frombuffer(next(self.payloads), dtype=np.uint8)
            outcome.content["update"] = ArrayRecord({"payload": payload})
        return outcome


def _flup(manifest: bytes) -> bytes:
    import struct
    import zlib

    head = struct.pack("<4sBI", b"FLUP", 2, len(manifest)) + manifest
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.usefixtures("flower_run")
def test_one_devices_hostile_upload_is_dropped_and_the_round_aggregates_the_others(tmp_path: Path) -> None:
    grid, sha, _ = _grid(tmp_path)
    hostile = [
        _flup(b'{"layers": [["dense0_weight", [Infinity, 2]]]}'),  # was an OverflowError that aborted the round
        _flup(b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),  # was a RecursionError
        _flup(b'{"layers": [["dense0_weight", [1, 2]], ["dense0_weight", [1, 2]]]}'),  # duplicate layer names
    ]
    grid.executors[12] = _HostileUploader(grid.executors[12], hostile)  # type: ignore[assignment]
    run_federation(grid, _cfg(tmp_path, sha, **{"update-codec": "fp32", "min-replies": 2}))  # type: ignore[arg-type]
    rounds = [r for r in _records(tmp_path) if r["event"] == "round"]
    assert len(rounds) == 3
    for record in rounds:
        assert set(record["rejected"]) == {"12"} and "undecodable update" in record["rejected"]["12"], record
        assert record["new_version"] != record["version"]  # the other two devices' updates were aggregated
