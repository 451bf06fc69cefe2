"""The device's cache of verified artifacts: content-addressed, size-capped, installed atomically.

Layout::

    ROOT/objects/<sha256>   an artifact's bytes, read-only, named by their hash (two paths, one file)
    ROOT/tmp/               downloads in progress; emptied when the cache is opened
    ROOT/index.json         which TUF target path was verified to have which sha256, and when it was last used

Only bytes that were verified against signed metadata are renamed into ``objects/``, so a crash, a tampered
download or a refused update leaves the previous artifacts exactly as they were. When the objects outgrow
``max_bytes`` the least recently used ones go first; an artifact being installed, or named in ``protect``,
is never evicted. One process owns a cache directory at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_write_bytes
from .._errors import ArtifactCacheError

__all__ = ["INDEX_FORMAT", "ArtifactCache", "CachedArtifact", "IndexEntry", "decode_index", "encode_index"]

INDEX_FORMAT = "flclient-artifact-cache-v1"
_MAX_INDEX = 16 << 20
_HEX = frozenset("0123456789abcdef")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """One verified target: its sha256 and length, when it was installed and when last used (epoch seconds)."""

    sha256: str
    length: int
    installed: float
    used: float


@dataclass(frozen=True, kw_only=True)
class CachedArtifact:
    """A verified artifact on disk: open ``path`` read-only; ``target_path`` is its TUF name."""

    target_path: str
    path: Path
    sha256: str
    length: int

    def read_bytes(self) -> bytes:
        """The artifact's bytes."""
        return self.path.read_bytes()


def encode_index(entries: dict[str, IndexEntry]) -> bytes:
    """The index file's bytes (versioned JSON, keys sorted)."""
    obj = {
        "format": INDEX_FORMAT,
        "entries": {
            path: {"sha256": e.sha256, "length": e.length, "installed": e.installed, "used": e.used}
            for path, e in sorted(entries.items())
        },
    }
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def decode_index(data: bytes) -> dict[str, IndexEntry]:
    """Parse an index file; anything malformed raises :class:`~flclient.ArtifactCacheError`."""
    if len(data) > _MAX_INDEX:
        raise ArtifactCacheError("index.json", f"is {len(data)} bytes, more than {_MAX_INDEX}")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactCacheError("index.json", f"is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != INDEX_FORMAT or not isinstance(obj.get("entries"), dict):
        raise ArtifactCacheError("index.json", f"is not in the {INDEX_FORMAT!r} format")
    out: dict[str, IndexEntry] = {}
    for path, raw in obj["entries"].items():
        if not isinstance(raw, dict) or set(raw) != {"sha256", "length", "installed", "used"}:
            raise ArtifactCacheError("index.json", f"entry {path!r} must have sha256, length, installed and used")
        sha, length, installed, used = raw["sha256"], raw["length"], raw["installed"], raw["used"]
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
            raise ArtifactCacheError("index.json", f"entry {path!r} has a malformed sha256")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ArtifactCacheError("index.json", f"entry {path!r} has a malformed length")
        for t in (installed, used):
            if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t in (float("inf"), float("-inf")):
                raise ArtifactCacheError("index.json", f"entry {path!r} has a malformed time")
        out[path] = IndexEntry(sha256=sha, length=length, installed=float(installed), used=float(used))
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactCache:
    """Verified artifacts under ``root``, at most ``max_bytes`` of them (see the module docstring).

    Objects are re-hashed on every :meth:`lookup`, so one torn by a crash is detected, dropped and fetched
    again; ``durable`` adds an fsync of each object, its directory and the index, which spares that
    re-download at the cost of disk flushes per install. Files are always replaced atomically (rename).
    ``clock`` (epoch seconds) stamps installs and uses for least-recently-used eviction.
    """

    def __init__(
        self, root: Path, *, max_bytes: int, clock: Callable[[], float] = time.time, durable: bool = False
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._clock = clock
        self._durable = durable
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.iterdir():
                leftover.unlink()
        except OSError as exc:
            raise ArtifactCacheError(str(self.root), f"cannot prepare the cache: {exc.strerror or exc}") from exc
        self._index = self._load_index()
        self._dirty = False

    def _load_index(self) -> dict[str, IndexEntry]:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ArtifactCacheError(str(self.root), f"cannot read index.json: {exc.strerror or exc}") from exc
        try:
            return decode_index(data)
        except ArtifactCacheError:
            # Written atomically, so this is damage from outside: forget the index, keep nothing unverified.
            return {}

    def _save(self) -> None:
        try:
            if self._durable:
                atomic_write_bytes(self.root / "index.json", encode_index(self._index))
            else:
                # Still atomic (rename), just not flushed: a crash can lose recent entries, never corrupt them
                # into trust, because every lookup re-hashes the object it names.
                tmp = self._tmp / "index.json.tmp"
                tmp.write_bytes(encode_index(self._index))
                os.replace(tmp, self.root / "index.json")
        except OSError as exc:
            raise ArtifactCacheError(str(self.root), f"cannot write index.json: {exc.strerror or exc}") from exc
        self._dirty = False

    @property
    def total_bytes(self) -> int:
        """Bytes held by indexed objects (each object counted once)."""
        return sum({e.sha256: e.length for e in self._index.values()}.values())

    def entries(self) -> dict[str, IndexEntry]:
        """Every indexed target path and its entry."""
        return dict(self._index)

    def lookup(self, target_path: str, sha256: str | None = None, *, verify: bool = True) -> CachedArtifact | None:
        """The cached artifact for ``target_path`` (and ``sha256`` when given), or ``None``.

        With ``verify`` the object is re-hashed: one damaged on disk is dropped and ``None`` returned.
        """
        entry = self._index.get(target_path)
        if entry is None or (sha256 is not None and entry.sha256 != sha256):
            return None
        path = self._objects / entry.sha256
        try:
            ok = path.stat().st_size == entry.length and (not verify or _sha256_file(path) == entry.sha256)
        except OSError:
            ok = False
        if not ok:
            self._drop_object(entry.sha256)
            self._save()
            return None
        self._index[target_path] = IndexEntry(
            sha256=entry.sha256, length=entry.length, installed=entry.installed, used=self._clock()
        )
        self._dirty = True
        return CachedArtifact(target_path=target_path, path=path, sha256=entry.sha256, length=entry.length)

    def temp_path(self) -> Path:
        """A fresh file name in ``tmp/`` (same file system as ``objects/``) for a download in progress."""
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        os.close(fd)
        return Path(name)

    def install(
        self, target_path: str, download: Path, *, sha256: str, length: int, protect: Iterable[str] = ()
    ) -> CachedArtifact:
        """Move the verified file ``download`` (from :meth:`temp_path`) into the cache as ``target_path``.

        The caller has verified it against signed metadata; the size is checked again here. Evicts least
        recently used objects to stay under ``max_bytes`` (never this one nor ``protect``).
        """
        try:
            if length > self.max_bytes:
                raise ArtifactCacheError(target_path, f"is {length} bytes, more than the cache's {self.max_bytes}")
            if download.stat().st_size != length:
                raise ArtifactCacheError(target_path, "the downloaded file changed size before it was installed")
            final = self._objects / sha256
            if self._durable:
                with download.open("rb") as f:
                    os.fsync(f.fileno())
            os.chmod(download, 0o444)
            os.replace(download, final)
            if self._durable:
                _fsync_dir(self._objects)
        except OSError as exc:
            raise ArtifactCacheError(target_path, f"cannot install: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                download.unlink()
        now = self._clock()
        self._index[target_path] = IndexEntry(sha256=sha256, length=length, installed=now, used=now)
        self.gc(protect=[*protect, target_path])
        return CachedArtifact(target_path=target_path, path=self._objects / sha256, sha256=sha256, length=length)

    def gc(self, *, protect: Iterable[str] = ()) -> list[str]:
        """Drop unindexed objects, then least recently used targets until under ``max_bytes``; returns the
        target paths evicted. Targets in ``protect`` (and objects they share) stay."""
        keep = set(protect)
        evicted: list[str] = []
        by_use = sorted(self._index.items(), key=lambda kv: (kv[1].used, kv[0]))
        for path, entry in by_use:
            if self.total_bytes <= self.max_bytes:
                break
            if path in keep or any(self._index[p].sha256 == entry.sha256 for p in keep if p in self._index):
                continue
            del self._index[path]
            evicted.append(path)
        referenced = {e.sha256 for e in self._index.values()}
        try:
            for obj in self._objects.iterdir():
                if obj.name not in referenced:
                    self._unlink(obj)
        except OSError as exc:
            raise ArtifactCacheError(str(self.root), f"cannot collect garbage: {exc.strerror or exc}") from exc
        self._save()
        return evicted

    def _drop_object(self, sha256: str) -> None:
        for path in [p for p, e in self._index.items() if e.sha256 == sha256]:
            del self._index[path]
        self._unlink(self._objects / sha256)

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o644)
            path.unlink()

    def flush(self) -> None:
        """Persist last-use times (installs and evictions are persisted at once)."""
        if self._dirty:
            self._save()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
