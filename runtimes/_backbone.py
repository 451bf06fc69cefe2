"""Training a numpy part on top of a frozen backbone: the activation cache and the shared fit/evaluate path."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._dense import DenseModel, evaluate_outputs
from ._protocol import check_targets
from ._spec import FitResult, TrainConfig, TrainingBudget, TrainingData
from ._training import Checkpoint, Clock, blas_threads, check_ram_budget, estimate_training_bytes, fit_dense

#: Runs the frozen backbone on a chunk of inputs and returns float32 features (rows, width).
FeatureFn = Callable[[np.ndarray], np.ndarray]
_CHUNK = 512


def data_fingerprint(x: np.ndarray) -> str:
    """A digest of the inputs' bytes, shape and dtype: the cache key for one round's dataset."""
    digest = hashlib.sha256(f"{x.shape}{x.dtype.str}".encode())
    digest.update(np.ascontiguousarray(x).data)
    return digest.hexdigest()


class ActivationStore:
    """Backbone activations kept on disk across backend instances (a device's rounds), at most ``max_bytes``.

    Each entry is one ``.npy`` file named by the digest of its key; the least recently used entries are deleted
    when a new one would exceed the cap. What the key covers (the backbone's sha256, the feature module's, the
    scaler version and the examples) is the caller's: a changed key simply misses, and the old entry ages out.
    """

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes

    def _path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"

    def load(self, key: str) -> npt.NDArray[np.float32] | None:
        """The activations stored under ``key`` (memory-mapped, read-only), or ``None``."""
        path = self._path(key)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):  # absent, or a torn file from a crash: recompute
            return None
        if array.dtype != np.float32 or array.ndim != 2:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used
        return array  # type: ignore[no-any-return]

    def save(self, key: str, array: npt.NDArray[np.float32]) -> bool:
        """Store ``array`` under ``key`` (atomically); False when it alone exceeds the cap."""
        size = int(array.nbytes) + 128
        if size > self.max_bytes:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self._evict(self.max_bytes - size)
        fd, tmp = tempfile.mkstemp(prefix=".activations-", suffix=".npy", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def total_bytes(self) -> int:
        """Bytes the stored entries take."""
        return sum(p.stat().st_size for p in self.root.glob("*.npy")) if self.root.is_dir() else 0

    def _evict(self, keep_bytes: int) -> None:
        entries = sorted(self.root.glob("*.npy"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in entries)
        for path in entries:
            if total <= keep_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


class ActivationCache:
    """Backbone activations for one dataset, computed once and kept in RAM up to ``ram_bytes``.

    Larger activation sets spill to a memory-mapped file in ``spill_dir`` (a fresh temporary directory when
    ``None``), so the RAM budget holds while epochs still read each activation once from the page cache. With a
    ``store``, activations are also kept on disk under ``namespace`` + the data's fingerprint, so a later backend
    (the next round) finds them without running the backbone; ``from_store`` says whether the last ``get`` did.
    """

    def __init__(
        self, *, ram_bytes: int, spill_dir: Path | None, store: ActivationStore | None = None, namespace: str = ""
    ) -> None:
        self._ram_bytes = ram_bytes
        self._spill_dir = spill_dir
        self._store = store
        self._namespace = namespace
        self.from_store = False
        self._key: str | None = None
        self._array: npt.NDArray[np.float32] | None = None
        self._spill_path: Path | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.spilled = False

    def lookup(self, x: np.ndarray) -> npt.NDArray[np.float32] | None:
        """The cached activations of ``x`` when this dataset is the one cached, else ``None``."""
        if self._array is not None and self._array.shape[0] == x.shape[0] and data_fingerprint(x) == self._key:
            return self._array
        return None

    def get(
        self, x: np.ndarray, features: FeatureFn, *, checkpoint: Checkpoint | None = None
    ) -> npt.NDArray[np.float32]:
        """Activations of every row of ``x``, computing them on first use for this dataset.

        ``checkpoint`` is called before each chunk of the backbone pass; when it raises, the cache is left
        empty (spill file deleted) and the exception propagates.
        """
        key = data_fingerprint(x)
        if key == self._key and self._array is not None:
            return self._array
        self.clear()
        stored_key = f"{self._namespace}/{key}"
        if self._store is not None:
            stored = self._store.load(stored_key)
            if stored is not None and stored.shape[0] == x.shape[0]:
                self._key, self._array, self.from_store = key, stored, True
                return stored
        n = x.shape[0]
        try:
            if checkpoint is not None:
                checkpoint()
            first = features(x[:_CHUNK])
            width = int(first.shape[1])
            needed = n * width * 4
            out = np.empty((n, width), dtype=np.float32) if needed <= self._ram_bytes else self._spill(n, width)
            out[: first.shape[0]] = first
            for start in range(first.shape[0], n, _CHUNK):
                if checkpoint is not None:
                    checkpoint()
                out[start : start + _CHUNK] = features(x[start : start + _CHUNK])
        except BaseException:
            self.clear()  # a half-filled cache must not be found by the next fit
            raise
        self._key, self._array = key, out
        if self._store is not None:
            self._store.save(stored_key, out)
        return out

    def _spill(self, n: int, width: int) -> npt.NDArray[np.float32]:
        root = self._spill_dir
        if root is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="runtimes-activations-")
            root = Path(self._tmpdir.name)
        fd, name = tempfile.mkstemp(prefix="activations-", suffix=".f32", dir=root)
        os.close(fd)
        self._spill_path = Path(name)
        self.spilled = True
        return np.memmap(self._spill_path, dtype=np.float32, mode="w+", shape=(n, width))

    def estimate_bytes(self, n: int, width: int) -> int:
        """RAM the cache would hold for ``n`` rows of ``width`` features (zero once it spills)."""
        needed = n * width * 4
        return needed if needed <= self._ram_bytes else 0

    def clear(self) -> None:
        """Drop the cached activations and delete any spill file."""
        self._key = None
        self._array = None
        self.spilled = False
        self.from_store = False
        if self._spill_path is not None:
            self._spill_path.unlink(missing_ok=True)
            self._spill_path = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def run_features(features: FeatureFn, x: np.ndarray) -> np.ndarray:
    """Backbone activations for all of ``x``, in chunks."""
    return np.concatenate([features(x[i : i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])


def fit_on_backbone(
    model: DenseModel,
    features: FeatureFn,
    cache: ActivationCache | None,
    data: TrainingData,
    config: TrainConfig,
    *,
    budget: TrainingBudget | None,
    clock: Clock,
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Train ``model`` on the frozen backbone's activations of ``data`` (cached, or recomputed per batch).

    ``checkpoint`` is called between the backbone chunks that fill the cache and around every step (see
    :func:`runtimes._training.run_steps`); whatever it raises propagates, and no result is returned.
    """
    y = check_targets(model.spec, data)
    x = data.x
    dtype = model.dtype
    y_dtype = y.dtype if model.spec.loss == "cross_entropy" else dtype
    extra = cache.estimate_bytes(len(data), model.spec.in_features) if cache is not None else 0
    estimate = estimate_training_bytes(model.spec, config, itemsize=dtype.itemsize, extra_bytes=extra)
    started = clock()
    feature_s = 0.0
    if cache is not None:
        check_ram_budget(estimate, budget)  # before the cache allocates anything
        acts = cache.lookup(x)
        if acts is None:
            with blas_threads(config.blas_threads):
                acts = cache.get(x, features, checkpoint=checkpoint)
        feature_s = clock() - started

        def source(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return acts[idx].astype(dtype, copy=False), y[idx].astype(y_dtype, copy=False)

    else:

        def source(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return features(x[idx]).astype(dtype, copy=False), y[idx].astype(y_dtype, copy=False)

    remaining = budget
    if budget is not None and budget.wall_time_s is not None and feature_s:
        left = max(budget.wall_time_s - feature_s, 1e-9)
        remaining = TrainingBudget(ram_bytes=budget.ram_bytes, wall_time_s=left)
    result = fit_dense(
        model,
        source,
        n=len(data),
        config=config,
        budget=remaining,
        clock=clock,
        estimate=estimate,
        metadata={
            "feature_seconds": feature_s,
            "cache_spilled": bool(cache is not None and cache.spilled),
            "activations_reused": bool(cache is not None and cache.from_store),
        },
        checkpoint=checkpoint,
    )
    return FitResult(
        parameters=result.parameters,
        num_examples=result.num_examples,
        examples_seen=result.examples_seen,
        steps=result.steps,
        loss_curve=result.loss_curve,
        wall_time_s=result.wall_time_s + feature_s,
        partial=result.partial,
        stop_reason=result.stop_reason,
        memory_estimate_bytes=result.memory_estimate_bytes,
        metadata=result.metadata,
    )


def evaluate_on_backbone(
    model: DenseModel, features: FeatureFn, data: TrainingData, *, batch_size: int = 512
) -> dict[str, float]:
    """Mean loss (and accuracy) of backbone + numpy part on ``data``."""
    y = check_targets(model.spec, data)
    with blas_threads(1):
        return evaluate_outputs(
            model.spec.loss,
            [
                (model.forward(features(data.x[i : i + batch_size])), y[i : i + batch_size])
                for i in range(0, len(data), batch_size)
            ],
        )


def predict_on_backbone(model: DenseModel, features: FeatureFn, x: np.ndarray) -> np.ndarray:
    """Outputs of backbone + numpy part for ``x``."""
    with blas_threads(1):
        return model.forward(run_features(features, x))
