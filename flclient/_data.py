"""Where a task's local records come from: :class:`LocalData`, the :class:`DataSource` protocol, the ``.npz`` file.

A device's data source is read at each task, so that records added since the last round count. The sources that
ship with the SDK are :class:`NpzDataSource` (one ``.npz`` file) and :class:`~flclient.ExampleStore` (the
on-device SQLite store a daemon appends to); any object with a ``load() -> LocalData`` method is one too
(``Client(config, data=...)``). Only numpy is imported here, so that a sensor process can build records cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["DataSource", "LocalData", "NpzDataSource"]


@dataclass(frozen=True, kw_only=True, eq=False)
class LocalData:
    """A device's raw records: the feature module's input columns, optional dense extras ``x`` and labels.

    Every column (and ``x``) has one row per label. Example::

        LocalData(columns={"temperature_c": np.array([21.5, 22.0])}, labels=np.array([0, 1]))
    """

    columns: Mapping[str, np.ndarray]
    labels: np.ndarray
    x: np.ndarray | None = None
    device_class: str | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, col in self.columns.items():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows but there are {n} labels")
        if self.x is not None and len(self.x) != n:
            raise ValueError(f"x has {len(self.x)} rows but there are {n} labels")


class DataSource(Protocol):
    """Where a device's local training records come from (read at each task, so new records count).

    A source may raise :class:`~flclient.TaskDeclined` (reason ``no-data``) when it has nothing to offer.
    """

    def load(self) -> LocalData:
        """The current local records."""
        ...


@dataclass(frozen=True)
class NpzDataSource:
    """Records in an ``.npz`` file: module input columns by name, ``label``, optionally ``x`` and a 0-d string
    ``device_class``."""

    path: Path

    def load(self) -> LocalData:
        """Read the file (``allow_pickle=False``)."""
        with np.load(self.path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        labels = arrays.pop("label")
        x = arrays.pop("x", None)
        cls = arrays.pop("device_class", None)
        return LocalData(columns=arrays, labels=labels, x=x, device_class=None if cls is None else str(cls))
