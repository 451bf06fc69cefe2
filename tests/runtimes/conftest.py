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


class Abandon(Exception):
    """Stands in for the gate's RoundAbandoned (runtimes does not import flclient)."""


class CountingCheckpoint:
    """A ``fit`` checkpoint that counts its calls and raises :class:`Abandon` from call ``fail_at`` on.

    Like the gate's RoundMonitor, every call after the first failure raises again, so a backend that swallowed
    the exception and went on would show more calls than ``fail_at``.
    """

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.raised: Abandon | None = None

    def __call__(self) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            self.raised = Abandon(f"abandoned at checkpoint {self.calls}")
            raise self.raised
