"""The device side: fetch pinned artifacts through TUF (``tuf.ngclient.Updater``) into the verified cache.

Every library error is translated where it enters, into the :class:`~flclient.ArtifactError` family; whatever
is refused, the artifacts verified earlier stay in the cache and :meth:`TrustedArtifacts.cached` still returns
them. Recovery from a freeze (metadata that expired while the device was offline, or that nobody re-signed) is
on the repository side: ``featurec repo renew`` re-signs it, and the device's next refresh succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from .._errors import (
    ArtifactCacheError,
    ArtifactError,
    ArtifactNotFound,
    ArtifactPinMismatch,
    ArtifactTampered,
    ArtifactTooLarge,
    ArtifactUnavailable,
    CheckpointError,
    DeviceConfigError,
    FLClientError,
    MetadataError,
    MetadataExpired,
    MetadataMismatch,
    MetadataRollback,
    MetadataUntrusted,
    TlsError,
)
from .._lifetime import Resource
from .._tables import check_keys, config_path
from ._cache import ArtifactCache, CachedArtifact
from ._fetcher import HttpxFetcher
from ._pins import ArtifactPin
from ._signed import Checkpoint, decode_checkpoint
from ._tls import TlsConfig

__all__ = ["ArtifactsConfig", "TrustedArtifacts"]

_MIB = 1 << 20
_BATCH = _MIB  # bytes per hand-off to the hashing/writing thread
_BATCH_CHUNKS = 512  # and at most this many chunks (one writev: IOV_MAX is 1024 on Linux)
# What can come out of tuf.ngclient (fetch errors are wrapped in DownloadError by tuf itself) and our fetcher.
_LIBRARY_ERRORS = (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError, OSError, FLClientError)


@dataclass(frozen=True, kw_only=True)
class ArtifactsConfig:
    """Where the device's trusted artifacts come from and where they are kept.

    ``repository_url`` serves ``metadata/`` and ``targets/`` (any static web server); ``trusted_root`` is the
    ``root.json`` shipped with the device configuration, its trust anchor; ``cache_dir`` holds the TUF
    metadata and the verified artifacts, at most ``cache_max_bytes`` of them. ``timeout_s`` bounds connecting
    and each read, ``deadline_s`` a whole download. In ``device.toml``::

        [artifacts]
        repository_url = "https://artifacts.example:8443/fleet"
        trusted_root = "trust/root.json"
        cache_max_mib = 256
        [artifacts.tls]
        ca_bundle = "trust/fleet-ca.pem"
    """

    repository_url: str
    trusted_root: Path
    cache_dir: Path
    cache_max_bytes: int = 256 * _MIB
    tls: TlsConfig | None = None
    timeout_s: float = 30.0
    deadline_s: float = 600.0

    def __post_init__(self) -> None:
        url = urlsplit(self.repository_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"repository_url must be an http(s) URL, got {self.repository_url!r}")
        if url.scheme == "http" and self.tls is not None and self.tls.pinned:
            raise ValueError("a pinned CA bundle needs an https repository_url")
        size = self.cache_max_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"cache_max_bytes must be a positive int, got {self.cache_max_bytes!r}")
        if not self.timeout_s > 0 or not self.deadline_s > 0:
            raise ValueError(f"timeout_s and deadline_s must be positive, got {self.timeout_s} and {self.deadline_s}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base_dir: Path, state_dir: Path) -> ArtifactsConfig:
        """Build from the ``[artifacts]`` table; the cache defaults to ``state_dir/artifacts``. Every mistake is
        one :class:`~flclient.DeviceConfigError` sentence naming the key."""
        known = {"repository_url", "trusted_root", "cache_dir", "cache_max_mib", "timeout_s", "deadline_s", "tls"}
        check_keys(raw, "artifacts", known)

        def path(key: str) -> Path:
            return config_path(raw.get(key), f"artifacts.{key}", base_dir)

        url = raw.get("repository_url")
        if not isinstance(url, str):
            raise DeviceConfigError('artifacts.repository_url is required (e.g. "https://host:8443/fleet")')
        numbers: dict[str, float] = {}
        for key in ("cache_max_mib", "timeout_s", "deadline_s"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise DeviceConfigError(f"artifacts.{key} must be a positive number, got {value!r}")
                numbers[key] = float(value)
        tls_raw = raw.get("tls")
        if tls_raw is not None and not isinstance(tls_raw, Mapping):
            raise DeviceConfigError("[artifacts.tls] must be a table")
        try:
            tls = TlsConfig.from_mapping(tls_raw, base_dir=base_dir, where="artifacts.tls") if tls_raw else None
            return cls(
                repository_url=url,
                trusted_root=path("trusted_root"),
                cache_dir=path("cache_dir") if "cache_dir" in raw else state_dir / "artifacts",
                cache_max_bytes=int(numbers.get("cache_max_mib", 256) * _MIB),
                tls=tls,
                timeout_s=numbers.get("timeout_s", 30.0),
                deadline_s=numbers.get("deadline_s", 600.0),
            )
        except (ValueError, TlsError) as exc:
            raise DeviceConfigError(f"[artifacts]: {exc}") from exc


def _now() -> float:
    return time.time()


class TrustedArtifacts(Resource):
    """Feature modules and model checkpoints fetched through TUF and kept in a verified cache.

    ``clock`` (epoch seconds) is the device's notion of now: TUF checks metadata expiry against it and the
    cache stamps uses with it. ``fetcher`` replaces the httpx one (tests, other transports). Close it, or use
    it as a context manager.

    Example::

        with TrustedArtifacts(config) as artifacts:
            artifacts.refresh()                      # once per round: newest signed metadata
            module = artifacts.fetch(ArtifactPin.parse("module", "device_context@1.0.0", sha256=pin_sha))
            FeatureModule.load(module.path, expected_sha256=module.sha256)
    """

    def __init__(
        self,
        config: ArtifactsConfig,
        *,
        fetcher: FetcherInterface | None = None,
        clock: Callable[[], float] = _now,
        durable: bool = False,
    ) -> None:
        self.config = config
        self._clock = clock
        try:
            self._root = config.trusted_root.read_bytes()
        except OSError as exc:
            reason = exc.strerror or exc
            raise DeviceConfigError(f"cannot read the trusted root {config.trusted_root}: {reason}") from exc
        self._metadata_dir = config.cache_dir / "metadata"
        try:
            self._metadata_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactCacheError(str(self._metadata_dir), f"cannot create: {exc.strerror or exc}") from exc
        self.cache = ArtifactCache(config.cache_dir, max_bytes=config.cache_max_bytes, clock=clock, durable=durable)
        self._own_fetcher = fetcher is None
        self._fetcher: FetcherInterface = fetcher or HttpxFetcher(
            tls=config.tls, timeout_s=config.timeout_s, deadline_s=config.deadline_s
        )
        self._updater: Updater | None = None
        self._pool: ThreadPoolExecutor | None = None  # runs a download while its metadata is verified
        base = config.repository_url.rstrip("/")
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"

    # -- metadata ----------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Download and verify the newest top-level metadata (root, timestamp, snapshot, targets).

        Raises a :class:`~flclient.MetadataError` subclass naming the attack it refused (expired, rollback,
        mix-and-match, untrusted signature), :class:`~flclient.ArtifactTooLarge`,
        :class:`~flclient.ArtifactUnavailable` or :class:`~flclient.TlsVerificationFailed`. Nothing trusted
        before is lost either way.
        """
        self._check_open()
        self._updater = None
        try:
            updater = Updater(
                str(self._metadata_dir),
                self._metadata_url,
                target_base_url=self._targets_url,
                fetcher=self._fetcher,
                config=UpdaterConfig(),
                bootstrap=self._root,
            )
        except (OSError, tuf_exceptions.RepositoryError, ValueError) as exc:
            raise MetadataError("root", f"the trusted root cannot be loaded: {exc}") from exc
        # TUF's idea of "now" is the device's clock, so expiry is testable and follows the injected clock.
        _set_reference_time(updater, datetime.fromtimestamp(self._clock(), timezone.utc))
        try:
            updater.refresh()
        except _LIBRARY_ERRORS as exc:
            raise _translate(exc, "metadata", stage="metadata") from exc
        self._updater = updater

    # -- artifacts ---------------------------------------------------------------------------------------------------
    def cached(self, pin: ArtifactPin) -> CachedArtifact | None:
        """The pinned artifact if it is in the cache (verified when installed, re-hashed now), else ``None``."""
        self._check_open()
        return self.cache.lookup(pin.target_path, pin.sha256)

    def fetch(self, pin: ArtifactPin, *, protect: tuple[str, ...] = ()) -> CachedArtifact:
        """Exactly the pinned artifact: from the cache, or downloaded, verified against TUF metadata and installed.

        Refreshes the metadata first if this object has not yet, and once more when the pin is not in the
        metadata of the last refresh (it may be newer). Raises :class:`~flclient.ArtifactNotFound`
        when no trusted target has that name and version, :class:`~flclient.ArtifactPinMismatch` when the trusted
        target has another hash, :class:`~flclient.ArtifactTampered` / :class:`~flclient.ArtifactTooLarge` when
        the download is not what the metadata promised. ``protect`` names target paths the cache must not evict
        to make room (those in use).

        The download starts while the delegated metadata is fetched and verified: with consistent snapshots the
        pin alone names the target's URL (``<sha256>.<version>``). Until the signed target info is known the
        download is bounded by the cache's size cap, then by the signed length; it is only hashed into a
        temporary file, and nothing is installed unless the metadata is trusted and agrees with the pin and with
        every byte. A refusal abandons it (and deletes it) at once.
        """
        hit = self.cached(pin)
        if hit is not None:
            return hit
        path = pin.target_path
        fresh = self._updater is None
        if fresh:
            self.refresh()
        updater = self._updater
        assert updater is not None
        early = self._start_download(updater, pin)
        try:
            info = self._targetinfo(path)
            if info is None and not fresh:
                # The task may pin something published after our last refresh: look once more, at the newest.
                self.refresh()
                updater = self._updater
                assert updater is not None
                info = self._targetinfo(path)
            if info is None:
                raise ArtifactNotFound(path, "no trusted target has this name and version in the role it belongs to")
            trusted_sha = info.hashes.get("sha256")
            if trusted_sha != pin.sha256:
                raise ArtifactPinMismatch(
                    path,
                    f"the signed metadata says sha256 {str(trusted_sha)[:16]}…, the task pinned {pin.sha256[:16]}…",
                )
            if info.length > self.cache.max_bytes:
                raise ArtifactTooLarge(path, f"is {info.length} bytes, more than the cache's {self.cache.max_bytes}")
        except BaseException:
            if early is not None:
                early.abandon()
            raise
        url = self._targets_url + _target_url_path(updater, info)
        if early is not None and (early.url != url or set(info.hashes) != {"sha256"}):
            early.abandon()  # the metadata names another URL or more hashes: download the way it says
            early = None
        if early is None:
            early = _Download(url, self.cache.temp_path(), limit=info.length, algorithms=tuple(info.hashes))
            early.run(self._fetcher)
        else:
            early.limit = info.length
        try:
            received, digests = early.result()
            if received != info.length:
                raise tuf_exceptions.LengthOrHashMismatchError(f"got {received} bytes, the metadata says {info.length}")
            for algo, digest in digests.items():
                if digest != info.hashes[algo]:
                    raise tuf_exceptions.LengthOrHashMismatchError(
                        f"{algo} of the download differs from the metadata's"
                    )
        except _LIBRARY_ERRORS as exc:
            early.abandon()
            raise _translate(exc, path, stage="target") from exc
        except BaseException:
            early.abandon()
            raise
        return self.cache.install(path, early.dest, sha256=pin.sha256, length=info.length, protect=protect)

    def _start_download(self, updater: Updater, pin: ArtifactPin) -> _Download | None:
        """The pinned target's download, started before its metadata is known (consistent snapshots only)."""
        trusted = getattr(updater, "_trusted_set", None)
        if trusted is None or not bool(trusted.root.consistent_snapshot):
            return None
        dirname, _, basename = quote(pin.target_path, safe="/").rpartition("/")
        url = f"{self._targets_url}{dirname}/{pin.sha256}.{basename}"
        download = _Download(url, self.cache.temp_path(), limit=self.cache.max_bytes, algorithms=("sha256",))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flclient-artifacts")
        download.start(self._pool, self._fetcher)
        return download

    def _targetinfo(self, path: str) -> TargetFile | None:
        assert self._updater is not None
        try:
            return self._updater.get_targetinfo(path)
        except _LIBRARY_ERRORS as exc:
            raise _translate(exc, path, stage="metadata") from exc

    def fetch_checkpoint(self, pin: ArtifactPin, *, max_bytes: int | None = None) -> Checkpoint:
        """A pinned model checkpoint, fetched like :meth:`fetch` and decoded (its model version must match)."""
        if pin.kind != "checkpoint":
            raise ValueError(f"fetch_checkpoint needs a checkpoint pin, got a {pin.kind} pin")
        artifact = self.fetch(pin)
        try:
            data = artifact.read_bytes()
        except OSError as exc:
            raise ArtifactCacheError(artifact.target_path, f"cannot read: {exc.strerror or exc}") from exc
        checkpoint = decode_checkpoint(data, max_bytes=max_bytes or self.cache.max_bytes)
        if str(checkpoint.model_version) != pin.version:
            raise CheckpointError(
                f"{pin.target_path} holds model version {checkpoint.model_version}, not {pin.version}"
            )
        return checkpoint

    # -- lifetime ----------------------------------------------------------------------------------------------------
    def _release(self) -> None:
        """Persist cache use times, stop the download pool and close the fetcher (if this object made it)."""
        self.cache.flush()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._own_fetcher and isinstance(self._fetcher, HttpxFetcher):
            self._fetcher.close()


class _Download:
    """One target download into ``dest``: the bytes stream in while a worker thread hashes and writes the previous
    batch (hashlib and file writes release the GIL), without ``Updater.download_target``'s second copy.

    The fetcher's chunks are batched by reference (a list, no join) into about ``_BATCH`` bytes per hand-off, so
    no byte is copied between the socket and the hash/file write. ``limit`` (bytes) may be lowered while the
    download runs (from the cache cap to the signed length); :meth:`abandon` stops it and deletes ``dest``.
    """

    def __init__(self, url: str, dest: Path, *, limit: int, algorithms: tuple[str, ...]) -> None:
        self.url = url
        self.dest = dest
        self.limit = limit
        self._algorithms = algorithms
        self._cancel = threading.Event()
        self._future: Future[tuple[int, dict[str, str]]] | None = None
        self._result: tuple[int, dict[str, str]] | None = None

    def start(self, pool: ThreadPoolExecutor, fetcher: FetcherInterface) -> None:
        """Run in ``pool``; :meth:`result` waits for it."""
        self._future = pool.submit(self._stream, fetcher)

    def run(self, fetcher: FetcherInterface) -> None:
        """Run now, in this thread."""
        self._result = self._stream(fetcher)

    def result(self) -> tuple[int, dict[str, str]]:
        """Bytes received and their hex digests; raises what the download raised."""
        if self._result is None:
            assert self._future is not None
            self._result = self._future.result()
        return self._result

    def abandon(self) -> None:
        """Stop the download (if it still runs), wait for it, delete the file; idempotent."""
        self._cancel.set()
        if self._future is not None:
            with contextlib.suppress(BaseException):
                self._future.result()
        self.dest.unlink(missing_ok=True)

    def _stream(self, fetcher: FetcherInterface) -> tuple[int, dict[str, str]]:
        try:
            hashers = {algo: hashlib.new(algo) for algo in self._algorithms}
        except ValueError as exc:
            raise ArtifactTampered(self.url, f"the metadata names a hash this device cannot check: {exc}") from exc
        received = 0

        def consume(batch: list[bytes], fd: int) -> None:
            for chunk in batch:
                for h in hashers.values():
                    h.update(chunk)
            _write_all(fd, batch)

        chunks = fetcher.fetch(self.url)
        with (
            self.dest.open("wb", buffering=0) as f,
            ThreadPoolExecutor(max_workers=1) as worker,
            contextlib.closing(chunks),  # type: ignore[type-var]
        ):
            pending: Future[None] | None = None
            batch: list[bytes] = []
            batched = 0
            for chunk in chunks:
                if self._cancel.is_set():
                    raise ArtifactUnavailable(self.url, "download abandoned")
                received += len(chunk)
                if received > self.limit:
                    raise tuf_exceptions.DownloadLengthMismatchError(
                        f"downloaded {received} bytes, more than the {self.limit} allowed"
                    )
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _BATCH or len(batch) >= _BATCH_CHUNKS:
                    if pending is not None:
                        pending.result()
                    pending = worker.submit(consume, batch, f.fileno())
                    batch, batched = [], 0
            if pending is not None:
                pending.result()
            consume(batch, f.fileno())
        if received > self.limit:  # the limit may have dropped to the signed length after the last chunk
            raise tuf_exceptions.DownloadLengthMismatchError(f"downloaded {received} bytes, more than {self.limit}")
        return received, {algo: h.hexdigest() for algo, h in hashers.items()}


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """Write ``buffers`` in order with one ``writev`` (no join, no copy), finishing a partial write by hand."""
    if not buffers:
        return
    written = os.writev(fd, buffers)
    total = sum(len(b) for b in buffers)
    if written == total:
        return
    rest = memoryview(b"".join(buffers))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def _set_reference_time(updater: Updater, now: datetime) -> None:
    trusted = getattr(updater, "_trusted_set", None)
    if trusted is None or not hasattr(trusted, "reference_time"):
        raise RuntimeError("this python-tuf release does not expose the reference time flclient sets; pin tuf")
    trusted.reference_time = now


def _target_url_path(updater: Updater, info: TargetFile) -> str:
    # As Updater.download_target forms it: with consistent snapshots the file name is prefixed by its hash.
    trusted = getattr(updater, "_trusted_set", None)
    consistent = bool(trusted.root.consistent_snapshot) if trusted is not None else True
    path = quote(info.path, safe="/")
    if not consistent:
        return path
    dirname, sep, basename = path.rpartition("/")
    return f"{dirname}{sep}{next(iter(info.hashes.values()))}.{basename}"


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kind):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _translate(exc: Exception, artifact: str, *, stage: str) -> FLClientError:
    """One library error -> the specific flclient error for what was refused."""
    for passthrough in (TlsError, ArtifactError):
        found = _find(exc, passthrough)
        if isinstance(found, FLClientError):
            return found
    if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
        return ArtifactTooLarge(artifact, f"the response ran past its allowed length (endless data): {exc}")
    if isinstance(exc, tuf_exceptions.SlowRetrievalError):
        return ArtifactUnavailable(artifact, f"too slow: {exc}")
    if isinstance(exc, tuf_exceptions.DownloadHTTPError):
        return ArtifactUnavailable(artifact, f"the repository answered HTTP {exc.status_code}")
    if isinstance(exc, tuf_exceptions.DownloadError):
        cause = exc.__cause__
        return ArtifactUnavailable(artifact, f"download failed: {cause or exc}")
    if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
        return MetadataExpired(artifact, f"refused (freeze): {exc}")
    if isinstance(exc, tuf_exceptions.UnsignedMetadataError):
        return MetadataUntrusted(artifact, f"refused (not signed by its role's keys): {exc}")
    if isinstance(exc, tuf_exceptions.BadVersionNumberError):
        msg = str(exc)
        # tuf words a version lower than the trusted one as "must be >= N", or (snapshot meta) "Expected x.json
        # version"; any other version disagreement is with what the parent metadata recorded.
        if "must be >=" in msg or ".json version" in msg:
            return MetadataRollback(artifact, f"refused (rollback): {msg}")
        return MetadataMismatch(artifact, f"refused (mix-and-match): {msg}")
    if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
        if stage == "target":
            return ArtifactTampered(artifact, f"refused (tampered): {exc}")
        return MetadataMismatch(artifact, f"refused (mix-and-match): {exc}")
    if isinstance(exc, tuf_exceptions.RepositoryError):
        return MetadataError(artifact, f"refused: {exc}")
    if isinstance(exc, OSError):
        return ArtifactCacheError(artifact, f"local I/O failed: {exc.strerror or exc}")
    return ArtifactUnavailable(artifact, f"{type(exc).__name__}: {exc}")
