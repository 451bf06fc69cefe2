"""Server optimisers (FedAvg / FedAvgM / FedAdam) on a tiny federated least-squares problem."""

from __future__ import annotations

import numpy as np
import pytest

from flclient.server import DeviceUpdate, ServerOptimizer, aggregate


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
    return w - lr * (a.T @ (a @ w - b)) / len(b)


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
        ServerOptimizer.from_config({"server-optimizer": "fedavgm", "server-momentum": 1.0})
    with pytest.raises(ValueError, match="server-lr"):
        ServerOptimizer.from_config({"server-lr": 0})
    assert ServerOptimizer.from_config({"server-optimizer": "fedadam"}).lr == 0.01
