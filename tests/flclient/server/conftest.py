"""Fixtures shared by the server plugin's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def flower_run() -> Iterator[None]:
    """Flower's Message needs the task identity a ServerApp process has; set it, then restore it."""
    from flwr.supercore.task_identity import TaskIdentity

    names = ("_run_id", "_node_id", "_task_id")
    saved = {n: getattr(TaskIdentity, n) for n in names}
    for n in names:
        setattr(TaskIdentity, n, 1)
    yield
    for n, v in saved.items():
        setattr(TaskIdentity, n, v)
