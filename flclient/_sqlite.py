"""The one way device-local SQLite files are opened and closed.

Every store on the device (node state, privacy ledger, update residuals, SecAgg protocol state) is a file in
WAL mode with ``synchronous=FULL`` and autocommit (writers use ``BEGIN IMMEDIATE``), shared between the node's
worker threads one user at a time. They follow the project's lifetime pattern: ``close()`` is idempotent, the
store is a context manager, and use after close raises the store's own error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = ["SqliteFile"]

_S = TypeVar("_S", bound="SqliteFile")


class SqliteFile:
    """Base of the SQLite-backed stores. ``open_error`` and ``closed_error`` build the store's own errors."""

    def __init__(
        self,
        path: Path,
        *,
        schema: str,
        open_error: Callable[[str], Exception],
        closed_error: Callable[[], Exception],
        timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._closed_error = closed_error
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

    def close(self) -> None:
        """Close the database; idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise self._closed_error()
        return self._db
