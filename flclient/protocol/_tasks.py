"""The instructions a server sends: train, evaluate and query tasks, and SecAgg+ stages.

A task's content is Flower's layout: the global model in an ``"arrays"`` ArrayRecord (optional when it is pinned
through TUF) and everything else in the ``"config"`` ConfigRecord, keyed by :class:`~flclient.protocol.Key`. Each
class has one ``to_records`` / ``from_records`` pair; ``from_records`` refuses wrong types, missing keys and
unknown keys with a :class:`~flclient.ProtocolError` naming the key. :func:`decode_task` picks the class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

import numpy as np

from .._errors import ProtocolError
from ..fleet._objects import ArrayRecord, ConfigRecord, ConfigValue, RecordDict
from ..gate._compat import TaskRequirements, parse_version
from ._model import ModelSpec, model_spec_from_json
from ._names import Key, Kind, Record
from ._pins import ArtifactPins
from ._update import UpdateSpec
from ._values import ValueReader, loads_json

__all__ = [
    "QUERIES",
    "EvaluateTask",
    "FeatureSpec",
    "QueryTask",
    "RoundInfo",
    "Scaler",
    "SecAggStage",
    "Task",
    "TrainTask",
    "TrainingSettings",
    "decode_task",
    "read_requirements",
    "requirements_values",
]

QueryName = Literal["count", "feature-stats", "capabilities"]
QUERIES: tuple[QueryName, ...] = ("count", "feature-stats", "capabilities")
OPTIMIZERS: tuple[Literal["sgd", "adam"], ...] = ("sgd", "adam")
_MAX_SCALER_WIDTH = 1 << 16


@dataclass(frozen=True, kw_only=True)
class RoundInfo:
    """Which round and model version a task belongs to, and the run (signatures are bound to all three)."""

    server_round: int = 0
    model_version: int = 0
    run_id: int = 0

    def __post_init__(self) -> None:
        for name, bits in (("server_round", 63), ("model_version", 63), ("run_id", 64)):  # the run id is a string
            value = getattr(self, name)
            if not 0 <= value < 2**bits:
                raise ValueError(f"{name} must be in [0, 2^{bits}), got {value}")

    def to_values(self) -> dict[str, ConfigValue]:
        """The task-config values (the run id as a decimal string: Flower's ids are uint64)."""
        out: dict[str, ConfigValue] = {Key.SERVER_ROUND: self.server_round, Key.MODEL_VERSION: self.model_version}
        if self.run_id:
            out[Key.RUN_ID] = str(self.run_id)
        return out

    @classmethod
    def read(cls, reader: ValueReader) -> RoundInfo:
        """Read the round keys."""
        run_id = 0
        if reader.has(Key.RUN_ID):
            text = reader.text(Key.RUN_ID, max_len=20)
            if not (text.isascii() and text.isdigit()) or int(text) >= 2**64:  # isdigit() alone takes "²"
                raise ProtocolError(Key.RUN_ID, f"config 'run-id' must be a decimal uint64 string, got {text!r}")
            run_id = int(text)
        return cls(
            server_round=reader.whole(Key.SERVER_ROUND, 0, minimum=0),
            model_version=reader.whole(Key.MODEL_VERSION, 0, minimum=0),
            run_id=run_id,
        )


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """Local training settings (``runtimes.TrainConfig``) and the held-out share for evaluation."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = 0
    eval_fraction: float = 0.2
    proximal_mu: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= 10_000:
            raise ValueError(f"epochs must be in [1, 10000], got {self.epochs}")
        if not 1 <= self.batch_size <= 1 << 20:
            raise ValueError(f"batch-size must be in [1, 2^20], got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if not (math.isfinite(self.proximal_mu) and self.proximal_mu >= 0):
            raise ValueError(f"proximal-mu must be a finite number >= 0, got {self.proximal_mu}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")

    def to_values(self) -> dict[str, ConfigValue]:
        """The task-config values."""
        out: dict[str, ConfigValue] = {
            Key.EPOCHS: self.epochs,
            Key.BATCH_SIZE: self.batch_size,
            Key.LR: self.lr,
            Key.OPTIMIZER: self.optimizer,
            Key.SEED: self.seed,
            Key.EVAL_FRACTION: self.eval_fraction,
        }
        if self.proximal_mu:
            out[Key.PROXIMAL_MU] = self.proximal_mu
        if self.weight_decay:
            out[Key.WEIGHT_DECAY] = self.weight_decay
        return out

    @classmethod
    def read(cls, reader: ValueReader) -> TrainingSettings:
        """Read the training keys."""
        values = dict(
            epochs=reader.whole(Key.EPOCHS, 1, minimum=1, maximum=10_000),
            batch_size=reader.whole(Key.BATCH_SIZE, 32, minimum=1, maximum=1 << 20),
            lr=reader.number(Key.LR, 0.05, above=0.0),
            optimizer=reader.choice(Key.OPTIMIZER, OPTIMIZERS, default="sgd"),
            seed=reader.whole(Key.SEED, 0, minimum=0, maximum=2**63 - 1),
            eval_fraction=reader.number(Key.EVAL_FRACTION, 0.2, minimum=0.0, maximum=math.nextafter(1.0, 0.0)),
            proximal_mu=reader.number(Key.PROXIMAL_MU, 0.0, minimum=0.0),
            weight_decay=reader.number(Key.WEIGHT_DECAY, 0.0, minimum=0.0),
        )
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scaler:
    """A federated standardiser of a feature module's numeric columns: ``(v - mean) / std``, versioned."""

    version: int
    module_sha256: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.version < 2**63:
            raise ValueError(f"a scaler version counts from 1 (below 2^63), got {self.version}")
        if not 0 <= self.count < 2**63:
            raise ValueError(f"a scaler's count must be in [0, 2^63), got {self.count}")
        if len(self.module_sha256) > 64:
            raise ValueError(f"a scaler's module-sha256 is at most 64 characters, got {len(self.module_sha256)}")
        if len(self.mean) != len(self.std) or len(self.mean) > _MAX_SCALER_WIDTH:
            raise ValueError(f"a scaler needs as many means as stds (<= {_MAX_SCALER_WIDTH})")
        if not all(math.isfinite(m) for m in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError("a scaler's means must be finite and its stds finite and > 0")

    def to_json(self) -> str:
        """The ``scaler`` config value."""
        import json

        return json.dumps(
            {
                "version": self.version,
                "module-sha256": self.module_sha256,
                "mean": list(self.mean),
                "std": list(self.std),
                "count": self.count,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        """Parse a ``scaler`` value; raises :class:`~flclient.ProtocolError` (key ``scaler``)."""
        raw = loads_json(text, where=Key.SCALER)
        if not isinstance(raw, dict):
            raise ProtocolError(Key.SCALER, "scaler must be a JSON object with version, module-sha256, mean and std")
        r = ValueReader(raw, where=Key.SCALER)
        try:
            scaler = cls(
                version=r.whole("version", minimum=1),
                module_sha256=r.text("module-sha256", max_len=64),
                mean=_floats(r, "mean"),
                std=_floats(r, "std"),
                count=r.whole("count", 0, minimum=0),
            )
            r.finish()
        except ProtocolError as exc:  # the key is the config's; the message names the field inside the JSON
            raise ProtocolError(Key.SCALER, exc.detail) from exc
        except ValueError as exc:
            raise ProtocolError(Key.SCALER, f"scaler: {exc}") from exc
        return scaler


def _floats(reader: ValueReader, key: str) -> tuple[float, ...]:
    values = reader.numbers(key)
    if values is None:
        raise ProtocolError(key, f"scaler lacks the required key {key!r}")
    return values


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """How the device turns the feature module's output into model inputs.

    ``scale``: one divisor per numeric output column (in manifest order), or ``scaler``: a federated scaler of
    version ``scaler_version``. A task may name a scaler version without carrying one: the device declines it.
    """

    scale: tuple[float, ...] | None = None
    scaler: Scaler | None = None
    scaler_version: int | None = None

    def __post_init__(self) -> None:
        # What read() accepts, so that a server learns of an unsendable spec when it builds it.
        if self.scale is not None and (not self.scale or not all(math.isfinite(v) for v in self.scale)):
            raise ValueError(f"feature-scale must be one or more finite numbers, got {self.scale}")
        if self.scale is not None:  # the wire carries floats: an int above 2^53 must come back as it was sent
            object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        if self.scaler_version is not None and not 0 <= self.scaler_version < 2**63:
            raise ValueError(f"scaler-version must be in [0, 2^63), got {self.scaler_version}")

    def to_values(self) -> dict[str, ConfigValue]:
        """The task-config values."""
        out: dict[str, ConfigValue] = {}
        if self.scale is not None:
            out[Key.FEATURE_SCALE] = [float(v) for v in self.scale]  # one element type: the wire's lists are typed
        if self.scaler is not None:
            out[Key.SCALER] = self.scaler.to_json()
        if self.scaler_version is not None:
            out[Key.SCALER_VERSION] = self.scaler_version
        return out

    @classmethod
    def read(cls, reader: ValueReader) -> FeatureSpec:
        """Read the feature keys."""
        scaler_text = reader.optional_text(Key.SCALER, max_len=4 * 1024 * 1024)
        return cls(
            scale=reader.numbers(Key.FEATURE_SCALE),
            scaler=Scaler.from_json(scaler_text) if scaler_text is not None else None,
            scaler_version=_optional_whole(reader, Key.SCALER_VERSION, 0),
        )


def read_requirements(reader: ValueReader) -> TaskRequirements:
    """The task's stated requirements (checked with the compatibility matrix before any work)."""
    try:
        return TaskRequirements(
            min_app_version=_version(reader, Key.MIN_APP_VERSION),
            min_runtime_version=_version(reader, Key.MIN_RUNTIME_VERSION),
            max_runtime_major=_optional_whole(reader, Key.MAX_RUNTIME_MAJOR, 0),
            model_format=reader.optional_text(Key.MODEL_FORMAT, max_len=64),
            feature_abi=_optional_whole(reader, Key.FEATURE_ABI, 1),
            required_backends=tuple(reader.texts(Key.BACKEND)),
        )
    except ValueError as exc:  # pragma: no cover - each value was checked above
        raise ProtocolError(Key.MIN_RUNTIME_VERSION, str(exc)) from exc


def _optional_whole(reader: ValueReader, key: str, minimum: int) -> int | None:
    return reader.whole(key, minimum=minimum) if reader.has(key) else None


def _version(reader: ValueReader, key: str) -> str | None:
    text = reader.optional_text(key, max_len=40)
    if text is not None:
        try:
            parse_version(text)
        except ValueError as exc:
            raise ProtocolError(key, f"config {key!r}: {exc}") from exc
    return text


def requirements_values(req: TaskRequirements) -> dict[str, ConfigValue]:
    """The task-config values of stated requirements."""
    out: dict[str, ConfigValue] = {}
    if req.min_app_version is not None:
        out[Key.MIN_APP_VERSION] = req.min_app_version
    if req.min_runtime_version is not None:
        out[Key.MIN_RUNTIME_VERSION] = req.min_runtime_version
    if req.max_runtime_major is not None:
        out[Key.MAX_RUNTIME_MAJOR] = req.max_runtime_major
    if req.model_format is not None:
        out[Key.MODEL_FORMAT] = req.model_format
    if req.feature_abi is not None:
        out[Key.FEATURE_ABI] = req.feature_abi
    if req.required_backends:
        out[Key.BACKEND] = list(req.required_backends)
    return out


@dataclass(frozen=True, kw_only=True)
class _ModelTask:
    """What train and evaluate tasks share: the model, its pins, features, training settings and the round."""

    model: ModelSpec
    round: RoundInfo = field(default_factory=RoundInfo)
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    pins: ArtifactPins = field(default_factory=ArtifactPins)
    requirements: TaskRequirements = field(default_factory=TaskRequirements)
    personal_layers: int = 0
    model_signature: bytes | None = None
    arrays: Mapping[str, np.ndarray] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.model.personal_parameter_names(self.personal_layers)  # raises when it leaves no shared layer

    @property
    def personal_parameter_names(self) -> frozenset[str]:
        """The parameters of the device's private head (never uploaded)."""
        return self.model.personal_parameter_names(self.personal_layers)

    def evaluation(self) -> EvaluateTask:
        """The same model, round, pins, features and settings as an evaluate task (an update is training's)."""
        return EvaluateTask(**{f.name: getattr(self, f.name) for f in dataclasses.fields(_ModelTask)})

    def _values(self) -> dict[str, ConfigValue]:
        out: dict[str, ConfigValue] = {Key.MODEL_SPEC: self.model.to_json()}
        out.update(self.round.to_values())
        out.update(self.settings.to_values())
        out.update(self.features.to_values())
        out.update(self.pins.to_values())  # type: ignore[arg-type]
        out.update(requirements_values(self.requirements))
        if self.personal_layers:
            out[Key.PERSONAL_LAYERS] = self.personal_layers
        if self.model_signature is not None:
            out[Key.MODEL_SIGNATURE] = self.model_signature
        return out

    def _records(self, values: dict[str, ConfigValue]) -> RecordDict:
        content: RecordDict = {}
        if self.arrays is not None:
            content[Record.ARRAYS] = ArrayRecord(dict(self.arrays))
        content[Record.CONFIG] = ConfigRecord(values)
        return content

    @staticmethod
    def _read(content: RecordDict, where: str) -> tuple[ValueReader, dict[str, object]]:
        unknown = sorted(set(content) - {Record.ARRAYS, Record.CONFIG})
        if unknown:
            raise ProtocolError(unknown[0], f"a {where} task has unknown record(s) {unknown}")
        config = content.get(Record.CONFIG)
        if not isinstance(config, ConfigRecord):
            raise ProtocolError(Record.CONFIG, f"a {where} task needs a 'config' ConfigRecord")
        arrays = content.get(Record.ARRAYS)
        if arrays is not None and not isinstance(arrays, ArrayRecord):
            raise ProtocolError(Record.ARRAYS, "the 'arrays' record must be an ArrayRecord")
        reader = ValueReader(config.values, where="config")
        try:
            model = model_spec_from_json(reader.text(Key.MODEL_SPEC, max_len=1 << 20))
        except ProtocolError:
            raise
        fields: dict[str, object] = dict(
            model=model,
            round=RoundInfo.read(reader),
            settings=_settings(reader),
            features=FeatureSpec.read(reader),
            pins=ArtifactPins.read(reader),
            requirements=read_requirements(reader),
            personal_layers=reader.whole(Key.PERSONAL_LAYERS, 0, minimum=0),
            model_signature=reader.blob(Key.MODEL_SIGNATURE),
            arrays=None if arrays is None else {k: np.asarray(v) for k, v in arrays.arrays.items()},
        )
        return reader, fields


def _settings(reader: ValueReader) -> TrainingSettings:
    try:
        return TrainingSettings.read(reader)
    except ValueError as exc:
        raise ProtocolError(Key.EPOCHS, str(exc)) from exc


@dataclass(frozen=True, kw_only=True)
class TrainTask(_ModelTask):
    """Train the model locally and reply with the update :attr:`update` asks for."""

    update: UpdateSpec = field(default_factory=UpdateSpec)

    kind = Kind.TRAIN

    def to_records(self) -> RecordDict:
        """The instruction's content."""
        values = self._values()
        values.update(self.update.to_values())  # type: ignore[arg-type]
        return self._records(values)

    @classmethod
    def from_records(cls, content: RecordDict) -> TrainTask:
        """Decode an instruction's content; raises :class:`~flclient.ProtocolError` naming the key."""
        reader, fields = cls._read(content, "train")
        update = UpdateSpec.read(reader)
        reader.finish()
        return _build(cls, update=update, **fields)


M = TypeVar("M", bound=_ModelTask)


@dataclass(frozen=True, kw_only=True)
class EvaluateTask(_ModelTask):
    """Evaluate the model on the device's held-out examples (nothing is trained or uploaded)."""

    kind = Kind.EVALUATE

    def to_records(self) -> RecordDict:
        """The instruction's content."""
        return self._records(self._values())

    @classmethod
    def from_records(cls, content: RecordDict) -> EvaluateTask:
        """Decode an instruction's content; raises :class:`~flclient.ProtocolError` naming the key."""
        reader, fields = cls._read(content, "evaluate")
        reader.finish()
        return _build(cls, **fields)


def _build(cls: type[M], **fields: Any) -> M:
    try:
        return cls(**fields)
    except ProtocolError:
        raise
    except ValueError as exc:
        raise ProtocolError(Record.CONFIG, str(exc)) from exc


@dataclass(frozen=True, kw_only=True)
class QueryTask:
    """Ask a device about itself: ``count`` (its examples), ``feature-stats`` (sums of its raw feature columns,
    for a federated scaler) or ``capabilities`` (what it can run)."""

    query: Literal["count", "feature-stats", "capabilities"] = "count"
    pins: ArtifactPins = field(default_factory=ArtifactPins)
    round: RoundInfo = field(default_factory=RoundInfo)

    kind = Kind.QUERY

    def __post_init__(self) -> None:
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {self.query!r}")

    def to_records(self) -> RecordDict:
        """The instruction's content."""
        values: dict[str, ConfigValue] = {Key.QUERY: self.query}
        values.update(self.pins.to_values())  # type: ignore[arg-type]
        values.update(self.round.to_values())
        return {Record.CONFIG: ConfigRecord(values)}

    @classmethod
    def from_records(cls, content: RecordDict) -> QueryTask:
        """Decode an instruction's content; raises :class:`~flclient.ProtocolError` naming the key."""
        unknown = sorted(set(content) - {Record.CONFIG})
        if unknown:
            raise ProtocolError(unknown[0], f"a query task has unknown record(s) {unknown}")
        config = content.get(Record.CONFIG)
        if config is not None and not isinstance(config, ConfigRecord):
            raise ProtocolError(Record.CONFIG, "a query task's 'config' must be a ConfigRecord")
        reader = ValueReader(config.values if config is not None else {}, where="config")
        task = cls(
            query=reader.choice(Key.QUERY, QUERIES, default="count"),
            pins=ArtifactPins.read(reader),
            round=RoundInfo.read(reader),
        )
        reader.finish()
        return task


@dataclass(frozen=True, kw_only=True)
class SecAggStage:
    """One SecAgg+ stage: the coordinator's ``request`` bytes; the collect stage also carries the train task."""

    request: bytes
    task: TrainTask | None = None

    kind = Kind.TRAIN

    def to_records(self) -> RecordDict:
        """The instruction's content."""
        content: RecordDict = dict(self.task.to_records()) if self.task is not None else {}
        content[Record.SECAGG] = ConfigRecord({Record.SECAGG_REQUEST: self.request})
        return content

    @classmethod
    def from_records(cls, content: RecordDict) -> SecAggStage:
        """Decode an instruction's content; raises :class:`~flclient.ProtocolError` naming the key."""
        rec = content.get(Record.SECAGG)
        if not isinstance(rec, ConfigRecord):
            raise ProtocolError(Record.SECAGG, "a SecAgg stage needs a 'secagg' ConfigRecord")
        reader = ValueReader(rec.values, where="secagg")
        request = reader.blob(Record.SECAGG_REQUEST)
        reader.finish()
        if request is None:
            raise ProtocolError(Record.SECAGG_REQUEST, "the 'secagg' record lacks its 'request' bytes")
        rest = {k: v for k, v in content.items() if k != Record.SECAGG}
        return cls(request=request, task=TrainTask.from_records(rest) if rest else None)


Task = Union[TrainTask, EvaluateTask, QueryTask, SecAggStage]  # noqa: UP007
"""Every instruction a device can be sent."""


def decode_task(message_type: str, content: RecordDict) -> Task:
    """The typed task of an instruction (``message_type`` is Flower's, e.g. ``train`` or ``query.stats``).

    Raises :class:`~flclient.ProtocolError` naming the key, or :class:`ValueError` for an unknown message type.
    """
    kind = message_type.split(".")[0]
    if kind == Kind.TRAIN:
        return SecAggStage.from_records(content) if Record.SECAGG in content else TrainTask.from_records(content)
    if kind == Kind.EVALUATE:
        return EvaluateTask.from_records(content)
    if kind == Kind.QUERY:
        return QueryTask.from_records(content)
    raise ValueError(f"this device runs train, evaluate and query instructions, not {kind!r}")
