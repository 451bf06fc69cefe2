"""Server optimisers applied to the aggregated delta (numpy only): FedAvg, FedAvgM and FedAdam.

The aggregate of the devices' new parameters gives the pseudo-gradient ``delta = aggregate - global``; the server
optimiser turns it into the next global model (Reddi et al., "Adaptive Federated Optimization", 2021):

* ``fedavg``:  ``x += lr * delta`` (``lr = 1`` is plain FedAvg)
* ``fedavgm``: ``v = momentum * v + delta``; ``x += lr * v``
* ``fedadam``: ``m = b1 * m + (1 - b1) * delta``; ``v = b2 * v + (1 - b2) * delta**2``;
  ``x += lr * m / (sqrt(v) + tau)`` (no bias correction, as in the paper)

State (momentum, moments) is kept in float64. :meth:`ServerOptimizer.state_dict` / :meth:`~ServerOptimizer.
load_state_dict` move it to and from flat arrays, which :class:`~flclient.server._history.ModelHistory` stores
with each model version: a resumed or rolled-back run continues with the momentum of the version it starts from
(not another version's, which points the wrong way). :meth:`ServerOptimizer.reset` drops it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..protocol import SERVER_OPTIMIZERS

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["SERVER_OPTIMIZERS", "ServerOptimizer"]


Params = Mapping[str, np.ndarray]


@dataclass
class ServerOptimizer:
    """One of :data:`SERVER_OPTIMIZERS` with its hyper-parameters and state."""

    name: str = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    _m: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _v: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise ValueError(f"server-optimizer must be one of {SERVER_OPTIMIZERS}, got {self.name!r}")
        for key, value in (
            ("server-momentum", self.momentum),
            ("adam-beta1", self.beta1),
            ("adam-beta2", self.beta2),
        ):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"server-lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"adam-tau must be a finite number > 0, got {self.tau}")

    @classmethod
    def from_config(cls, run: RunConfig) -> ServerOptimizer:
        """The optimiser of a run: ``server-optimizer``, ``server-lr``, ``server-momentum``, ``adam-beta1/2``,
        ``adam-tau``. The default server learning rate is 1 for ``fedavg``/``fedavgm`` and 0.01 for ``fedadam``."""
        return cls(
            name=run.server_optimizer,
            lr=run.optimizer_lr,
            momentum=run.server_momentum,
            beta1=run.adam_beta1,
            beta2=run.adam_beta2,
            tau=run.adam_tau,
        )

    def reset(self) -> None:
        """Forget the momentum / moment estimates."""
        self._m.clear()
        self._v.clear()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as arrays: ``"m/<name>"`` (momentum, or Adam's first moment) and ``"v/<name>"`` (second)."""
        out = {f"m/{k}": v.copy() for k, v in self._m.items()}
        out.update({f"v/{k}": v.copy() for k, v in self._v.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one from :meth:`state_dict` (an empty mapping resets it).

        Raises ``ValueError`` for a key that is not ``m/<name>`` or ``v/<name>``, for second moments given to an
        optimiser that has none, and for non-finite values; the state is unchanged then.
        """
        m: dict[str, np.ndarray] = {}
        v: dict[str, np.ndarray] = {}
        for key, value in state.items():
            kind, _, name = key.partition("/")
            if kind not in ("m", "v") or not name:
                raise ValueError(f"optimizer state key {key!r} is not 'm/<name>' or 'v/<name>'")
            if kind == "v" and self.name != "fedadam":
                raise ValueError(f"{self.name} keeps no second moments, the state has {key!r}")
            arr = np.array(value, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"optimizer state {key!r} has non-finite values")
            (m if kind == "m" else v)[name] = arr
        if self.name == "fedavg" and m:
            raise ValueError("fedavg keeps no state, the given state has momentum")
        self._m, self._v = m, v

    def step(self, params: Params, aggregated: Params) -> dict[str, np.ndarray]:
        """The next global model from the current one and the devices' aggregate (same names, shapes).

        Raises ``ValueError`` when a loaded state does not fit the model (another shape for a layer).
        """
        for k, ref in params.items():
            for store in (self._m, self._v):
                if k in store and store[k].shape != np.shape(ref):
                    raise ValueError(f"optimizer state for {k!r} has shape {store[k].shape}, the model {np.shape(ref)}")
        out: dict[str, np.ndarray] = {}
        for k, ref in params.items():
            x = np.asarray(ref, dtype=np.float64)
            delta = np.asarray(aggregated[k], dtype=np.float64) - x
            if self.name == "fedavg":
                step = delta
            elif self.name == "fedavgm":
                v = self._m.get(k)
                step = delta if v is None else self.momentum * v + delta
                self._m[k] = step
            else:
                m = self._m.get(k, np.zeros_like(x))
                v = self._v.get(k, np.zeros_like(x))
                m = self.beta1 * m + (1.0 - self.beta1) * delta
                v = self.beta2 * v + (1.0 - self.beta2) * delta * delta
                self._m[k], self._v[k] = m, v
                step = m / (np.sqrt(v) + self.tau)
            out[k] = (x + self.lr * step).astype(np.asarray(ref).dtype)
        return out
