"""The global model's versions on disk: every accepted aggregate is a new version; any can be rolled back to.

A version may carry the server optimiser's state (momentum, moments: :meth:`ServerOptimizer.state_dict
<flclient.server._optim.ServerOptimizer.state_dict>`) in ``v<version>.opt.npz`` beside the model, so that a run
resumed or rolled back to that version continues with the state it had there.
"""

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

    def commit(
        self,
        parameters: Mapping[str, np.ndarray],
        metadata: Mapping[str, Any] | None = None,
        *,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Store ``parameters`` (and the optimiser state, if given) as the next version and return its number.

        The files are written before the index names the version, so a crash never leaves a version half there.
        """
        version = self.head + 1
        atomic_write_bytes(self.directory / f"v{version:06d}.npz", _npz(parameters))
        entry: dict[str, Any] = {"version": version, "time": self._clock(), "metadata": dict(metadata or {})}
        if optimizer_state:  # an empty state (FedAvg) is the same as none
            atomic_write_bytes(self._opt_path(version), _npz(optimizer_state))
            entry["optimizer_state"] = True
        self._index.append(entry)
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

    def load_optimizer_state(self, version: int | None = None) -> dict[str, np.ndarray]:
        """The optimiser state stored with ``version`` (default: the head); empty when it has none."""
        version = self.head if version is None else version
        entry = next((v for v in self._index if v["version"] == version), None)
        if entry is None:
            raise KeyError(f"model version {version} does not exist (head is {self.head})")
        if not entry.get("optimizer_state"):  # (a file without the index's word is a crashed commit's leftover)
            return {}
        with np.load(self._opt_path(version), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def rollback(self, version: int, reason: str = "") -> int:
        """Make ``version``'s parameters (and optimiser state) the head again, as a new version; returns its number."""
        params = self.load(version)
        state = self.load_optimizer_state(version)
        return self.commit(params, {"rolled_back_to": version, "reason": reason}, optimizer_state=state)

    def _opt_path(self, version: int) -> Path:
        return self.directory / f"v{version:06d}.opt.npz"


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    return buf.getvalue()
