"""The verified-artifact cache: atomic installs, re-hash on use, size cap with LRU eviction, index codec."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient.artifacts import ArtifactCache, ArtifactCacheError
from flclient.artifacts._cache import IndexEntry, decode_index, encode_index


class Tick:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _install(cache: ArtifactCache, path: str, data: bytes, **kw: object) -> None:
    tmp = cache.temp_path()
    tmp.write_bytes(data)
    cache.install(path, tmp, sha256=hashlib.sha256(data).hexdigest(), length=len(data), **kw)  # type: ignore[arg-type]


def test_install_lookup_and_damage_on_disk(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=1000, clock=Tick())
    _install(cache, "modules/a/1", b"a" * 10)
    hit = cache.lookup("modules/a/1")
    assert hit is not None and hit.read_bytes() == b"a" * 10
    assert cache.lookup("modules/a/1", "0" * 64) is None
    os.chmod(hit.path, 0o644)
    hit.path.write_bytes(b"b" * 10)  # same size, other bytes: found by the re-hash
    assert cache.lookup("modules/a/1") is None
    assert not hit.path.exists() and cache.entries() == {}
    reopened = ArtifactCache(tmp_path, max_bytes=1000)
    assert reopened.entries() == {}


def test_size_cap_evicts_least_recently_used_but_never_protected(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=25, clock=Tick())
    _install(cache, "modules/a/1", b"a" * 10)
    _install(cache, "modules/b/1", b"b" * 10)
    assert cache.lookup("modules/a/1") is not None  # a is now more recently used than b
    _install(cache, "modules/c/1", b"c" * 10)
    assert set(cache.entries()) == {"modules/a/1", "modules/c/1"}
    _install(cache, "modules/d/1", b"d" * 10, protect=("modules/a/1",))
    assert set(cache.entries()) == {"modules/a/1", "modules/d/1"}
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == sorted(
        hashlib.sha256(x * 10).hexdigest() for x in (b"a", b"d")
    )
    with pytest.raises(ArtifactCacheError, match="more than the cache"):
        _install(cache, "modules/e/1", b"e" * 30)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_corrupt_index_starts_empty_and_orphans_are_collected(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=100)
    _install(cache, "modules/a/1", b"a" * 10)
    (tmp_path / "index.json").write_text("{not json")
    (tmp_path / "tmp" / "leftover.part").write_bytes(b"half")
    cache = ArtifactCache(tmp_path, max_bytes=100)
    assert cache.entries() == {} and list((tmp_path / "tmp").iterdir()) == []
    cache.gc()
    assert list((tmp_path / "objects").iterdir()) == []


ENTRY = st.builds(
    IndexEntry,
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    length=st.integers(0, 2**40),
    installed=st.floats(0, 2e9),
    used=st.floats(0, 2e9),
)


@given(st.dictionaries(st.text(min_size=1, max_size=40), ENTRY, max_size=5))
def test_index_round_trip(entries: dict[str, IndexEntry]) -> None:
    assert decode_index(encode_index(entries)) == entries


@given(st.binary(max_size=200))
def test_index_garbage_raises_only_cache_error(blob: bytes) -> None:
    with contextlib.suppress(ArtifactCacheError):
        decode_index(blob)


@pytest.mark.parametrize(
    "entry",
    [
        {"sha256": "zz", "length": 1, "installed": 0, "used": 0},
        {"sha256": "0" * 64, "length": -1, "installed": 0, "used": 0},
        {"sha256": "0" * 64, "length": 1, "installed": "x", "used": 0},
        {"sha256": "0" * 64, "length": 1},
    ],
)
def test_index_malformed_entries(entry: dict[str, object]) -> None:
    blob = json.dumps({"format": "flclient-artifact-cache-v1", "entries": {"p": entry}}).encode()
    with pytest.raises(ArtifactCacheError, match="entry 'p'"):
        decode_index(blob)
