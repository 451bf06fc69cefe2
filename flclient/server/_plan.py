"""What the server asks of devices each round, built once from the run config through the typed protocol.

:class:`TaskPlan` holds the parts of every task that do not change between rounds (model, training settings,
features, pins, update specification, requirements); each round it makes a :class:`~flclient.protocol.TrainTask`,
:class:`~flclient.protocol.EvaluateTask` or :class:`~flclient.protocol.QueryTask` and Flower records of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import RecordDict

from ..gate._compat import TaskRequirements
from ..protocol import (
    ArtifactPins,
    EvaluateTask,
    FeatureSpec,
    ModelSpec,
    QueryTask,
    RoundInfo,
    Scaler,
    TrainingSettings,
    TrainTask,
    UpdateSpec,
)
from ._records import to_flwr

__all__ = ["TaskPlan"]


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

    def train(self, params: Mapping[str, np.ndarray], *, server_round: int, version: int) -> RecordDict:
        """Flower records of the round's train task."""
        return to_flwr(self.train_task(params, server_round=server_round, version=version).to_records())

    def evaluate(self, params: Mapping[str, np.ndarray], *, server_round: int, version: int) -> RecordDict:
        """Flower records of an evaluation task."""
        task = EvaluateTask(**self._common(params, server_round, version))  # type: ignore[arg-type]
        return to_flwr(task.to_records())

    def stats_query(self) -> RecordDict:
        """Flower records of the ``feature-stats`` query (for the federated scaler)."""
        return to_flwr(
            QueryTask(query="feature-stats", pins=ArtifactPins(feature_module=self.pins.feature_module)).to_records()
        )

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


def plan_from_config(cfg: Mapping[str, object], *, default_model: str) -> TaskPlan:
    """The plan a run config asks for; raises ValueError naming the key of a value the protocol refuses."""
    from .._errors import ProtocolError
    from ..gate._compat import FeaturePin
    from ..protocol import model_spec_from_json

    def num(key: str, default: float) -> float:
        return float(cfg.get(key, default))  # type: ignore[arg-type]

    try:
        model = model_spec_from_json(str(cfg.get("model-spec", default_model)))
    except ProtocolError as exc:
        raise ValueError(f"run config model-spec: {exc.detail}") from exc
    settings = TrainingSettings(
        epochs=int(num("epochs", 1)),
        batch_size=int(num("batch-size", 32)),
        lr=num("lr", 0.1),
        seed=int(num("seed", 0)),
        eval_fraction=num("eval-fraction", 0.2),
        proximal_mu=num("proximal-mu", 0.0),
    )
    pin = None
    if cfg.get("feature-module"):
        name, _, version = str(cfg["feature-module"]).partition("@")
        pin = FeaturePin(name=name, version=version, sha256=str(cfg.get("feature-module-sha256", "")))
    scale = tuple(float(s) for s in str(cfg["feature-scale"]).split(",")) if cfg.get("feature-scale") else None
    dp_mode = str(cfg.get("dp-mode") or "local")
    if dp_mode not in ("local", "central"):
        raise ValueError("dp-mode must be 'local' (devices add noise) or 'central' (this server adds it)")
    codec = str(cfg["update-codec"]) if cfg.get("update-codec") else None
    if dp_mode == "central" and codec is None:
        codec = "fp32"  # the devices' pipeline clips; it runs with an update codec
    update = UpdateSpec(
        codec=codec,  # type: ignore[arg-type]
        clip_norm=num("clip-norm", 0.0),
        topk_fraction=num("topk-fraction", 0.01),
        dp_mode=dp_mode,  # type: ignore[arg-type]
        noise_multiplier=num("dp-noise-multiplier", 0.0),
    )
    backends = tuple(b.strip() for b in str(cfg.get("backend", "")).split(",") if b.strip())
    requirements = TaskRequirements(
        min_runtime_version=str(cfg["min-runtime-version"]) if cfg.get("min-runtime-version") else None,
        max_runtime_major=int(num("max-runtime-major", 0)) if "max-runtime-major" in cfg else None,
        model_format=str(cfg["model-format"]) if cfg.get("model-format") else None,
        feature_abi=int(num("feature-abi", 0)) if "feature-abi" in cfg else None,
        required_backends=backends,
    )
    try:
        return TaskPlan(
            model=model,
            settings=settings,
            features=FeatureSpec(scale=scale),
            pins=ArtifactPins(feature_module=pin),
            update=update,
            personal_layers=int(num("personal-layers", 0)),
            requirements=requirements,
        )
    except ProtocolError as exc:
        raise ValueError(f"run config {exc.key}: {exc.detail}") from exc
