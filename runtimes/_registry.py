"""Choose a backend by name; optional packages are imported only when their backend is asked for."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._exceptions import ModelLoadError, UnknownBackendError, UnsupportedFeatureError
from ._protocol import TrainingBackend
from ._spec import BackboneModel, DenseStack, ModelSource, TrainSignatureModel

if TYPE_CHECKING:
    from ._backbone import ActivationStore

BACKEND_NAMES: tuple[str, ...] = ("litert", "numpy", "onnx")

#: Finds a top-level module without importing it (``importlib.util.find_spec``); ``None`` when absent.
FindSpec = Callable[[str], object | None]


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Settings for the file-model backends (the numpy backend ignores them).

    ``cache_ram_bytes`` caps the in-memory activation cache; beyond it activations spill to a file under
    ``spill_dir`` (a temporary directory when ``None``). ``cache_activations=False`` recomputes the backbone
    every epoch (only useful for measuring what the cache saves). ``threads`` caps the inference threads.
    ``activation_store`` keeps activations on disk across backends under ``cache_namespace`` (which must name
    everything the activations depend on besides the examples, e.g. the backbone's and feature module's sha256).
    """

    cache_ram_bytes: int = 64 * 1024 * 1024
    spill_dir: Path | None = None
    cache_activations: bool = True
    threads: int = 1
    activation_store: ActivationStore | None = None
    cache_namespace: str = ""

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


def backend_for_model(model: ModelSource) -> str:
    """The registry name of the backend that trains ``model``: ``"numpy"`` for a :class:`DenseStack`,
    ``"onnx"`` for a :class:`BackboneModel` whose file ends in ``.onnx``, ``"litert"`` for a ``.tflite``
    backbone or a :class:`TrainSignatureModel`.

    Only the description is looked at (no file is read, nothing is imported); whether that backend can run
    here is :func:`available_backends`' answer. Raises :class:`UnsupportedFeatureError` for anything that is
    not a model description, or a ``.tflite`` backbone asked to lift layers out (only ONNX graphs can), and
    :class:`ModelLoadError` for a backbone file that is neither ``.onnx`` nor ``.tflite``.

    Example::

        name = backend_for_model(model)
        if name not in available_backends():
            ...  # decline the round: this device cannot run the task's model
        with create_backend(name) as backend:
            backend.load(model, parameters)
    """
    if isinstance(model, DenseStack):
        return "numpy"
    if isinstance(model, TrainSignatureModel):
        return "litert"
    if isinstance(model, BackboneModel):
        suffix = Path(model.path).suffix.lower()
        if suffix == ".onnx":
            return "onnx"
        if suffix == ".tflite":
            if model.head is None or model.extract_final_linear:
                raise UnsupportedFeatureError(
                    f"{model.path} is a .tflite backbone, and only ONNX graphs can have layers lifted out "
                    "(extract_final_linear); give it a head or use an ONNX backbone"
                )
            return "litert"
        raise ModelLoadError(
            f"no backend runs the backbone {model.path}: name an ONNX file *.onnx or a LiteRT file *.tflite"
        )
    raise UnsupportedFeatureError(
        f"no backend trains a {type(model).__name__}; describe the model as a DenseStack, BackboneModel or "
        "TrainSignatureModel"
    )


def available_backends(*, find_spec: FindSpec = importlib.util.find_spec) -> tuple[str, ...]:
    """The names in :data:`BACKEND_NAMES` whose optional packages are installed here, sorted.

    ``numpy`` is always there; ``onnx`` needs onnxruntime; ``litert`` needs ai-edge-litert, or tflite-runtime
    under numpy 1 (its last wheels are built for numpy 1 and fail to import under numpy 2). Packages are
    found, not imported, so the answer is cheap; one that is installed but broken is still listed, and
    :func:`create_backend` then raises :class:`BackendUnavailableError`. ``find_spec`` is injectable for tests.
    """

    def installed(module: str) -> bool:
        try:
            return find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
            return False

    found = {"numpy"}
    if installed("onnxruntime"):
        found.add("onnx")
    numpy_major = int(np.__version__.split(".")[0])
    if installed("ai_edge_litert") or (numpy_major < 2 and installed("tflite_runtime")):
        found.add("litert")
    return tuple(name for name in BACKEND_NAMES if name in found)
