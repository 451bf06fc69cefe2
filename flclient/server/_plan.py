"""Planning a run: the initial model and the order of its rounds (what each task holds is the protocol's
:class:`~flclient.protocol.TaskPlan`, built by :func:`~flclient.protocol.plan_from_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..protocol import ModelSpec, TaskPlan, plan_from_config

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["PlannedRound", "TaskPlan", "init_params", "plan_from_config", "schedule"]


def init_params(model: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """The initial global model of a model spec from ``seed``: what travels (a dense model's every layer; a
    backbone model's head, and its LoRA factors B at zero, A only when it is trained)."""
    return model.initial_parameters(seed)


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
