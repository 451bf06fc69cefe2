"""The replies a device sends: train, evaluate, query (stats, capabilities) and SecAgg replies, and error replies.

Replies keep Flower's layout (``"arrays"`` + ``"metrics"`` with ``num-examples``), so a Flower strategy can read
them. An error reply is a Flower ``Error`` whose ``reason`` is :meth:`ErrorReply.to_reason`: a small JSON object
with the kind (declined / rejected / failed), a machine-readable code and the detail, never text to split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, Union

import numpy as np

from .._errors import ProtocolError
from ..fleet._objects import ArrayRecord, ConfigRecord, MetricRecord, MetricValue, RecordDict
from ._names import Kind, Metric, Record
from ._values import ValueReader, _finite, loads_json

__all__ = [
    "DeviceInfo",
    "ErrorReply",
    "EvaluateReply",
    "QueryReply",
    "Reply",
    "ReplyMetrics",
    "SecAggReply",
    "StatsReply",
    "TrainReply",
    "UpdateSignature",
]

_METRIC_FIELDS = {
    "num_examples": Metric.NUM_EXAMPLES,
    "eval_examples": Metric.EVAL_EXAMPLES,
    "eval_loss": Metric.EVAL_LOSS,
    "eval_acc": Metric.EVAL_ACC,
    "train_loss": Metric.TRAIN_LOSS,
    "train_s": Metric.TRAIN_S,
    "features_s": Metric.FEATURES_S,
    "model_version": Metric.MODEL_VERSION,
    "update_bytes": Metric.UPDATE_BYTES,
    "bytes_down": Metric.BYTES_DOWN,
    "device_s": Metric.DEVICE_S,
    "activations_reused": Metric.ACTIVATIONS_REUSED,
}
_INT_METRICS = {"num_examples", "eval_examples", "model_version", "update_bytes", "bytes_down", "activations_reused"}


@dataclass(frozen=True, kw_only=True)
class ReplyMetrics:
    """A reply's ``"metrics"`` record (None: not reported). Every value is finite: the Fleet object codec
    refuses NaN and infinities, so a loss no batch produced is left out, not NaN."""

    num_examples: int = 0
    eval_examples: int | None = None
    eval_loss: float | None = None
    eval_acc: float | None = None
    train_loss: float | None = None
    train_s: float | None = None
    features_s: float | None = None
    model_version: int | None = None
    update_bytes: int | None = None
    bytes_down: int | None = None
    device_s: float | None = None
    activations_reused: int | None = None  # a backbone model's round: 1 when the backbone's cached outputs were used

    def __post_init__(self) -> None:
        for name in _METRIC_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _INT_METRICS:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                    raise ValueError(
                        f"metric {_METRIC_FIELDS[name]!r} must be a whole number in [0, 2^63), got {value!r}"
                    )
            elif _finite(value) is None:
                raise ValueError(f"metric {_METRIC_FIELDS[name]!r} must be a finite number, got {value!r}")

    def to_record(self) -> MetricRecord:
        """The ``"metrics"`` record."""
        out: dict[str, MetricValue] = {}
        for name, key in _METRIC_FIELDS.items():
            value = getattr(self, name)
            if value is not None:  # a float metric given an int is sent as a float (as it is read back)
                out[key] = value if name in _INT_METRICS else float(value)
        return MetricRecord(out)

    def to_dict(self) -> dict[str, Any]:
        """The reported metrics by wire name (what servers average)."""
        return dict(self.to_record().values)

    @classmethod
    def from_record(cls, record: object) -> ReplyMetrics:
        """Decode a ``"metrics"`` record; raises :class:`~flclient.ProtocolError` naming the metric."""
        if not isinstance(record, MetricRecord):
            raise ProtocolError(Record.METRICS, "a reply needs a 'metrics' MetricRecord")
        reader = ValueReader(record.values, where="metrics")
        values: dict[str, Any] = {}
        for name, key in _METRIC_FIELDS.items():
            if not reader.has(key):
                continue
            if name in _INT_METRICS:
                values[name] = reader.whole(key, minimum=0)
            else:
                values[name] = reader.number(key)
        if Metric.NUM_EXAMPLES not in record.values:
            raise ProtocolError(Metric.NUM_EXAMPLES, "a reply's metrics lack 'num-examples'")
        reader.finish()
        return cls(**values)

    def with_transfer(self, *, bytes_down: int, device_s: float) -> ReplyMetrics:
        """These metrics plus what the node measured around the task."""
        return replace(self, bytes_down=bytes_down, device_s=device_s)


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """What a device declares about itself in every reply (the ``"device"`` record): its class and what it can
    run, so the server can report per class and plan which devices can take a task."""

    device_class: str | None = None
    backends: tuple[str, ...] = ()
    feature_abis: tuple[int, ...] = ()
    runtime_version: str | None = None

    def __post_init__(self) -> None:
        # The bounds from_record() reads with, so that a device learns of an unsendable record when it builds it.
        if self.device_class is not None and len(self.device_class) > 128:
            raise ValueError(f"device-class must be at most 128 characters, got {len(self.device_class)}")
        if self.runtime_version is not None and len(self.runtime_version) > 64:
            raise ValueError(f"runtime-version must be at most 64 characters, got {len(self.runtime_version)}")

    def to_record(self) -> ConfigRecord:
        """The ``"device"`` record."""
        out: dict[str, Any] = {}
        if self.device_class is not None:  # "" is sent too, so that decoding gives back this very record
            out[Record.DEVICE_CLASS] = self.device_class
        if self.backends:
            out[Record.BACKENDS] = list(self.backends)
        if self.feature_abis:
            out[Record.FEATURE_ABIS] = list(self.feature_abis)
        if self.runtime_version is not None:
            out[Record.RUNTIME_VERSION] = self.runtime_version
        return ConfigRecord(out)

    @classmethod
    def from_record(cls, record: object) -> DeviceInfo:
        """Decode a ``"device"`` record."""
        if not isinstance(record, ConfigRecord):
            raise ProtocolError(Record.DEVICE, "the 'device' record must be a ConfigRecord")
        r = ValueReader(record.values, where="device")
        info = cls(
            device_class=r.optional_text(Record.DEVICE_CLASS, max_len=128),
            backends=r.texts(Record.BACKENDS),
            feature_abis=r.wholes(Record.FEATURE_ABIS),
            runtime_version=r.optional_text(Record.RUNTIME_VERSION, max_len=64),
        )
        r.finish()
        return info


@dataclass(frozen=True, kw_only=True)
class UpdateSignature:
    """The device's Ed25519 signature over its update and its public key (the ``"signature"`` record)."""

    signature: bytes
    public_key: bytes

    def to_record(self) -> ConfigRecord:
        """The ``"signature"`` record."""
        return ConfigRecord({Record.UPDATE_SIGNATURE: self.signature, Record.UPDATE_KEY: self.public_key})

    @classmethod
    def from_record(cls, record: object) -> UpdateSignature:
        """Decode a ``"signature"`` record."""
        if not isinstance(record, ConfigRecord):
            raise ProtocolError(Record.SIGNATURE, "the 'signature' record must be a ConfigRecord")
        r = ValueReader(record.values, where="signature")
        sig, key = r.blob(Record.UPDATE_SIGNATURE), r.blob(Record.UPDATE_KEY)
        r.finish()
        if sig is None or key is None:
            raise ProtocolError(Record.SIGNATURE, "the 'signature' record needs 'update-signature' and 'update-key'")
        return cls(signature=sig, public_key=key)


def _records(content: RecordDict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(content) - allowed)
    if unknown:
        raise ProtocolError(unknown[0], f"a {what} reply has unknown record(s) {unknown}")


def _device(content: RecordDict) -> DeviceInfo | None:
    rec = content.get(Record.DEVICE)
    return None if rec is None else DeviceInfo.from_record(rec)


@dataclass(frozen=True, kw_only=True)
class TrainReply:
    """A trained model: the new parameters (``arrays``) or an encoded update (``payload``), exactly one of them."""

    metrics: ReplyMetrics
    arrays: Mapping[str, np.ndarray] | None = field(default=None, compare=False)
    payload: bytes | None = None
    device: DeviceInfo | None = None
    signature: UpdateSignature | None = None

    kind = Kind.TRAIN

    def __post_init__(self) -> None:
        if (self.arrays is None) == (self.payload is None):
            raise ValueError("a train reply carries either the new arrays or an encoded update payload")

    def to_records(self) -> RecordDict:
        """The reply's content."""
        out: RecordDict = {}
        if self.arrays is not None:
            out[Record.ARRAYS] = ArrayRecord(dict(self.arrays))
        else:
            assert self.payload is not None
            out[Record.UPDATE] = ArrayRecord({Record.PAYLOAD: np.frombuffer(self.payload, dtype=np.uint8)})
        out[Record.METRICS] = self.metrics.to_record()
        if self.device is not None:
            out[Record.DEVICE] = self.device.to_record()
        if self.signature is not None:
            out[Record.SIGNATURE] = self.signature.to_record()
        return out

    @classmethod
    def from_records(cls, content: RecordDict) -> TrainReply:
        """Decode a reply's content; raises :class:`~flclient.ProtocolError` naming the record or key."""
        _records(content, {Record.ARRAYS, Record.UPDATE, Record.METRICS, Record.DEVICE, Record.SIGNATURE}, "train")
        arrays = content.get(Record.ARRAYS)
        update = content.get(Record.UPDATE)
        payload = None
        if update is not None:
            if not isinstance(update, ArrayRecord) or set(update.arrays) != {Record.PAYLOAD}:
                raise ProtocolError(Record.UPDATE, "the 'update' record must hold exactly one 'payload' array")
            raw = np.asarray(update.arrays[Record.PAYLOAD])
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ProtocolError(Record.PAYLOAD, "the update 'payload' must be a 1-d uint8 array")
            payload = raw.tobytes()
        if arrays is not None and not isinstance(arrays, ArrayRecord):
            raise ProtocolError(Record.ARRAYS, "the 'arrays' record must be an ArrayRecord")
        if (arrays is None) == (payload is None):
            raise ProtocolError(Record.ARRAYS, "a train reply carries either 'arrays' or an 'update' payload")
        sig = content.get(Record.SIGNATURE)
        return cls(
            metrics=ReplyMetrics.from_record(content.get(Record.METRICS)),
            arrays=None if arrays is None else dict(arrays.arrays),
            payload=payload,
            device=_device(content),
            signature=None if sig is None else UpdateSignature.from_record(sig),
        )


R = TypeVar("R", bound="_MetricsReply")


@dataclass(frozen=True, kw_only=True)
class _MetricsReply:
    """A reply of metrics and what the device declares about itself (evaluate and query replies)."""

    metrics: ReplyMetrics
    device: DeviceInfo | None = None

    def to_records(self) -> RecordDict:
        """The reply's content."""
        out: RecordDict = {Record.METRICS: self.metrics.to_record()}
        if self.device is not None:
            out[Record.DEVICE] = self.device.to_record()
        return out

    @classmethod
    def from_records(cls: type[R], content: RecordDict) -> R:
        """Decode a reply's content."""
        _records(content, {Record.METRICS, Record.DEVICE}, str(cls.kind))  # type: ignore[attr-defined]
        return cls(metrics=ReplyMetrics.from_record(content.get(Record.METRICS)), device=_device(content))


@dataclass(frozen=True, kw_only=True)
class EvaluateReply(_MetricsReply):
    """Held-out metrics of the global model on the device."""

    kind = Kind.EVALUATE


@dataclass(frozen=True, kw_only=True)
class QueryReply(_MetricsReply):
    """The answer to a ``count`` or ``capabilities`` query: the number of examples and what the device is."""

    kind = Kind.QUERY


@dataclass(frozen=True, kw_only=True, eq=False)
class StatsReply:
    """The answer to a ``feature-stats`` query: per-column sum and sum of squares, and the row count."""

    sum: np.ndarray
    sumsq: np.ndarray
    count: int
    metrics: ReplyMetrics

    kind = Kind.QUERY

    def __post_init__(self) -> None:
        if np.shape(self.sum) != np.shape(self.sumsq) or np.ndim(self.sum) != 1:
            raise ValueError("stats 'sum' and 'sumsq' must be 1-d arrays of the same width")
        for column in (self.sum, self.sumsq):  # a NaN or an infinity would poison the federated scaler built from them
            if np.asarray(column).dtype.kind not in "biuf" or not np.isfinite(column).all():
                raise ValueError("stats 'sum' and 'sumsq' must be finite real numbers")
        if not 0 <= self.count < 2**63:  # sent as an int64
            raise ValueError(f"stats 'count' must be in [0, 2^63), got {self.count}")

    def to_records(self) -> RecordDict:
        """The reply's content."""
        stats = {
            Record.SUM: np.asarray(self.sum, dtype=np.float64),
            Record.SUMSQ: np.asarray(self.sumsq, dtype=np.float64),
            Record.COUNT: np.array([self.count], dtype=np.int64),
        }
        return {Record.STATS: ArrayRecord(stats), Record.METRICS: self.metrics.to_record()}

    @classmethod
    def from_records(cls, content: RecordDict) -> StatsReply:
        """Decode a reply's content."""
        _records(content, {Record.STATS, Record.METRICS}, "stats")
        rec = content.get(Record.STATS)
        if not isinstance(rec, ArrayRecord) or set(rec.arrays) != {Record.SUM, Record.SUMSQ, Record.COUNT}:
            raise ProtocolError(Record.STATS, "the 'stats' record must hold exactly 'sum', 'sumsq' and 'count'")
        if any(np.asarray(rec.arrays[k]).dtype.kind not in "biuf" for k in (Record.SUM, Record.SUMSQ)):
            raise ProtocolError(Record.STATS, "stats 'sum' and 'sumsq' must be arrays of real numbers")
        count = np.asarray(rec.arrays[Record.COUNT])
        if count.dtype.kind not in "iu" or count.size != 1:
            raise ProtocolError(Record.COUNT, "stats 'count' must be one integer")
        try:
            return cls(
                sum=np.asarray(rec.arrays[Record.SUM], dtype=np.float64),
                sumsq=np.asarray(rec.arrays[Record.SUMSQ], dtype=np.float64),
                count=int(count.reshape(-1)[0]),
                metrics=ReplyMetrics.from_record(content.get(Record.METRICS)),
            )
        except (ValueError, TypeError) as exc:
            raise ProtocolError(Record.STATS, f"stats: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class SecAggReply:
    """A SecAgg+ stage's answer bytes (and, at the collect stage, the training metrics)."""

    reply: bytes
    metrics: ReplyMetrics | None = None

    kind = Kind.TRAIN

    def to_records(self) -> RecordDict:
        """The reply's content."""
        out: RecordDict = {Record.SECAGG: ConfigRecord({Record.SECAGG_REPLY: self.reply})}
        if self.metrics is not None:
            out[Record.METRICS] = self.metrics.to_record()
        return out

    @classmethod
    def from_records(cls, content: RecordDict) -> SecAggReply:
        """Decode a reply's content."""
        _records(content, {Record.SECAGG, Record.METRICS}, "secagg")
        rec = content.get(Record.SECAGG)
        if not isinstance(rec, ConfigRecord):
            raise ProtocolError(Record.SECAGG, "a SecAgg reply needs a 'secagg' ConfigRecord")
        r = ValueReader(rec.values, where="secagg")
        reply = r.blob(Record.SECAGG_REPLY)
        r.finish()
        if reply is None:
            raise ProtocolError(Record.SECAGG_REPLY, "the 'secagg' record lacks its 'reply' bytes")
        metrics = content.get(Record.METRICS)
        return cls(reply=reply, metrics=None if metrics is None else ReplyMetrics.from_record(metrics))


ErrorKind = Literal["declined", "rejected", "failed"]
_ERROR_KINDS: tuple[ErrorKind, ...] = ("declined", "rejected", "failed")
_MAX_REASON = 8192


@dataclass(frozen=True, kw_only=True)
class ErrorReply:
    """Why a device did not answer a task with a result: ``kind``, a machine-readable ``code`` (a
    :class:`~flclient.protocol.Code`, or an exception's name for ``failed``), the human ``detail`` and, for
    ``not-eligible``, the gate's coarse ``reasons``."""

    kind: ErrorKind
    code: str
    detail: str = ""
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _ERROR_KINDS:
            raise ValueError(f"an error reply's kind is one of {_ERROR_KINDS}, got {self.kind!r}")
        if not self.code or len(self.code) > 64:
            raise ValueError("an error reply needs a code of 1 to 64 characters")

    def to_reason(self) -> str:
        """The Flower ``Error.reason`` text (JSON, bounded in size)."""
        detail = self.detail if len(self.detail) <= _MAX_REASON else self.detail[: _MAX_REASON - 3] + "..."
        body: dict[str, Any] = {"kind": self.kind, "code": self.code, "detail": detail}
        if self.reasons:
            body["reasons"] = list(self.reasons)
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_reason(cls, text: str) -> ErrorReply:
        """Decode a Flower ``Error.reason``; raises :class:`~flclient.ProtocolError` when it is not one of ours."""
        raw = loads_json(text, where="error")
        if not isinstance(raw, dict):
            raise ProtocolError("error", "an error reply's reason must be a JSON object")
        r = ValueReader(raw, where="error")
        kind = r.choice("kind", _ERROR_KINDS)
        code = r.text("code", max_len=64)
        detail = r.text("detail", "", max_len=_MAX_REASON)
        reasons = r.texts("reasons")
        r.finish()
        try:
            return cls(kind=kind, code=code, detail=detail, reasons=reasons)
        except ValueError as exc:  # kind was read with choice() and code's length bounded: an empty code
            raise ProtocolError("code", f"error 'code': {exc}") from exc

    @property
    def label(self) -> str:
        """How the server counts it: the code (compatibility and gate refusals are codes of their own)."""
        return self.code


Reply = Union[TrainReply, EvaluateReply, QueryReply, StatsReply, SecAggReply]  # noqa: UP007
"""Every successful reply a device can send."""
