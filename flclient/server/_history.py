"""The global model's versions on disk: every accepted aggregate is a new version; any can be rolled back to."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_bytes

__all__ = ["ModelHistory"]


class ModelHistory:
    """Versions ``v000001.npz``... and ``index.json`` in ``directory``; each file appears whole (atomic rename).

    Example::

        history = ModelHistory(Path("models"))
        v = history.commit(params, {"round": 1})
        history.rollback(v - 1)            # the previous version becomes the head again (as a new version)
    """

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self._clock = clock
        index = self.directory / "index.json"
        self._index: list[dict[str, Any]] = json.loads(index.read_text()) if index.exists() else []

    @property
    def head(self) -> int:
        """The current version (0 when nothing was committed)."""
        return int(self._index[-1]["version"]) if self._index else 0

    def versions(self) -> list[dict[str, Any]]:
        """Every version's record (version, time, metadata, rolled_back_from)."""
        return [dict(v) for v in self._index]

    def commit(self, parameters: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> int:
        """Store ``parameters`` as the next version and return its number."""
        version = self.head + 1
        buf = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in parameters.items()}
        np.savez(buf, **arrays)
        atomic_write_bytes(self.directory / f"v{version:06d}.npz", buf.getvalue())
        self._index.append({"version": version, "time": self._clock(), "metadata": dict(metadata or {})})
        atomic_write_bytes(self.directory / "index.json", json.dumps(self._index, indent=1).encode())
        return version

    def load(self, version: int | None = None) -> dict[str, np.ndarray]:
        """The parameters of ``version`` (default: the head)."""
        version = self.head if version is None else version
        path = self.directory / f"v{version:06d}.npz"
        if not path.exists():
            raise KeyError(f"model version {version} does not exist (head is {self.head})")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def rollback(self, version: int, reason: str = "") -> int:
        """Make ``version``'s parameters the head again, recorded as a new version; returns its number."""
        params = self.load(version)
        return self.commit(params, {"rolled_back_to": version, "reason": reason})
