"""The network under TUF: a ``tuf.ngclient`` fetcher over httpx, with a per-download deadline.

``tuf.ngclient`` bounds every download by a length it trusts (the signed target length, or a configured maximum
for metadata), which stops an endless response by size; the deadline here stops one that trickles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient.fetcher import FetcherInterface

from .._lifetime import Resource
from ._tls import TlsConfig, tls_failure

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpxFetcher"]


class HttpxFetcher(Resource, FetcherInterface):
    """Downloads with one keep-alive ``httpx.Client``; the TLS settings come from a :class:`TlsConfig`.

    ``timeout_s`` bounds connecting and each read; ``deadline_s`` bounds a whole download (slow-retrieval
    attacks), measured with ``clock`` (monotonic seconds). Compression is refused (``Accept-Encoding:
    identity``) and the body is not decoded, so the length TUF enforces is the length on the wire. Chunks are
    yielded as the socket delivers them (tens of KiB), without a re-chunking copy. Use it as a context manager or
    call :meth:`close`.
    """

    def __init__(
        self,
        *,
        tls: TlsConfig | None = None,
        timeout_s: float = 30.0,
        deadline_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not timeout_s > 0 or not deadline_s > 0:
            raise ValueError(f"timeout_s and deadline_s must be positive, got {timeout_s} and {deadline_s}")
        import httpx  # imported here so that importing flclient stays cheap

        self._httpx = httpx
        self._clock = clock
        self._deadline_s = deadline_s
        verify = (tls or TlsConfig()).ssl_context()
        self._client = httpx.Client(
            verify=verify,
            timeout=timeout_s,
            trust_env=False,
            follow_redirects=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "flclient-artifacts"},
            transport=transport,
        )

    def fetch(self, url: str) -> Iterator[bytes]:
        """Stream ``url`` (see ``FetcherInterface.fetch``); after :meth:`close` raises
        :class:`~flclient.ResourceClosedError`, which tuf would otherwise report as a failed download."""
        self._check_open()
        return super().fetch(url)

    def _fetch(self, url: str) -> Iterator[bytes]:
        started = self._clock()
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except self._httpx.HTTPError as exc:
            raise self._translate(exc, url) from exc
        if response.status_code != 200:
            response.close()
            raise tuf_exceptions.DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return self._chunks(response, url, started)

    def _chunks(self, response: httpx.Response, url: str, started: float) -> Iterator[bytes]:
        # The bytes as they come off the socket: no re-chunking copy (``iter_bytes(n)`` joins pieces into
        # n-byte chunks), no decoding (compression was refused, so what is hashed is what was on the wire).
        try:
            for chunk in response.iter_raw():
                yield chunk
                if self._clock() - started > self._deadline_s:
                    raise tuf_exceptions.SlowRetrievalError(f"{url}: ran past the {self._deadline_s} s deadline")
        except self._httpx.HTTPError as exc:
            raise self._translate(exc, url) from exc
        finally:
            response.close()

    def _translate(self, exc: Exception, url: str) -> Exception:
        tls = tls_failure(exc, host=urlsplit(url).netloc)
        if tls is not None:
            return tls
        if isinstance(exc, self._httpx.TimeoutException):
            return tuf_exceptions.SlowRetrievalError(f"{url}: {type(exc).__name__}")
        return tuf_exceptions.DownloadError(f"{url}: {type(exc).__name__}: {exc}")

    def _release(self) -> None:
        self._client.close()  # the connection pool
