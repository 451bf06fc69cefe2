"""The typed round contract between the server plugin and the device (importable without flwr, tuf or onnxruntime).

Every instruction (:class:`TrainTask`, :class:`EvaluateTask`, :class:`QueryTask`, :class:`SecAggStage`) and every
reply (:class:`TrainReply`, :class:`EvaluateReply`, :class:`QueryReply`, :class:`StatsReply`,
:class:`SecAggReply`, :class:`ErrorReply`) is a frozen, validated dataclass with one ``to_records`` /
``from_records`` pair over the records of a Flower message. The names both sides use - records, config keys,
metrics, error codes - are the constants :class:`Record`, :class:`Key`, :class:`Metric` and :class:`Code`.
Decoding refuses wrong types, missing keys and unknown keys with a :class:`~flclient.ProtocolError` naming the key.

Example::

    from flclient.protocol import DenseLayerSpec, DenseModelSpec, TrainTask, decode_task

    model = DenseModelSpec(layers=(DenseLayerSpec(in_features=4, out_features=2),))
    content = TrainTask(model=model).to_records()
    assert decode_task("train", content) == TrainTask(model=model)
"""

from ..gate._compat import TaskRequirements
from ._model import (
    ACTIVATIONS,
    BACKBONE_FORMATS,
    LOSSES,
    BackboneHeadSpec,
    BackboneLoRASpec,
    DenseLayerSpec,
    DenseModelSpec,
    ModelSpec,
    model_spec_from_json,
)
from ._names import AGGREGATIONS, SERVER_OPTIMIZERS, Code, Key, Kind, Metric, Record
from ._pins import ArtifactPins, BackbonePin, FeaturePin, ModelPin
from ._plan import TaskPlan, plan_from_config
from ._replies import (
    DeviceInfo,
    ErrorReply,
    EvaluateReply,
    QueryReply,
    Reply,
    ReplyMetrics,
    SecAggReply,
    StatsReply,
    TrainReply,
    UpdateSignature,
)
from ._runconfig import RunConfig, run_config_reference
from ._tasks import (
    QUERIES,
    EvaluateTask,
    FeatureSpec,
    QueryTask,
    RoundInfo,
    Scaler,
    SecAggStage,
    Task,
    TrainingSettings,
    TrainTask,
    decode_task,
)
from ._update import DP_MODES, UPDATE_CODECS, UpdateSpec
from ._values import ValueReader, loads_json

__all__ = [
    "ACTIVATIONS",
    "AGGREGATIONS",
    "BACKBONE_FORMATS",
    "DP_MODES",
    "LOSSES",
    "QUERIES",
    "SERVER_OPTIMIZERS",
    "UPDATE_CODECS",
    "ArtifactPins",
    "BackboneHeadSpec",
    "BackboneLoRASpec",
    "BackbonePin",
    "Code",
    "DenseLayerSpec",
    "DenseModelSpec",
    "DeviceInfo",
    "ErrorReply",
    "EvaluateReply",
    "EvaluateTask",
    "FeaturePin",
    "FeatureSpec",
    "Key",
    "Kind",
    "Metric",
    "ModelPin",
    "ModelSpec",
    "QueryReply",
    "QueryTask",
    "Record",
    "Reply",
    "ReplyMetrics",
    "RoundInfo",
    "RunConfig",
    "Scaler",
    "SecAggReply",
    "SecAggStage",
    "StatsReply",
    "Task",
    "TaskPlan",
    "TaskRequirements",
    "TrainReply",
    "TrainTask",
    "TrainingSettings",
    "UpdateSignature",
    "UpdateSpec",
    "ValueReader",
    "decode_task",
    "loads_json",
    "model_spec_from_json",
    "plan_from_config",
    "run_config_reference",
]
