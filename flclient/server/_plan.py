"""Planning a run: the initial model, the order of its rounds, and what the server asks of devices each round.

:func:`plan_from_config` is the one place that turns a :class:`~flclient.server._runconfig.RunConfig` into tasks:
a :class:`TaskPlan` holds the parts of every task that do not change between rounds (model, training settings,
features, pins, update specification, requirements), built once through the typed protocol; each round it makes a
:class:`~flclient.protocol.TrainTask`, :class:`~flclient.protocol.EvaluateTask` or
:class:`~flclient.protocol.QueryTask` and Flower records of it. Importing this module does not import flwr (the
records are converted when a task is made), so that a run config can be checked without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .._errors import ProtocolError, RunConfigError
from ..gate._compat import FeaturePin, TaskRequirements
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
    model_spec_from_json,
)

if TYPE_CHECKING:
    from flwr.app import RecordDict

    from ._runconfig import RunConfig

__all__ = ["PlannedRound", "TaskPlan", "init_params", "plan_from_config", "schedule"]


def init_params(model: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """The initial model of a dense model spec: Glorot-normal weights from ``seed``, zero biases."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate((ly.in_features, ly.out_features) for ly in model.layers):
        out[f"dense{i}_weight"] = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out))).astype(
            np.float32
        )
        out[f"dense{i}_bias"] = np.zeros(n_out, dtype=np.float32)
    return out


@dataclass(frozen=True, kw_only=True)
class PlannedRound:
    """One round of the schedule: its number, whether it evaluates, and the Flower message group it uses."""

    number: int
    evaluating: bool
    final: bool = False

    @property
    def group(self) -> str:
        """The message group id: the round number; ``eval-<n>`` for an evaluation round between training rounds."""
        return f"eval-{self.number}" if self.evaluating and not self.final else str(self.number)


def schedule(run: RunConfig) -> list[PlannedRound]:
    """The rounds in order: ``num-server-rounds`` training rounds, an evaluation round after every
    ``eval-every``-th of them (but the last), and the final evaluation (numbered ``num-server-rounds + 1``)."""
    out: list[PlannedRound] = []
    for r in range(1, run.rounds + 1):
        out.append(PlannedRound(number=r, evaluating=False))
        if run.eval_every > 0 and r % run.eval_every == 0 and r < run.rounds:
            out.append(PlannedRound(number=r, evaluating=True))
    out.append(PlannedRound(number=run.rounds + 1, evaluating=True, final=True))
    return out


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
        from ._records import to_flwr

        return to_flwr(self.train_task(params, server_round=server_round, version=version).to_records())

    def evaluate(self, params: Mapping[str, np.ndarray], *, server_round: int, version: int) -> RecordDict:
        """Flower records of an evaluation task."""
        from ._records import to_flwr

        task = EvaluateTask(**self._common(params, server_round, version))  # type: ignore[arg-type]
        return to_flwr(task.to_records())

    def stats_query(self) -> RecordDict:
        """Flower records of the ``feature-stats`` query (for the federated scaler)."""
        from ._records import to_flwr

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


def plan_from_config(run: RunConfig) -> TaskPlan:
    """The tasks a run asks for. Raises :class:`~flclient.RunConfigError` naming the key of a value the protocol
    refuses (:class:`RunConfig` calls this when it is built, so a run never starts with such a value)."""
    with _refused(run, "model-spec"):
        model = model_spec_from_json(run.model_spec)
    with _refused(run, "lr"):
        settings = TrainingSettings(
            epochs=run.epochs,
            batch_size=run.batch_size,
            lr=run.lr,
            seed=run.seed,
            eval_fraction=run.eval_fraction,
            proximal_mu=run.proximal_mu,
        )
    pin = None
    if run.feature_module:
        name, _, version = run.feature_module.partition("@")
        with _refused(run, "feature-module"):
            pin = FeaturePin(name=name, version=version, sha256=run.feature_module_sha256)
    codec = run.update_codec
    if run.dp_mode == "central" and codec is None:
        codec = "fp32"  # the devices' pipeline clips; it runs with an update codec
    with _refused(run, "update-codec"):
        update = UpdateSpec(
            codec=codec,  # type: ignore[arg-type]
            clip_norm=run.clip_norm or 0.0,
            topk_fraction=0.01 if run.topk_fraction is None else run.topk_fraction,
            dp_mode=run.dp_mode,  # type: ignore[arg-type]
            noise_multiplier=run.dp_noise_multiplier or 0.0,
        )
    with _refused(run, "min-runtime-version"):
        requirements = TaskRequirements(
            min_runtime_version=run.min_runtime_version or None,
            max_runtime_major=run.max_runtime_major,
            model_format=run.model_format or None,
            feature_abi=run.feature_abi,
            required_backends=run.backend,
        )
    with _refused(run, "personal-layers"):
        return TaskPlan(
            model=model,
            settings=settings,
            features=FeatureSpec(scale=run.feature_scale or None),
            pins=ArtifactPins(feature_module=pin),
            update=update,
            personal_layers=run.personal_layers,
            requirements=requirements,
        )


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
