from __future__ import annotations

import runtimes
from runtimes import _exceptions

PUBLIC = {
    "ActivationStore",
    "BACKEND_NAMES",
    "BackboneModel",
    "BackendClosedError",
    "BackendOptions",
    "BackendUnavailableError",
    "BudgetExceededError",
    "DenseLayer",
    "DenseStack",
    "ExportMismatchError",
    "FitResult",
    "LoRAConfig",
    "ModelLoadError",
    "ParameterError",
    "RuntimeBackendError",
    "SignatureError",
    "TrainConfig",
    "TrainSignatureModel",
    "TrainingBackend",
    "TrainingBudget",
    "TrainingData",
    "TrainingDivergedError",
    "UnknownBackendError",
    "UnsupportedFeatureError",
    "available_backends",
    "backend_for_model",
    "create_backend",
    "estimate_training_bytes",
    "init_lora",
    "init_parameters",
    "merge_lora",
    "unmerge_lora",
}


def test_all_is_exactly_the_public_set_and_sorted() -> None:
    assert set(runtimes.__all__) == PUBLIC
    assert runtimes.__all__ == sorted(runtimes.__all__)
    for name in runtimes.__all__:
        assert getattr(runtimes, name) is not None


def test_every_error_is_in_one_family_and_drawn_in_the_docstring() -> None:
    doc = _exceptions.__doc__ or ""
    for name in _exceptions.__all__:
        cls = getattr(_exceptions, name)
        assert issubclass(cls, runtimes.RuntimeBackendError)
        assert name in doc
        assert not issubclass(cls, (ValueError, TypeError, MemoryError))


def test_every_public_name_has_a_docstring() -> None:
    for name in runtimes.__all__:
        obj = getattr(runtimes, name)
        if callable(obj):
            assert obj.__doc__, name
