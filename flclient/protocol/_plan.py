"""The round-independent parts of a run's tasks, built once from its :class:`RunConfig` through the protocol.

:func:`plan_from_config` is the one place that turns a run config into tasks: a :class:`TaskPlan` holds the model,
training settings, features, pins, update specification and requirements; each round it makes a
:class:`TrainTask`, :class:`EvaluateTask` or :class:`QueryTask` (the server converts them to Flower records).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .._errors import ProtocolError, RunConfigError
from ..gate._compat import FeaturePin, TaskRequirements
from ._model import BackboneHeadSpec, BackboneLoRASpec, ModelSpec, model_spec_from_json
from ._names import Key
from ._pins import ArtifactPins, BackbonePin
from ._tasks import EvaluateTask, FeatureSpec, QueryTask, RoundInfo, Scaler, TrainingSettings, TrainTask
from ._update import UpdateSpec

if TYPE_CHECKING:
    from ._runconfig import RunConfig

__all__ = ["TaskPlan", "plan_from_config"]


@dataclass(frozen=True, kw_only=True)
class TaskPlan:
    """The round-independent parts of the run's tasks."""

    model: ModelSpec
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    pins: ArtifactPins = field(default_factory=ArtifactPins)
    update: UpdateSpec = field(default_factory=UpdateSpec)
    personal_layers: int = 0
    requirements: TaskRequirements = field(default_factory=TaskRequirements)

    def __post_init__(self) -> None:
        self.model.personal_parameter_names(self.personal_layers)  # leaves a shared layer, or raises
        if isinstance(self.model, (BackboneHeadSpec, BackboneLoRASpec)) and self.pins.backbone is None:
            raise ProtocolError(Key.BACKBONE, f"a {self.model.kind} model needs a backbone pin (backbone-sha256)")

    @property
    def personal(self) -> frozenset[str]:
        """The parameters that stay on the devices (their private heads)."""
        return self.model.personal_parameter_names(self.personal_layers)

    def with_scaler(self, scaler: Scaler) -> TaskPlan:
        """Later tasks standardise features with ``scaler``."""
        return replace(self, features=replace(self.features, scaler=scaler, scaler_version=scaler.version))

    def train_task(self, params: Mapping[str, np.ndarray], *, server_round: int, version: int) -> TrainTask:
        """The train task of a round."""
        return TrainTask(update=self.update, **self._common(params, server_round, version))  # type: ignore[arg-type]

    def evaluate_task(self, params: Mapping[str, np.ndarray], *, server_round: int, version: int) -> EvaluateTask:
        """An evaluation task."""
        return EvaluateTask(**self._common(params, server_round, version))  # type: ignore[arg-type]

    def stats_task(self) -> QueryTask:
        """The ``feature-stats`` query (for the federated scaler)."""
        return QueryTask(query="feature-stats", pins=ArtifactPins(feature_module=self.pins.feature_module))

    def _common(self, params: Mapping[str, np.ndarray], server_round: int, version: int) -> dict[str, object]:
        return dict(
            model=self.model,
            round=RoundInfo(server_round=server_round, model_version=version),
            settings=self.settings,
            features=self.features,
            pins=self.pins,
            requirements=self.requirements,
            personal_layers=self.personal_layers,
            arrays={k: np.ascontiguousarray(v) for k, v in params.items()},
        )


def plan_from_config(run: RunConfig) -> TaskPlan:
    """The tasks a run asks for. Raises :class:`~flclient.RunConfigError` naming the key of a value the protocol
    refuses (:class:`RunConfig` calls this when it is built, so a run never starts with such a value)."""
    with _refused(run, Key.MODEL_SPEC):
        model = model_spec_from_json(run.model_spec)
    if isinstance(model, BackboneLoRASpec):
        model = replace(model, lora_a="frozen" if run.lora_aggregation == "exact" else "trained")
    backbone = _backbone_pin(run)
    with _refused(run, Key.LR):
        settings = TrainingSettings(
            epochs=run.epochs,
            batch_size=run.batch_size,
            lr=run.lr,
            seed=run.seed,
            eval_fraction=run.eval_fraction,
            proximal_mu=run.proximal_mu,
            weight_decay=run.weight_decay,
        )
    pin = None
    if run.feature_module:
        name, _, version = run.feature_module.partition("@")
        with _refused(run, Key.FEATURE_MODULE):
            pin = FeaturePin(name=name, version=version, sha256=run.feature_module_sha256)
    codec = run.update_codec
    if run.dp_mode == "central" and codec is None:
        codec = "fp32"  # the devices' pipeline clips; it runs with an update codec
    with _refused(run, Key.UPDATE_CODEC):
        update = UpdateSpec(
            codec=codec,  # type: ignore[arg-type]
            clip_norm=run.clip_norm or 0.0,
            topk_fraction=0.01 if run.topk_fraction is None else run.topk_fraction,
            dp_mode=run.dp_mode,  # type: ignore[arg-type]
            noise_multiplier=run.dp_noise_multiplier or 0.0,
        )
    with _refused(run, Key.MIN_RUNTIME_VERSION):
        requirements = TaskRequirements(
            min_runtime_version=run.min_runtime_version or None,
            max_runtime_major=run.max_runtime_major,
            model_format=run.model_format or None,
            feature_abi=run.feature_abi,
            required_backends=run.backend,
        )
    with _refused(run, Key.PERSONAL_LAYERS):
        return TaskPlan(
            model=model,
            settings=settings,
            features=FeatureSpec(scale=run.feature_scale or None),
            pins=ArtifactPins(feature_module=pin, backbone=backbone),
            update=update,
            personal_layers=run.personal_layers,
            requirements=requirements,
        )


def _backbone_pin(run: RunConfig) -> BackbonePin | None:
    """The backbone pin: ``backbone`` (or the file's name) with ``backbone-sha256`` (or the file's sha256)."""
    if not (run.backbone or run.backbone_path):
        return None
    sha = run.backbone_sha256
    if run.backbone_path is not None:
        try:
            digest = hashlib.sha256(run.backbone_path.read_bytes()).hexdigest()
        except OSError as exc:
            raise RunConfigError("backbone-path", f"cannot read the backbone {run.backbone_path}: {exc}") from None
        if sha and sha != digest:
            raise RunConfigError(
                "backbone-sha256", f"{run.backbone_path} has sha256 {digest}, not the {sha} backbone-sha256 names"
            )
        sha = digest
    spec = run.backbone or f"{run.backbone_path.stem if run.backbone_path else ''}@local"
    name, at, version = spec.partition("@")
    with _refused(run, Key.BACKBONE):
        if not at:
            raise ProtocolError(Key.BACKBONE, f"backbone must be name@version, got {spec!r}")
        return BackbonePin(name=name, version=version, sha256=sha)


@contextmanager
def _refused(run: RunConfig, key: str) -> Iterator[None]:
    """Translate the protocol's refusal of a value into a RunConfigError naming the run-config key: the one the
    protocol names, the key its message starts with (``"epochs must be ..."``), else ``key``."""
    try:
        yield
    except ProtocolError as exc:
        raise RunConfigError(exc.key, exc.detail) from None
    except ValueError as exc:
        first = str(exc).split(" ", 1)[0]
        keys = {f.metadata["key"] for f in dataclasses.fields(run)}
        raise RunConfigError(first if first in keys else key, str(exc)) from None
