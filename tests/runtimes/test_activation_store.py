"""The on-disk activation store: entries found again by key, a cap that evicts the least recently used, torn files
recomputed, and an ActivationCache that fills it once and then skips the backbone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimes import ActivationStore
from runtimes._backbone import ActivationCache


def _acts(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)


def test_an_entry_is_found_by_its_key_only(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path, max_bytes=1 << 20)
    assert store.save("a", _acts(8))
    got = store.load("a")
    assert got is not None and np.array_equal(got, _acts(8))
    assert store.load("b") is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=12))
def test_the_store_never_exceeds_its_cap(rows: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(Path(tmp), max_bytes=2048)
        for i, n in enumerate(rows):
            saved = store.save(str(i), _acts(n, i))
            assert saved == (n * 16 + 128 <= 2048)
            assert store.total_bytes() <= 2048
            if saved:  # the newest entry is always kept
                assert store.load(str(i)) is not None


def test_the_least_recently_used_entry_goes_first(tmp_path: Path) -> None:
    one = _acts(8).nbytes + 128  # np.save's header is 128 bytes
    store = ActivationStore(tmp_path, max_bytes=2 * one)
    store.save("old", _acts(8, 1))
    store.save("used", _acts(8, 2))
    os.utime(store._path("old"), (1, 1))
    os.utime(store._path("used"), (2, 2))
    assert store.load("used") is not None  # touched: now the most recent
    os.utime(store._path("old"), (1, 1))
    store.save("new", _acts(8, 3))
    assert store.load("old") is None and store.load("used") is not None and store.load("new") is not None


def test_a_torn_file_is_recomputed(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path, max_bytes=1 << 20)
    store.save("a", _acts(8))
    store._path("a").write_bytes(b"\x93NUMPY garbage")
    assert store.load("a") is None


def test_a_cache_with_a_store_runs_the_backbone_once_across_instances(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path, max_bytes=1 << 20)
    calls: list[int] = []

    def features(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return (x[:, :4] * 2).astype(np.float32)

    x = _acts(10)
    first = ActivationCache(ram_bytes=1 << 20, spill_dir=None, store=store, namespace="bb/fm/0")
    out = first.get(x, features)
    assert not first.from_store and calls == [10]
    second = ActivationCache(ram_bytes=1 << 20, spill_dir=None, store=store, namespace="bb/fm/0")
    again = second.get(x, features)
    assert second.from_store and calls == [10] and np.array_equal(again, out)
    other = ActivationCache(ram_bytes=1 << 20, spill_dir=None, store=store, namespace="bb/fm/1")  # new scaler
    other.get(x, features)
    assert not other.from_store and calls == [10, 10]
