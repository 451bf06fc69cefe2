"""Choose a backend by name; optional packages are imported only when their backend is asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._exceptions import UnknownBackendError
from ._protocol import TrainingBackend

BACKEND_NAMES: tuple[str, ...] = ("litert", "numpy", "onnx")


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Settings for the file-model backends (the numpy backend ignores them).

    ``cache_ram_bytes`` caps the in-memory activation cache; beyond it activations spill to a file under
    ``spill_dir`` (a temporary directory when ``None``). ``cache_activations=False`` recomputes the backbone
    every epoch (only useful for measuring what the cache saves). ``threads`` caps the inference threads.
    """

    cache_ram_bytes: int = 64 * 1024 * 1024
    spill_dir: Path | None = None
    cache_activations: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if self.cache_ram_bytes < 0:
            raise ValueError(f"cache_ram_bytes must be >= 0, got {self.cache_ram_bytes}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


def create_backend(name: str, options: BackendOptions | None = None) -> TrainingBackend:
    """A new backend chosen by ``name`` (one of :data:`BACKEND_NAMES`).

    Raises :class:`UnknownBackendError` for any other name and :class:`BackendUnavailableError` (with the
    ``pip install`` hint) when the backend's optional package is missing or broken.
    """
    opts = options or BackendOptions()
    if name == "numpy":
        from ._numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "onnx":
        from ._onnx_backend import OnnxBackend

        return OnnxBackend(opts)
    if name == "litert":
        from ._litert_backend import LiteRTBackend

        return LiteRTBackend(opts)
    raise UnknownBackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
