"""Server optimisers (FedAvg / FedAvgM / FedAdam) on a tiny federated least-squares problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flclient.server import DeviceUpdate, RunConfig, ServerOptimizer, aggregate


def _problem(seed: int = 0) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Five devices with non-IID least-squares data (each its own true weights) and the global optimum."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 3.0, 0.3])  # ill-conditioned: plain FedAvg is slow along the small direction
    devices = []
    for i in range(5):
        a = rng.standard_normal((20 + 5 * i, 3)) * scales
        w_true = rng.standard_normal(3) + i
        devices.append((a, a @ w_true + 0.01 * rng.standard_normal(len(a))))
    a_all = np.concatenate([a for a, _ in devices])
    b_all = np.concatenate([b for _, b in devices])
    return devices, np.linalg.lstsq(a_all, b_all, rcond=None)[0]


def _local_step(w: np.ndarray, a: np.ndarray, b: np.ndarray, lr: float) -> np.ndarray:
    out: np.ndarray = w - lr * (a.T @ (a @ w - b)) / len(b)
    return out


def _federate(opt: ServerOptimizer, rounds: int, local_lr: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    devices, w_star = _problem()
    params = {"w": np.zeros(3, dtype=np.float32)}
    for _ in range(rounds):
        ups = [
            DeviceUpdate(i, {"w": _local_step(params["w"].astype(np.float64), a, b, local_lr)}, len(b))
            for i, (a, b) in enumerate(devices)
        ]
        result = aggregate(params, ups)
        params = opt.step(params, result.parameters)
        assert params["w"].dtype == np.float32
    return params["w"].astype(np.float64), w_star


def test_fedavg_with_unit_server_lr_is_plain_fedavg() -> None:
    base = {"w": np.array([1.0, 2.0], np.float32)}
    agg = {"w": np.array([3.0, 0.0], np.float32)}
    np.testing.assert_array_equal(ServerOptimizer().step(base, agg)["w"], agg["w"])
    np.testing.assert_allclose(ServerOptimizer(lr=0.5).step(base, agg)["w"], [2.0, 1.0])


def test_fedavgm_accumulates_momentum_and_reset_forgets_it() -> None:
    opt = ServerOptimizer(name="fedavgm", lr=1.0, momentum=0.5)
    base = {"w": np.zeros(1, np.float32)}
    p1 = opt.step(base, {"w": np.ones(1, np.float32)})  # v = 1
    p2 = opt.step(p1, {"w": p1["w"] + 1.0})  # v = 0.5 + 1
    np.testing.assert_allclose(p2["w"], [2.5])
    opt.reset()
    np.testing.assert_allclose(opt.step(p2, {"w": p2["w"] + 1.0})["w"], [3.5])


@pytest.mark.parametrize(
    "opt",
    [
        ServerOptimizer(name="fedavgm", lr=1.0, momentum=0.9),
        ServerOptimizer(name="fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3),
    ],
    ids=["fedavgm", "fedadam"],
)
def test_fedavgm_and_fedadam_converge_on_federated_least_squares(opt: ServerOptimizer) -> None:
    w, w_star = _federate(opt, rounds=400)
    np.testing.assert_allclose(w, w_star, atol=2e-2)
    plain, _ = _federate(ServerOptimizer(), rounds=400)
    assert np.linalg.norm(w - w_star) < np.linalg.norm(plain - w_star)  # both beat plain FedAvg here


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="server-optimizer"):
        ServerOptimizer(name="sgd")
    with pytest.raises(ValueError, match="server-momentum"):
        ServerOptimizer.from_config(RunConfig.from_run_config({"server-optimizer": "fedavgm", "server-momentum": 1.0}))
    with pytest.raises(ValueError, match="server-lr"):
        ServerOptimizer.from_config(RunConfig.from_run_config({"server-lr": 0}))
    assert ServerOptimizer.from_config(RunConfig.from_run_config({"server-optimizer": "fedadam"})).lr == 0.01


@pytest.mark.parametrize("name", ["fedavgm", "fedadam"])
def test_a_restored_state_continues_exactly_where_the_run_left_off(name: str) -> None:
    rng = np.random.default_rng(3)
    targets = [{"w": rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(6)]
    whole = ServerOptimizer(name=name, lr=0.5)
    first = ServerOptimizer(name=name, lr=0.5)
    p_whole = p_split = {"w": np.zeros((2, 3), np.float32)}
    for t in targets[:3]:
        p_whole = whole.step(p_whole, t)
        p_split = first.step(p_split, t)
    state = first.state_dict()
    assert {k.split("/")[0] for k in state} == ({"m", "v"} if name == "fedadam" else {"m"})
    resumed = ServerOptimizer(name=name, lr=0.5)
    resumed.load_state_dict(state)
    fresh = ServerOptimizer(name=name, lr=0.5)
    p_fresh = p_split
    for t in targets[3:]:
        p_whole = whole.step(p_whole, t)
        p_split = resumed.step(p_split, t)
        p_fresh = fresh.step(p_fresh, t)
    np.testing.assert_array_equal(p_split["w"], p_whole["w"])
    assert not np.array_equal(p_fresh["w"], p_whole["w"])  # without the state the run goes elsewhere


def test_a_state_that_does_not_fit_is_refused() -> None:
    opt = ServerOptimizer(name="fedavgm")
    with pytest.raises(ValueError, match="'m/<name>'"):
        opt.load_state_dict({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="no second moments"):
        opt.load_state_dict({"v/w": np.zeros(2)})
    with pytest.raises(ValueError, match="non-finite"):
        opt.load_state_dict({"m/w": np.array([np.nan])})
    with pytest.raises(ValueError, match="fedavg keeps no state"):
        ServerOptimizer().load_state_dict({"m/w": np.zeros(2)})
    opt.load_state_dict({"m/w": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})
    opt.load_state_dict({})  # an empty state resets
    np.testing.assert_array_equal(opt.step({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})["w"], 1.0)


def test_mean_aggregation_weights_every_device_alike() -> None:
    base = {"w": np.zeros(2, np.float32)}
    ups = [DeviceUpdate(1, {"w": np.array([1.0, 0.0], np.float32)}, 90), DeviceUpdate(2, {"w": np.zeros(2)}, 10)]
    np.testing.assert_allclose(aggregate(base, ups, method="mean").parameters["w"], [0.5, 0.0])
    np.testing.assert_allclose(aggregate(base, ups, method="fedavg").parameters["w"], [0.9, 0.0])


def test_model_versions_carry_the_optimizer_state_and_rollback_restores_it(tmp_path: Path) -> None:
    from flclient.server._history import ModelHistory

    h = ModelHistory(tmp_path / "models", clock=lambda: 0.0)
    v1 = h.commit({"w": np.zeros(2)}, {"round": 0})  # no optimiser state (the initial model)
    v2 = h.commit({"w": np.ones(2)}, {"round": 1}, optimizer_state={"m/w": np.array([0.5, 0.25])})
    v3 = h.commit({"w": np.full(2, 2.0)}, {"round": 2}, optimizer_state={"m/w": np.array([9.0, 9.0])})
    assert h.load_optimizer_state(v1) == {}
    np.testing.assert_array_equal(ModelHistory(tmp_path / "models").load_optimizer_state(v2)["m/w"], [0.5, 0.25])
    v4 = h.rollback(v2, "test")
    np.testing.assert_array_equal(h.load_optimizer_state()["m/w"], [0.5, 0.25])  # the head is v4, v2's state
    assert h.head == v4 and h.versions()[-1]["optimizer_state"] and v3 == v4 - 1
    v5 = h.rollback(v1)
    assert "optimizer_state" not in h.versions()[v5 - 1] and h.load_optimizer_state() == {}  # v1 had none
    with pytest.raises(KeyError, match="does not exist"):
        h.load_optimizer_state(99)
