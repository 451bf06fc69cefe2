"""Aggregation and model history (numpy only; no flwr needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flclient.server import DeviceUpdate, ModelHistory, aggregate

BASE = {"w": np.zeros(3, dtype=np.float32)}


def _u(node: int, value: float, n: int = 10) -> DeviceUpdate:
    return DeviceUpdate(node, {"w": np.full(3, value, dtype=np.float32)}, n)


def test_fedavg_weights_by_examples() -> None:
    r = aggregate(BASE, [_u(1, 1.0, 10), _u(2, 4.0, 30)])
    np.testing.assert_allclose(r.parameters["w"], 3.25)
    assert r.parameters["w"].dtype == np.float32 and r.used == (1, 2)


def test_median_and_trimmed_mean_resist_an_outlier() -> None:
    ups = [_u(1, 1.0), _u(2, 1.1), _u(3, 0.9), _u(4, 1.0), _u(5, 1000.0)]
    np.testing.assert_allclose(aggregate(BASE, ups, method="median").parameters["w"], 1.0)
    np.testing.assert_allclose(
        aggregate(BASE, ups, method="trimmed-mean", trim_fraction=0.2).parameters["w"], 1.0333, rtol=1e-3
    )


def test_norm_bound_and_malformed_updates_are_rejected_with_reasons() -> None:
    bad_shape = DeviceUpdate(3, {"w": np.zeros(4)}, 10)
    nan = DeviceUpdate(4, {"w": np.array([np.nan, 0, 0])}, 10)
    r = aggregate(BASE, [_u(1, 1.0), _u(2, 100.0), bad_shape, nan], norm_bound=10.0)
    assert r.used == (1,)
    assert "exceeds the bound" in r.rejected[2] and "shapes" in r.rejected[3] and "non-finite" in r.rejected[4]
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate(BASE, [], method="mode")


def test_history_versions_and_rollback(tmp_path: Path) -> None:
    h = ModelHistory(tmp_path / "models", clock=lambda: 0.0)
    v1 = h.commit({"w": np.ones(2)}, {"round": 0})
    v2 = h.commit({"w": np.full(2, 5.0)}, {"round": 1})
    v3 = h.rollback(v1, "regression")
    assert (v1, v2, v3) == (1, 2, 3)
    np.testing.assert_array_equal(h.load()["w"], np.ones(2))
    again = ModelHistory(tmp_path / "models")  # the index is on disk
    assert again.head == 3 and again.versions()[-1]["metadata"]["rolled_back_to"] == 1
    assert not list((tmp_path / "models").glob(".*tmp"))
    with pytest.raises(KeyError, match="does not exist"):
        h.load(9)
