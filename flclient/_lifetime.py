"""One lifetime for every flclient object that holds a native or OS resource.

A wasm store, an SQLite connection, an httpx connection pool, a thread pool: each is released by ``close()``,
which is idempotent; each object is a context manager; and any use after ``close()`` raises one error,
:class:`~flclient.ResourceClosedError`, instead of whatever the library underneath does with a freed handle.
A subclass frees its resources in :meth:`Resource._release` (called once, by the first ``close()``) and starts
every public method that needs them with :meth:`Resource._check_open`.
"""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, TypeVar

from ._errors import ResourceClosedError

__all__ = ["Resource"]

_R = TypeVar("_R", bound="Resource")


class Resource:
    """Base of the classes that own a native resource: idempotent ``close()``, ``with`` support, one closed error.

    ``_closed_error`` may name a subclass of :class:`~flclient.ResourceClosedError` when a family of its own
    already promised callers an error type for a closed object (the privacy ledger's).
    """

    _closed: bool = False  # a class default, so that a constructor that fails half-way can still close()
    _closed_error: ClassVar[type[ResourceClosedError]] = ResourceClosedError

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Release the resource; idempotent. Any later use raises :class:`~flclient.ResourceClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """Free what this object holds; called once, by the first :meth:`close`."""
        raise NotImplementedError

    def _describe(self) -> str:
        """What the closed-error message calls this object (the class name, unless a subclass says more)."""
        return type(self).__name__

    def _check_open(self) -> None:
        """Raise :class:`~flclient.ResourceClosedError` if :meth:`close` has been called."""
        if self._closed:
            raise self._closed_error(f"{self._describe()} is closed: it was used after close(); open a new one")

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
