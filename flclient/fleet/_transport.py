"""The transport under the Fleet client: one ``post`` method, an httpx implementation and an in-memory double."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from .._lifetime import Resource

if TYPE_CHECKING:
    from ..artifacts import TlsConfig

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
    """Sends one POST and returns the answer, or raises :class:`TransportError` if there was none.

    A transport that verifies TLS raises :class:`~flclient.TlsVerificationFailed` (not a ``TransportError``)
    when the server's certificate fails verification: the Fleet client does not retry it, nothing is sent.
    """

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """POST ``content`` to ``path`` (relative to the SuperLink's base URL)."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


class HttpxTransport(Resource):
    """A :class:`Transport` over an ``httpx.Client`` (HTTP/1.1, keep-alive) to ``base_url``.

    ``tls`` pins the CA bundle and presents a client certificate (:class:`~flclient.artifacts.TlsConfig`);
    without it an https ``base_url`` is verified against the system store. A certificate that fails
    verification raises :class:`~flclient.TlsVerificationFailed`: the connection fails closed.
    """

    def __init__(self, base_url: str, *, tls: TlsConfig | None = None) -> None:
        import httpx  # imported here so that importing flclient stays cheap

        self._httpx = httpx
        self._host = urlsplit(base_url).netloc
        verify: ssl.SSLContext | bool = True
        if tls is not None:
            if urlsplit(base_url).scheme != "https":
                raise ValueError(f"TLS settings need an https base_url, got {base_url!r}")
            verify = tls.ssl_context()
        self._client = httpx.Client(base_url=base_url, verify=verify, trust_env=False)

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """POST through httpx; every httpx transport failure becomes :class:`TransportError`."""
        self._check_open()
        try:
            r = self._client.post(path, content=content, headers=dict(headers), timeout=timeout_s)
        except self._httpx.TransportError as exc:
            from ..artifacts._tls import tls_failure

            failed = tls_failure(exc, host=self._host)
            if failed is not None:
                raise failed from exc
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return TransportResponse(status=r.status_code, content=r.content, headers=dict(r.headers))

    def _release(self) -> None:
        self._client.close()  # the connection pool

    def _describe(self) -> str:
        return f"HttpxTransport to {self._host}"


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
