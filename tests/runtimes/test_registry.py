"""Choosing a backend: by model description (backend_for_model) and by what is installed (available_backends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtimes import (
    BACKEND_NAMES,
    BackboneModel,
    DenseLayer,
    DenseStack,
    LoRAConfig,
    ModelLoadError,
    RuntimeBackendError,
    TrainSignatureModel,
    UnsupportedFeatureError,
    available_backends,
    backend_for_model,
    create_backend,
    init_parameters,
)
from runtimes._spec import ModelSource

from .conftest import digits_mlp, digits_mlp_parameters

HEAD = DenseStack(layers=(DenseLayer(in_features=32, out_features=10),))
ROOT = Path(__file__).resolve().parents[2]


def _head_params() -> dict[str, np.ndarray]:
    return init_parameters(HEAD, rng=np.random.default_rng(0))


def test_each_model_description_names_its_backend(tmp_path: Path) -> None:
    lora = LoRAConfig(rank=2, alpha=2.0)
    assert backend_for_model(digits_mlp()) == "numpy"
    assert backend_for_model(BackboneModel(path=tmp_path / "b.onnx", head=HEAD)) == "onnx"
    assert backend_for_model(BackboneModel(path=tmp_path / "B.ONNX", head=HEAD)) == "onnx"
    assert backend_for_model(BackboneModel(path=tmp_path / "m.onnx", extract_final_linear=1, lora=lora)) == "onnx"
    assert backend_for_model(BackboneModel(path=tmp_path / "b.tflite", head=HEAD)) == "litert"
    assert backend_for_model(TrainSignatureModel(path=tmp_path / "t.tflite")) == "litert"
    # Only the description is looked at: none of these files exists.
    assert not any(tmp_path.iterdir())


def test_models_no_backend_can_train_are_refused_with_the_package_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"\*\.onnx.*\*\.tflite"):
        backend_for_model(BackboneModel(path=tmp_path / "backbone.pt", head=HEAD))
    with pytest.raises(UnsupportedFeatureError, match="only ONNX graphs"):
        backend_for_model(
            BackboneModel(path=tmp_path / "m.tflite", extract_final_linear=1, lora=LoRAConfig(rank=2, alpha=2.0))
        )
    for not_a_model in ("model.onnx", tmp_path / "model.onnx", None, DenseLayer(in_features=2, out_features=2)):
        with pytest.raises(UnsupportedFeatureError, match="DenseStack, BackboneModel or TrainSignatureModel"):
            backend_for_model(not_a_model)  # type: ignore[arg-type]
    assert issubclass(UnsupportedFeatureError, RuntimeBackendError)
    assert issubclass(ModelLoadError, RuntimeBackendError)


def _fixture_model(kind: str, fixtures: Path) -> tuple[ModelSource, dict[str, np.ndarray]]:
    if kind == "dense-stack":
        return digits_mlp(), digits_mlp_parameters()
    if kind == "onnx-backbone":
        return BackboneModel(path=fixtures / "backbone_64_32.onnx", head=HEAD), _head_params()
    if kind == "tflite-backbone":
        return BackboneModel(path=fixtures / "backbone_64_32.tflite", head=HEAD), _head_params()
    return TrainSignatureModel(path=fixtures / "digits_mlp_train.tflite"), digits_mlp_parameters()


@pytest.mark.parametrize("kind", ["dense-stack", "onnx-backbone", "tflite-backbone", "train-signature"])
def test_the_named_backend_loads_the_model(kind: str, fixtures_dir: Path) -> None:
    model, parameters = _fixture_model(kind, fixtures_dir)
    name = backend_for_model(model)
    if name not in available_backends():
        pytest.skip(f"the {name} backend's optional package is not installed here")
    with create_backend(name) as backend:
        backend.load(model, parameters)
        assert backend.parameters().keys() <= parameters.keys()


def test_every_listed_backend_can_be_created() -> None:
    names = available_backends()
    assert "numpy" in names
    assert names == tuple(sorted(names)) and set(names) <= set(BACKEND_NAMES)
    for name in names:
        create_backend(name).close()


def test_missing_packages_are_not_listed() -> None:
    assert available_backends(find_spec=lambda name: None) == ("numpy",)
    only_onnx = available_backends(find_spec=lambda name: object() if name == "onnxruntime" else None)
    assert only_onnx == ("numpy", "onnx")
    litert = available_backends(find_spec=lambda name: object() if name == "ai_edge_litert" else None)
    assert litert == ("litert", "numpy")

    def broken(name: str) -> object:
        raise ValueError(f"{name}.__spec__ is None")

    assert available_backends(find_spec=broken) == ("numpy",)


def test_tflite_runtime_counts_only_under_numpy_1() -> None:
    names = available_backends(find_spec=lambda name: object() if name == "tflite_runtime" else None)
    numpy_major = int(np.__version__.split(".")[0])
    assert ("litert" in names) is (numpy_major < 2)


def test_a_package_blocked_in_sys_modules_is_not_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert "onnx" not in available_backends()


def test_available_backends_imports_no_backend_package() -> None:
    probe = (
        "import sys, runtimes; names = runtimes.available_backends(); "
        "print(names, sorted(m for m in ('onnxruntime', 'onnx', 'ai_edge_litert', 'tflite_runtime') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert out.stdout.strip().endswith("[]"), out.stdout
