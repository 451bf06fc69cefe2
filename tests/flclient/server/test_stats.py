"""Federated statistics: device feature-stats queries + the server's pooled scaler, and scaler versions on tasks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flclient import TaskDeclined
from flclient._task import LocalData, TaskExecutor
from flclient.features import FeatureModule
from flclient.fleet._objects import ArrayRecord, ConfigRecord, MetricRecord
from flclient.protocol import TrainTask
from flclient.server._stats import FeatureStats, Scaler, ScalerStore, federated_scaler

from ..features.wat import doubler

SPEC = json.dumps({"layers": [[1, 2, "none"]], "loss": "cross_entropy"})


@dataclass(frozen=True)
class _Data:
    local: LocalData

    def load(self) -> LocalData:
        return self.local


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("mod") / "doubler.wasm"
    path.write_bytes(doubler())
    with FeatureModule.load(path) as fm:
        return path, fm.sha256


def _devices(module: tuple[Path, str]) -> tuple[list[TaskExecutor], np.ndarray]:
    """Three devices whose raw column has very different distributions (a NaN row each, flagged by the module)."""
    rng = np.random.default_rng(3)
    executors, union = [], []
    for loc, scale, n in ((-5.0, 1.0, 40), (2.0, 0.1, 7), (30.0, 8.0, 120)):
        x = np.append(rng.normal(loc, scale, n), np.nan)
        labels = (np.nan_to_num(x, nan=loc) > loc).astype(np.int64)
        union.append(2 * x[:-1])
        executors.append(
            TaskExecutor(data=_Data(LocalData(columns={"x": x}, labels=labels)), feature_modules=[module[0]])
        )
    return executors, np.concatenate(union)


def _pin(module: tuple[Path, str], **extra: Any) -> ConfigRecord:
    return ConfigRecord({"feature-module": "doubler@1.0.0", "feature-module-sha256": module[1], **extra})


def _stats(ex: TaskExecutor, module: tuple[Path, str]) -> FeatureStats:
    reply = ex.run("query", {"config": _pin(module, query="feature-stats")}).content
    rec = reply["stats"]
    metrics = reply["metrics"]
    assert isinstance(rec, ArrayRecord) and isinstance(metrics, MetricRecord)
    assert set(rec.arrays) == {"sum", "sumsq", "count"}  # aggregates only: no rows leave the device
    return FeatureStats(rec.arrays["sum"], rec.arrays["sumsq"], int(rec.arrays["count"][0]))


def test_federated_scaler_equals_the_scaler_of_the_union(module: tuple[Path, str], tmp_path: Path) -> None:
    executors, union = _devices(module)
    stats = [_stats(ex, module) for ex in executors]
    assert [s.count for s in stats] == [40, 7, 120]  # the NaN rows the module flags are left out
    store = ScalerStore(tmp_path / "scalers")
    scaler = federated_scaler(stats, version=store.next_version(), module_sha256=module[1])
    np.testing.assert_allclose(scaler.mean, [union.mean()], rtol=1e-12)
    np.testing.assert_allclose(scaler.std, [union.std()], rtol=1e-9)
    assert scaler.version == 1 and scaler.count == len(union)
    store.save(scaler)
    assert store.next_version() == 2 and store.load(1) == scaler

    # Devices normalise with it: the union of their training inputs is standardised.
    task = TrainTask.from_records(
        {"config": _pin(module, **{"model-spec": SPEC, "scaler": scaler.to_json(), "scaler-version": 1})}
    )
    xs = np.concatenate([ex._features(task.pins.feature_module, task.features)[0] for ex in executors])
    np.testing.assert_allclose([xs.mean(), xs.std()], [0.0, 1.0], atol=1e-5)
    for ex in executors:
        ex.close()


def _train(ex: TaskExecutor, module: tuple[Path, str], **extra: Any) -> dict[str, np.ndarray]:
    params = {"dense0_weight": np.zeros((1, 2), np.float32), "dense0_bias": np.zeros(2, np.float32)}
    content: dict[str, Any] = {
        "arrays": ArrayRecord(params),
        "config": _pin(module, **{"model-spec": SPEC, "lr": 0.5, **extra}),
    }
    out = ex.run("train", content).content["arrays"]
    assert isinstance(out, ArrayRecord)
    return dict(out.arrays)


def test_a_device_refuses_a_scaler_it_cannot_apply(module: tuple[Path, str]) -> None:
    executors, _ = _devices(module)
    ex = executors[2]
    v2 = Scaler(2, module[1], (1.0,), (2.0,), 10)
    _train(ex, module, **{"scaler": v2.to_json(), "scaler-version": 2})  # applies, and is now the newest seen
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scaler": v2.to_json(), "scaler-version": 3}, "names scaler version 3"),
        ({"scaler-version": 2}, "carries no scaler"),
        ({"scaler": Scaler(1, module[1], (1.0,), (2.0,), 10).to_json(), "scaler-version": 1}, "older"),
        ({"scaler": Scaler(4, "ab" * 32, (1.0,), (2.0,), 10).to_json(), "scaler-version": 4}, "another feature"),
        ({"scaler": Scaler(5, module[1], (1.0, 0.0), (2.0, 1.0), 10).to_json(), "scaler-version": 5}, "columns"),
    ]
    for extra, match in cases:
        with pytest.raises(TaskDeclined, match=match) as info:
            _train(ex, module, **extra)
        assert info.value.reason == "stale-scaler"
    for e in executors:
        e.close()


def test_proximal_mu_reaches_the_device_optimiser(module: tuple[Path, str]) -> None:
    executors, _ = _devices(module)
    ex = executors[0]
    free = _train(ex, module, **{"feature-scale": [10.0], "epochs": 3})
    held = _train(ex, module, **{"feature-scale": [10.0], "epochs": 3, "proximal-mu": 3.0})
    moved = [float(np.abs(p["dense0_weight"]).sum() + np.abs(p["dense0_bias"]).sum()) for p in (free, held)]
    assert moved[1] < 0.75 * moved[0]  # the proximal term anchors the weights at the global model (zeros)
    with pytest.raises(TaskDeclined, match="proximal-mu"):
        _train(ex, module, **{"proximal-mu": -1.0})
    for e in executors:
        e.close()


def test_federated_scaler_rejects_mismatched_or_empty_stats() -> None:
    with pytest.raises(ValueError, match="no device"):
        federated_scaler([FeatureStats(np.zeros(1), np.zeros(1), 0)], version=1, module_sha256="")
    with pytest.raises(ValueError, match="widths"):
        federated_scaler(
            [FeatureStats(np.zeros(1), np.zeros(1), 2), FeatureStats(np.zeros(2), np.zeros(2), 2)],
            version=1,
            module_sha256="",
        )
    s = federated_scaler([FeatureStats(np.array([6.0]), np.array([12.0]), 3)], version=1, module_sha256="")
    assert s.mean == (2.0,) and s.std == (1.0,)  # a constant column is not divided by zero


def test_weight_decay_reaches_the_device_optimiser(module: tuple[Path, str]) -> None:
    executors, _ = _devices(module)
    ex = executors[0]
    free = _train(ex, module, **{"feature-scale": [10.0], "epochs": 3})
    decayed = _train(ex, module, **{"feature-scale": [10.0], "epochs": 3, "weight-decay": 1.0})
    norms = [float(np.abs(p["dense0_weight"]).sum()) for p in (free, decayed)]
    assert norms[1] < 0.75 * norms[0]  # the L2 term pulls the weights towards zero
    with pytest.raises(TaskDeclined, match="weight-decay"):
        _train(ex, module, **{"weight-decay": -1.0})
    for e in executors:
        e.close()
