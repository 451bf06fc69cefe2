"""Shared fixtures for the runtimes tests: the bundled digits dataset and the committed model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtimes import DenseLayer, DenseStack, TrainingData, init_parameters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runtimes"


@pytest.fixture(scope="session")
def digits() -> TrainingData:
    """scikit-learn's bundled 8x8 digits (no download), pixels scaled to [0, 1]."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn (dev dependency) provides digits")
    bunch = datasets.load_digits()
    return TrainingData(x=(bunch.data / 16.0).astype(np.float32), y=bunch.target.astype(np.int64))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def digits_mlp() -> DenseStack:
    """The 64 -> 64 -> 10 ReLU head that the train-signature fixture also implements."""
    return DenseStack(
        layers=(
            DenseLayer(in_features=64, out_features=64, activation="relu"),
            DenseLayer(in_features=64, out_features=10),
        ),
        loss="cross_entropy",
    )


def digits_mlp_parameters(seed: int = 0) -> dict[str, np.ndarray]:
    return init_parameters(digits_mlp(), rng=np.random.Generator(np.random.PCG64(seed)))
