"""SecAgg+ in a Flower ServerApp: drives :class:`flclient.secagg.SecAggCoordinator` through the Grid (imports flwr).

One secure training round is four exchanges of ``train`` messages, each a :class:`flclient.protocol.SecAggStage`:
the coordinator's request bytes; the collect stage also carries the train task (model and config). Devices answer
with a :class:`flclient.protocol.SecAggReply` (see :class:`flclient.secagg.SecAggTaskHandler`).
The server only ever receives masked vectors; it returns ``old + mean(clipped deltas)``, plus central Gaussian
noise when ``central_noise_std`` is set (central DP: devices clip, the server noises the sum).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from .._errors import ProtocolError
from ..protocol import Record, SecAggReply, TrainTask
from ..secagg import SecAggCoordinator, SecAggParams, SecAggResult, choose_degree, flatten_update, unflatten_update
from ._exchange import send_and_receive
from ._records import from_flwr, to_flwr

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["SecAggRoundConfig", "SecAggRoundOutcome", "secagg_train_round"]


@dataclass(frozen=True, kw_only=True)
class SecAggRoundConfig:
    """Server-side SecAgg settings. ``degree``/``threshold`` default to :func:`~flclient.secagg.choose_degree`.

    ``clip`` is the per-coordinate range of the shared quantisation scale (set it to the devices' L2 clip norm
    to never clamp); ``noise_std`` is each device's distributed-DP noise std, ``central_noise_std`` the std of
    the Gaussian noise the server adds to the unmasked sum.
    """

    bits: int = 32
    clip: float = 1.0
    dropout: float = 0.2
    corruption: float = 0.05
    degree: int | None = None
    threshold: int | None = None
    noise_std: float = 0.0
    central_noise_std: float = 0.0
    timeout_s: float = 120.0
    prg: str = "chacha20"

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in [2, 32], got {self.bits}")
        for name in ("clip", "timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive finite number, got {getattr(self, name)}")
        if self.central_noise_std < 0 or self.noise_std < 0:
            raise ValueError("noise standard deviations must be >= 0")
        if (self.degree is None) != (self.threshold is None):
            raise ValueError("set both degree and threshold, or neither")

    @classmethod
    def from_config(cls, run: RunConfig) -> SecAggRoundConfig:
        """The SecAgg settings of a run: ``secagg-clip``, ``secagg-bits``; each exchange waits ``round-timeout-s``."""
        return cls(clip=run.secagg_clip, bits=run.secagg_bits, timeout_s=run.round_timeout_s)


@dataclass(frozen=True, kw_only=True)
class SecAggRoundOutcome:
    """The new parameters and the SecAgg result (survivors, dropped, rejected messages with reasons)."""

    parameters: dict[str, np.ndarray]
    result: SecAggResult


def _exchange(
    grid: Grid,
    requests: Mapping[int, bytes],
    params: SecAggParams,
    extra: RecordDict | None,
    group: str,
    timeout: float,
) -> dict[int, bytes]:
    msgs = []
    for index, request in requests.items():
        content = RecordDict({Record.SECAGG: ConfigRecord({Record.SECAGG_REQUEST: request})})
        if extra is not None:
            for key, record in extra.items():
                content[key] = record
        msgs.append(
            Message(content=content, dst_node_id=params.node_ids[index], message_type=MessageType.TRAIN, group_id=group)
        )
    out: dict[int, bytes] = {}
    for reply in send_and_receive(grid, msgs, timeout=timeout):
        if reply.has_error():
            continue
        try:
            value = SecAggReply.from_records(from_flwr(reply.content)).reply
        except ProtocolError:
            continue  # not a SecAgg answer: this node drops out of the round
        try:
            index = params.index_of(reply.metadata.src_node_id)
        except ValueError:
            continue
        if index not in out:
            out[index] = value
    return out


def secagg_train_round(
    grid: Grid,
    nodes: Sequence[int],
    parameters: Mapping[str, np.ndarray],
    task: TrainTask,
    cfg: SecAggRoundConfig,
    *,
    round_tag: str,
    rng: np.random.Generator | None = None,
) -> SecAggRoundOutcome:
    """Run one secure training round over ``nodes``; raises :class:`~flclient.SecAggAborted` when it cannot."""
    node_ids = tuple(sorted(set(nodes)))
    k, t = (
        (cfg.degree, cfg.threshold)
        if cfg.degree is not None and cfg.threshold is not None
        else choose_degree(len(node_ids), dropout=cfg.dropout, corruption=cfg.corruption)
    )
    names = sorted(parameters)
    old, layout = flatten_update(parameters, names)
    params = SecAggParams(
        round_tag=round_tag,
        node_ids=node_ids,
        degree=k,
        threshold=t,
        bits=cfg.bits,
        clip=cfg.clip,
        dim=old.size,
        graph_seed=secrets.token_bytes(32),
        noise_std=cfg.noise_std,
        prg=cfg.prg,  # type: ignore[arg-type]
    )
    coord = SecAggCoordinator(params)
    model = to_flwr(replace(task, arrays={n: parameters[n] for n in names}).to_records())
    group = f"secagg-{round_tag}"
    replies = _exchange(grid, coord.setup(), params, None, group, cfg.timeout_s)
    replies = _exchange(grid, coord.share_keys(replies), params, None, group, cfg.timeout_s)
    replies = _exchange(grid, coord.collect(replies), params, model, group, cfg.timeout_s)
    replies = _exchange(grid, coord.unmask(replies), params, None, group, cfg.timeout_s)
    result = coord.finish(replies)
    total = result.float_sum().astype(np.float64)
    if cfg.central_noise_std > 0:
        gen = rng if rng is not None else np.random.Generator(np.random.PCG64DXSM(secrets.randbits(128)))
        total += gen.normal(0.0, cfg.central_noise_std, total.size)
    mean = (total / len(result.survivors)).astype(np.float32)
    return SecAggRoundOutcome(parameters=unflatten_update(old + mean, layout), result=result)
