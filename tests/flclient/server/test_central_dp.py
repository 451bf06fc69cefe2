"""Central DP at the server: deltas clipped again, equal weights, Gaussian noise of std z*C/n, PLD epsilon."""

from __future__ import annotations

import numpy as np
import pytest

from flclient.server._aggregate import DeviceUpdate
from flclient.server._dp import CentralDP, central_dp_aggregate
from flclient.update import central_epsilon

BASE = {"w": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}


def _update(node: int, w: list[float], b: list[float], n: int = 10) -> DeviceUpdate:
    return DeviceUpdate(node, {"w": np.array(w, np.float32), "b": np.array(b, np.float32)}, n)


def test_deltas_are_clipped_and_averaged_with_equal_weights() -> None:
    dp = CentralDP(clip_norm=1.0, noise_multiplier=1e-9)  # noise negligible: the mean is visible
    big = _update(1, [30.0, 40.0, 0, 0], [0, 0], n=1000)  # norm 50 -> clipped to 1, weight not by examples
    small = _update(2, [0, 0, 0.3, 0.4], [0, 0], n=1)
    result, std = central_dp_aggregate(BASE, [big, small], dp, np.random.default_rng(0))
    assert result.used == (1, 2) and not result.rejected
    np.testing.assert_allclose(result.parameters["w"], [0.3, 0.4, 0.15, 0.2], atol=1e-6)
    assert std == pytest.approx(1e-9 / 2)


def test_noise_std_is_multiplier_times_clip_over_cohort() -> None:
    dp = CentralDP(clip_norm=2.0, noise_multiplier=1.5)
    zero = [_update(i, [0, 0, 0, 0], [0, 0]) for i in range(3)]
    big = {"w": np.zeros(20000, np.float32)}
    updates = [DeviceUpdate(i, {"w": np.zeros(20000, np.float32)}, 5) for i in range(3)]
    result, std = central_dp_aggregate(big, updates, dp, np.random.default_rng(1))
    assert std == pytest.approx(1.5 * 2.0 / 3)
    assert float(np.std(result.parameters["w"])) == pytest.approx(std, rel=0.03)
    same, _ = central_dp_aggregate(BASE, zero, dp, np.random.default_rng(1))
    other, _ = central_dp_aggregate(BASE, zero, dp, np.random.default_rng(2))
    assert not np.array_equal(same.parameters["w"], other.parameters["w"])  # the noise comes from the generator


def test_invalid_updates_are_rejected_and_nothing_is_released_without_updates() -> None:
    dp = CentralDP(clip_norm=1.0, noise_multiplier=1.0)
    bad = DeviceUpdate(7, {"w": np.full(4, np.nan, np.float32), "b": np.zeros(2, np.float32)}, 3)
    result, std = central_dp_aggregate(BASE, [bad], dp, np.random.default_rng(0))
    assert result.used == () and 7 in result.rejected and std == 0.0
    np.testing.assert_array_equal(result.parameters["w"], BASE["w"])


def test_settings_are_validated_and_epsilon_is_the_pld_accountants() -> None:
    for kwargs in ({"clip_norm": 0.0, "noise_multiplier": 1.0}, {"clip_norm": 1.0, "noise_multiplier": -1.0}):
        with pytest.raises(ValueError):
            CentralDP(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dp-delta"):
        CentralDP(clip_norm=1.0, noise_multiplier=1.0, delta=2.0)
    dp = CentralDP(clip_norm=1.0, noise_multiplier=1.1, delta=1e-5)
    eps = dp.epsilon(rounds=10, sampling_rate=0.1)
    assert eps == central_epsilon(noise_multiplier=1.1, sampling_rate=0.1, rounds=10, delta=1e-5)
    assert 0 < eps < dp.epsilon(rounds=20, sampling_rate=0.1) < dp.epsilon(rounds=20, sampling_rate=1.0)
