"""The one way device-local SQLite files are opened and closed.

Every store on the device (node state, privacy ledger, update residuals, SecAgg protocol state) is a file in
WAL mode with ``synchronous=FULL`` and autocommit (writers use ``BEGIN IMMEDIATE``), shared between the node's
worker threads one user at a time. They follow the project's lifetime pattern (:class:`~flclient._lifetime.Resource`):
``close()`` is idempotent, the store is a context manager, and use after close raises
:class:`~flclient.ResourceClosedError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ._lifetime import Resource

__all__ = ["SqliteFile"]


class SqliteFile(Resource):
    """Base of the SQLite-backed stores. ``open_error`` builds the store's own error for a file it cannot open."""

    def __init__(
        self,
        path: Path,
        *,
        schema: str,
        open_error: Callable[[str], Exception],
        timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=timeout_s, check_same_thread=False)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(schema)
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise open_error(f"{exc}") from exc

    def _release(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _describe(self) -> str:
        return f"{type(self).__name__} {self.path}"

    def _conn(self) -> sqlite3.Connection:
        self._check_open()
        assert self._db is not None  # set by __init__, cleared only by close()
        return self._db
