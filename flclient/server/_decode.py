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
from ..protocol import DeviceInfo, ErrorReply, EvaluateReply, QueryReply, StatsReply, TrainReply
from ._aggregate import DeviceUpdate, apply_encoded_update
from ._records import from_flwr
from ._stats import FeatureStats

__all__ = ["DecodedReplies", "decode_capabilities", "decode_replies", "decode_stats", "failure_reason"]


def failure_reason(reply: Message) -> str:
    """How a failed reply is counted: the device's error code, or Flower's own error (node unavailable, ...)."""
    try:
        return ErrorReply.from_reason(reply.error.reason or "").code
    except ProtocolError:
        return f"flower-error-{reply.error.code}"


@dataclass
class DecodedReplies:
    """What a round's replies hold: the updates to aggregate, and everything its metrics record counts."""

    updates: list[DeviceUpdate] = field(default_factory=list)
    undecodable: dict[int, str] = field(default_factory=dict)  # node -> why its update cannot be used
    update_bytes: int = 0  # encoded update payloads received
    metrics: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (evaluation examples, metrics)
    classes: list[str] = field(default_factory=list)  # the device class of each entry of ``metrics``
    failures: dict[str, int] = field(default_factory=dict)  # error replies by reason
    per_node: dict[int, int] = field(default_factory=dict)  # replies per node asked (more than one: duplicates)
    declines: int = 0  # error replies of kind ``declined`` (the device chose not to take part)
    per_device: dict[str, float] = field(default_factory=dict)  # node -> held-out accuracy
    devices: dict[int, DeviceInfo] = field(default_factory=dict)  # node -> what it declared it can run

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
    node_of: Mapping[str, int] | None = None,
) -> DecodedReplies:
    """Sort a round's replies into metrics, failures and (training) device updates.

    An update comes as plain arrays or as an encoded delta of the ``shared`` parameters; ``refuse`` says why a
    training reply must not be aggregated (a bad update signature), or ``None``. ``node_of`` (instruction id ->
    the node it was sent to) counts each reply for the node asked: SuperLink's own error replies ("Node
    Unavailable") carry SuperLink's id as their source. Whatever goes wrong decoding, verifying or applying one
    reply fails that reply only, counted with its reason.
    """
    out = DecodedReplies()
    for reply in replies:
        src = reply.metadata.src_node_id
        if node_of is not None:
            src = node_of.get(reply.metadata.reply_to_message_id, src)
        out.per_node[src] = out.per_node.get(src, 0) + 1
        if reply.has_error():
            key = failure_reason(reply)
            out.failures[key] = out.failures.get(key, 0) + 1
            out.declines += _is_decline(reply)
            continue
        try:
            _decode_one(reply, src, training, shared, refuse, out)
        except Exception as exc:  # one hostile or broken reply must never end the round
            key = f"bad-reply: {exc.key}" if isinstance(exc, ProtocolError) else f"bad-reply: {type(exc).__name__}"
            out.failures[key] = out.failures.get(key, 0) + 1
    return out


def _is_decline(reply: Message) -> bool:
    try:
        return ErrorReply.from_reason(reply.error.reason or "").kind == "declined"
    except ProtocolError:
        return False


def _decode_one(
    reply: Message,
    src: int,
    training: bool,
    shared: Mapping[str, np.ndarray],
    refuse: Callable[[Message], str | None] | None,
    out: DecodedReplies,
) -> None:
    """Decode one successful reply into ``out`` (raises whatever its content provokes; the caller counts it)."""
    typed = (TrainReply if training else EvaluateReply).from_records(from_flwr(reply.content))
    m = typed.metrics.to_dict()
    n = typed.metrics.num_examples
    out.metrics.append((typed.metrics.eval_examples if typed.metrics.eval_examples is not None else n, m))
    info = typed.device
    out.classes.append(info.device_class if info is not None and info.device_class else "unknown")
    if info is not None:
        out.devices[src] = info
    if typed.metrics.eval_acc is not None:
        out.per_device[str(src)] = typed.metrics.eval_acc
    if not isinstance(typed, TrainReply):
        return
    if refuse is not None:
        refused = refuse(reply)
        if refused is not None:
            out.undecodable[src] = refused
            return
    if typed.arrays is not None:
        out.updates.append(DeviceUpdate(src, dict(typed.arrays), n))
    elif typed.payload is not None:
        try:
            out.update_bytes += len(typed.payload)
            out.updates.append(DeviceUpdate(src, apply_encoded_update(shared, typed.payload), n))
        except Exception as exc:  # UpdateCodecError, and whatever a hostile payload provokes besides
            kind = "" if isinstance(exc, (UpdateCodecError, ValueError)) else f"{type(exc).__name__}: "
            out.undecodable[src] = f"undecodable update: {kind}{exc}"


def decode_capabilities(replies: Sequence[Message]) -> dict[int, DeviceInfo]:
    """What each node declared in its answer to a ``capabilities`` query (nodes that failed it are left out)."""
    out: dict[int, DeviceInfo] = {}
    for reply in replies:
        if reply.has_error():
            continue
        try:
            typed = QueryReply.from_records(from_flwr(reply.content))
        except (ProtocolError, ValueError):
            continue
        if typed.device is not None:
            out[reply.metadata.src_node_id] = typed.device
    return out


def decode_stats(replies: Sequence[Message]) -> tuple[list[FeatureStats], dict[str, int]]:
    """The devices' feature statistics from a ``feature-stats`` query round, and its failures by reason."""
    stats: list[FeatureStats] = []
    failures: dict[str, int] = {}
    for reply in replies:
        if reply.has_error():
            key = failure_reason(reply)
            failures[key] = failures.get(key, 0) + 1
            continue
        try:
            typed = StatsReply.from_records(from_flwr(reply.content))
        except (ProtocolError, ValueError) as exc:
            key = f"bad stats: {exc}"
            failures[key] = failures.get(key, 0) + 1
            continue
        stats.append(FeatureStats(typed.sum, typed.sumsq, typed.count))
    return stats, failures
