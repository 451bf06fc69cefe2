"""On-device training runtimes: small heads and LoRA adapters trained in numpy, on top of frozen backbones
run by ONNX Runtime or LiteRT, or through a .tflite model's own train signature.

Example::

    import numpy as np
    from runtimes import DenseLayer, DenseStack, TrainConfig, TrainingData, create_backend, init_parameters

    head = DenseStack(layers=(DenseLayer(in_features=64, out_features=10),), loss="cross_entropy")
    with create_backend("numpy") as backend:
        backend.load(head, init_parameters(head, rng=np.random.default_rng(0)))
        result = backend.fit(TrainingData(x=x, y=y), TrainConfig(epochs=3, learning_rate=0.1))
"""

from ._backbone import ActivationStore
from ._dense import init_lora, init_parameters, merge_lora, unmerge_lora
from ._exceptions import (
    BackendClosedError,
    BackendUnavailableError,
    BudgetExceededError,
    ExportMismatchError,
    ModelLoadError,
    ParameterError,
    RuntimeBackendError,
    SignatureError,
    TrainingDivergedError,
    UnknownBackendError,
    UnsupportedFeatureError,
)
from ._protocol import TrainingBackend
from ._registry import BACKEND_NAMES, BackendOptions, available_backends, backend_for_model, create_backend
from ._spec import (
    BackboneModel,
    DenseLayer,
    DenseStack,
    FitResult,
    LoRAConfig,
    TrainConfig,
    TrainingBudget,
    TrainingData,
    TrainSignatureModel,
)
from ._training import estimate_training_bytes

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/runtimes/test_public_api.py checks
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
]
