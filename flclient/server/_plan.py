"""Planning a run: the initial model, the order of its rounds and the config every task carries (no flwr here).

:func:`task_config` is the one place that turns a :class:`~flclient.server._runconfig.RunConfig` into what the
devices read from a task's ``"config"`` record; the device side parses the same keys (``flclient._task``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..protocol import Key
from ._runconfig import RunConfig
from ._stats import Scaler

__all__ = ["PlannedRound", "init_params", "schedule", "task_config"]


def init_params(spec_json: str, seed: int) -> dict[str, np.ndarray]:
    """The initial model of a dense ``model-spec``: Glorot-normal weights from ``seed``, zero biases."""
    spec = json.loads(spec_json)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, (n_in, n_out, _) in enumerate(spec["layers"]):
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


def task_config(
    run: RunConfig,
    *,
    server_round: int | None = None,
    model_version: int | None = None,
    scaler: Scaler | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    """The ``"config"`` record of a task: training settings, feature module, update pipeline, scaler, and the
    round and model version it belongs to (a query task, such as ``feature-stats``, names its ``query``).

    Optional settings are left out when off, so a device sees only what the run asks for. Central DP runs the
    devices' update pipeline (which clips) with the lossless ``fp32`` codec unless another one is set.
    """
    config: dict[str, Any] = {
        Key.MODEL_SPEC: run.model_spec,
        Key.LR: run.lr,
        Key.EPOCHS: run.epochs,
        Key.BATCH_SIZE: run.batch_size,
        Key.SEED: run.seed,
        Key.EVAL_FRACTION: run.eval_fraction,
    }
    if run.proximal_mu:
        config[Key.PROXIMAL_MU] = run.proximal_mu
    if run.personal_layers:
        config[Key.PERSONAL_LAYERS] = run.personal_layers
    if run.feature_module:
        config[Key.FEATURE_MODULE] = run.feature_module
        config[Key.FEATURE_MODULE_SHA256] = run.feature_module_sha256
    if run.feature_scale:
        config[Key.FEATURE_SCALE] = list(run.feature_scale)
    codec = run.update_codec or ("fp32" if run.dp_mode == "central" else None)
    if codec:
        config[Key.UPDATE_CODEC] = codec
    if run.dp_mode != "local":
        config[Key.DP_MODE] = run.dp_mode
    for key, value in (
        (Key.CLIP_NORM, run.clip_norm),
        (Key.TOPK_FRACTION, run.topk_fraction),
        (Key.DP_NOISE_MULTIPLIER, run.dp_noise_multiplier),
    ):
        if value is not None:
            config[key] = value
    if scaler is not None:
        config[Key.SCALER] = scaler.to_json()
        config[Key.SCALER_VERSION] = scaler.version
    if server_round is not None:
        config[Key.SERVER_ROUND] = server_round
    if model_version is not None:
        config[Key.MODEL_VERSION] = model_version
    if query is not None:
        config[Key.QUERY] = query
    return config
