"""The names both sides of a round use: record names, task-config keys, metric names, codes and message kinds.

The server plugin (:mod:`flclient.server`) and the device (:mod:`flclient._task`) import these; neither spells a
key as a string literal of its own, so a key renamed here is renamed for both.
"""

from __future__ import annotations

from typing import Final

__all__ = ["AGGREGATIONS", "SERVER_OPTIMIZERS", "Code", "Key", "Kind", "Metric", "Record"]

AGGREGATIONS: Final = ("fedavg", "mean", "median", "trimmed-mean")
"""The server's aggregation rules (run config ``aggregation``)."""
SERVER_OPTIMIZERS: Final = ("fedavg", "fedavgm", "fedadam")
"""The server optimisers (run config ``server-optimizer``)."""


class Record:
    """Names of the records in a message's content."""

    CONFIG: Final = "config"
    ARRAYS: Final = "arrays"
    METRICS: Final = "metrics"
    UPDATE: Final = "update"
    STATS: Final = "stats"
    DEVICE: Final = "device"
    SIGNATURE: Final = "signature"
    SECAGG: Final = "secagg"
    # Array names inside records.
    PAYLOAD: Final = "payload"  # the encoded update bytes (uint8) in the "update" record
    SUM: Final = "sum"
    SUMSQ: Final = "sumsq"
    COUNT: Final = "count"
    # Value names inside the "secagg", "signature" and "device" ConfigRecords.
    SECAGG_REQUEST: Final = "request"
    SECAGG_REPLY: Final = "reply"
    UPDATE_SIGNATURE: Final = "update-signature"
    UPDATE_KEY: Final = "update-key"
    DEVICE_CLASS: Final = "device-class"
    BACKENDS: Final = "backends"
    FEATURE_ABIS: Final = "feature-abis"
    RUNTIME_VERSION: Final = "runtime-version"


class Key:
    """Keys of a task's ``"config"`` record."""

    # What to run
    QUERY: Final = "query"
    MODEL_SPEC: Final = "model-spec"
    PERSONAL_LAYERS: Final = "personal-layers"
    # Training settings
    EPOCHS: Final = "epochs"
    BATCH_SIZE: Final = "batch-size"
    LR: Final = "lr"
    OPTIMIZER: Final = "optimizer"
    SEED: Final = "seed"
    EVAL_FRACTION: Final = "eval-fraction"
    PROXIMAL_MU: Final = "proximal-mu"
    WEIGHT_DECAY: Final = "weight-decay"
    # The round
    SERVER_ROUND: Final = "server-round"
    MODEL_VERSION: Final = "model-version"
    RUN_ID: Final = "run-id"
    # Artifact pins and trust
    FEATURE_MODULE: Final = "feature-module"
    FEATURE_MODULE_SHA256: Final = "feature-module-sha256"
    MODEL_PIN: Final = "model-pin"
    MODEL_SHA256: Final = "model-sha256"
    BACKBONE: Final = "backbone"
    BACKBONE_SHA256: Final = "backbone-sha256"
    MODEL_SIGNATURE: Final = "model-signature"
    # Features
    FEATURE_SCALE: Final = "feature-scale"
    SCALER: Final = "scaler"
    SCALER_VERSION: Final = "scaler-version"
    # The update
    UPDATE_CODEC: Final = "update-codec"
    CLIP_NORM: Final = "clip-norm"
    TOPK_FRACTION: Final = "topk-fraction"
    DP_MODE: Final = "dp-mode"
    DP_NOISE_MULTIPLIER: Final = "dp-noise-multiplier"
    SECAGG_BITS: Final = "secagg-bits"
    # Requirements (checked against the device's capabilities before any work)
    MIN_APP_VERSION: Final = "min-app-version"
    MIN_RUNTIME_VERSION: Final = "min-runtime-version"
    MAX_RUNTIME_MAJOR: Final = "max-runtime-major"
    FEATURE_ABI: Final = "feature-abi"
    BACKEND: Final = "backend"
    MODEL_FORMAT: Final = "model-format"


class Metric:
    """Names in a reply's ``"metrics"`` record."""

    NUM_EXAMPLES: Final = "num-examples"
    EVAL_EXAMPLES: Final = "eval-examples"
    EVAL_LOSS: Final = "eval-loss"
    EVAL_ACC: Final = "eval-acc"
    TRAIN_LOSS: Final = "train-loss"
    TRAIN_S: Final = "train-s"
    FEATURES_S: Final = "features-s"
    MODEL_VERSION: Final = "model-version"
    UPDATE_BYTES: Final = "update-bytes"
    BYTES_DOWN: Final = "bytes-down"
    DEVICE_S: Final = "device-s"
    ACTIVATIONS_REUSED: Final = "activations-reused"


class Kind:
    """Message types (Flower's, without a ``.suffix``) and the kinds of an error reply."""

    TRAIN: Final = "train"
    EVALUATE: Final = "evaluate"
    QUERY: Final = "query"
    # Error reply kinds
    DECLINED: Final = "declined"  # the device would not run the task (a reason code says why)
    REJECTED: Final = "rejected"  # the instruction could not be decoded (hostile or broken content)
    FAILED: Final = "failed"  # running it raised


class Code:
    """Machine-readable codes of an error reply (why a device declined, rejected or failed a task)."""

    BAD_CONFIG: Final = "bad-config"
    NOT_ELIGIBLE: Final = "not-eligible"
    NO_MODEL: Final = "no-model"
    NO_DATA: Final = "no-data"
    DATA_MISMATCH: Final = "data-mismatch"
    MODEL_MISMATCH: Final = "model-mismatch"
    NO_FEATURE_PIN: Final = "no-feature-pin"
    FEATURE_MODULE_PIN: Final = "feature-module-pin"
    FEATURE_MODULE_INVALID: Final = "feature-module-invalid"
    BACKBONE_PIN: Final = "backbone-pin"
    STALE_SCALER: Final = "stale-scaler"
    PRIVACY_BUDGET: Final = "privacy-budget"
    UNSUPPORTED_MESSAGE_TYPE: Final = "unsupported-message-type"
    MODEL_UNTRUSTED: Final = "model-untrusted"
    MODEL_SIGNATURE_MISSING: Final = "model-signature-missing"
    MODEL_SIGNATURE_INVALID: Final = "model-signature-invalid"
    # Compatibility (the task's requirements against the device's capabilities)
    APP_VERSION: Final = "app-version"
    RUNTIME_VERSION: Final = "runtime-version"
    MODEL_FORMAT: Final = "model-format"
    FEATURE_ABI: Final = "feature-abi"
    BACKEND_UNAVAILABLE: Final = "backend-unavailable"
    # A round abandoned while training (the gate's may-continue failed)
    ABANDONED: Final = "abandoned"
    # Rejected / failed instructions
    UNDECODABLE: Final = "undecodable"
    RUN_NOT_RUNNING: Final = "run-not-running"
