"""The transport under the Fleet client: one ``post`` method, an httpx implementation and an in-memory double."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

__all__ = ["HttpxTransport", "MockTransport", "Transport", "TransportError", "TransportResponse"]


@dataclass(frozen=True)
class TransportResponse:
    """An HTTP answer: status code, headers (lower-case names) and body."""

    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class TransportError(Exception):
    """The request did not get an HTTP answer (connection refused or reset, timeout, DNS...)."""


class Transport(Protocol):
    """Sends one POST and returns the answer, or raises :class:`TransportError` if there was none."""

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """POST ``content`` to ``path`` (relative to the SuperLink's base URL)."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


class HttpxTransport:
    """A :class:`Transport` over an ``httpx.Client`` (HTTP/1.1, keep-alive) to ``base_url``."""

    def __init__(self, base_url: str, *, verify: bool | str = True) -> None:
        import httpx  # imported here so that importing flclient stays cheap

        self._httpx = httpx
        self._client = httpx.Client(base_url=base_url, verify=verify, trust_env=False)
        self._closed = False

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """POST through httpx; every httpx transport failure becomes :class:`TransportError`."""
        if self._closed:
            raise RuntimeError("transport used after close()")
        try:
            r = self._client.post(path, content=content, headers=dict(headers), timeout=timeout_s)
        except self._httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return TransportResponse(status=r.status_code, content=r.content, headers=dict(r.headers))

    def close(self) -> None:
        """Close the connection pool."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> HttpxTransport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


Handler = Callable[[str, bytes, Mapping[str, str]], TransportResponse]


class MockTransport:
    """A :class:`Transport` that hands every request to ``handler(path, content, headers)``.

    The handler may raise :class:`TransportError` to simulate a lost connection. ``requests`` records
    ``(path, content)`` of every call, for assertions.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[tuple[str, bytes]] = []

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """Record the request and answer with the handler's response."""
        self.requests.append((path, content))
        return self._handler(path, content, headers)

    def close(self) -> None:
        """Nothing to release."""
