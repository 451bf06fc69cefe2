"""Decoding a round's replies: device updates, metrics, and failures counted by reason.

:func:`failure_reason` is the one place that reads why a device did not do its task from an error reply (the
protocol's :class:`~flclient.protocol.ErrorReply`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message

from .._errors import ProtocolError, UpdateCodecError
from ..protocol import ErrorReply, Metric, Record
from ._aggregate import DeviceUpdate, apply_encoded_update
from ._stats import FeatureStats

__all__ = ["DecodedReplies", "decode_replies", "decode_stats", "device_class", "failure_reason"]


def failure_reason(reply: Message) -> str:
    """How a failed reply is counted: the device's error code, or Flower's own error (node unavailable, ...)."""
    try:
        return ErrorReply.from_reason(reply.error.reason or "").code
    except ProtocolError:
        return f"flower-error-{reply.error.code}"


def device_class(reply: Message) -> str:
    """The device class a reply states in its ``"device"`` record (``"unknown"`` without one)."""
    rec = reply.content.config_records.get(Record.DEVICE)
    value = rec.get(Record.DEVICE_CLASS) if rec is not None else None
    return value if isinstance(value, str) and value else "unknown"


@dataclass
class DecodedReplies:
    """What a round's replies hold: the updates to aggregate, and everything its metrics record counts."""

    updates: list[DeviceUpdate] = field(default_factory=list)
    undecodable: dict[int, str] = field(default_factory=dict)  # node -> why its update cannot be used
    update_bytes: int = 0  # encoded update payloads received
    metrics: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (evaluation examples, metrics)
    classes: list[str] = field(default_factory=list)  # the device class of each entry of ``metrics``
    failures: dict[str, int] = field(default_factory=dict)  # error replies by reason
    per_node: dict[int, int] = field(default_factory=dict)  # replies per node (more than one: duplicates)
    per_device: dict[str, float] = field(default_factory=dict)  # node -> held-out accuracy

    @property
    def duplicates(self) -> int:
        """Replies beyond the first from the same node."""
        return sum(c - 1 for c in self.per_node.values())


def decode_replies(
    replies: Sequence[Message],
    *,
    training: bool,
    shared: Mapping[str, np.ndarray],
    refuse: Callable[[Message], str | None] | None = None,
) -> DecodedReplies:
    """Sort a round's replies into metrics, failures and (training) device updates.

    An update comes as plain arrays or as an encoded delta of the ``shared`` parameters; ``refuse`` says why a
    training reply must not be aggregated (a bad update signature), or ``None``.
    """
    out = DecodedReplies()
    for reply in replies:
        src = reply.metadata.src_node_id
        out.per_node[src] = out.per_node.get(src, 0) + 1
        if reply.has_error():
            key = failure_reason(reply)
            out.failures[key] = out.failures.get(key, 0) + 1
            continue
        m: dict[str, Any] = dict(reply.content.metric_records.get(Record.METRICS, {}))
        n = int(m.get(Metric.NUM_EXAMPLES, 0))
        out.metrics.append((max(int(m.get(Metric.EVAL_EXAMPLES, n)), 0), m))
        out.classes.append(device_class(reply))
        if Metric.EVAL_ACC in m:
            out.per_device[str(src)] = float(m[Metric.EVAL_ACC])
        if not training:
            continue
        if refuse is not None:
            refused = refuse(reply)
            if refused is not None:
                out.undecodable[src] = refused
                continue
        if Record.ARRAYS in reply.content.array_records:
            arrays = {k: a.numpy() for k, a in reply.content.array_records[Record.ARRAYS].items()}
            out.updates.append(DeviceUpdate(src, arrays, n))
        elif Record.UPDATE in reply.content.array_records:
            payload = reply.content.array_records[Record.UPDATE].get(Record.PAYLOAD)
            try:
                if payload is None:
                    raise UpdateCodecError("the 'update' record has no 'payload'")
                raw = payload.numpy().tobytes()
                out.update_bytes += len(raw)
                out.updates.append(DeviceUpdate(src, apply_encoded_update(shared, raw), n))
            except (UpdateCodecError, ValueError) as exc:
                out.undecodable[src] = f"undecodable update: {exc}"
    return out


def decode_stats(replies: Sequence[Message]) -> tuple[list[FeatureStats], dict[str, int]]:
    """The devices' feature statistics from a ``feature-stats`` query round, and its failures by reason."""
    stats: list[FeatureStats] = []
    failures: dict[str, int] = {}
    for reply in replies:
        if reply.has_error() or Record.STATS not in reply.content.array_records:
            key = failure_reason(reply) if reply.has_error() else "no stats record"
            failures[key] = failures.get(key, 0) + 1
            continue
        rec = reply.content.array_records[Record.STATS]
        try:
            count = int(np.asarray(rec[Record.COUNT].numpy()).sum())
            stats.append(FeatureStats(rec[Record.SUM].numpy(), rec[Record.SUMSQ].numpy(), count))
        except (KeyError, ValueError) as exc:
            failures[f"bad stats: {exc}"] = failures.get(f"bad stats: {exc}", 0) + 1
    return stats, failures
