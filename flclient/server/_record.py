"""The run's metrics records: one JSON object per event (start, stats, round, evaluate, done), printed and appended
to ``metrics-path``. Tests, benchmarks and the demo read these records: keep their keys and meaning."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..protocol import Metric
from ._decode import DecodedReplies

__all__ = ["MetricsLog", "by_class", "replies_record", "weighted"]


class MetricsLog:
    """Prints every record as one JSON line and appends it to ``path`` (when given)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: Mapping[str, Any]) -> None:
        """Emit one record."""
        line = json.dumps(record, sort_keys=True)
        print(line, flush=True)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")


def weighted(replies: Iterable[tuple[int, Mapping[str, Any]]], key: str) -> float | None:
    """The ``weight``-weighted mean of ``key`` over the replies that report it (``None``: none does)."""
    pairs = [(n, float(m[key])) for n, m in replies if key in m]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


def by_class(reply_metrics: list[tuple[int, dict[str, Any]]], classes: list[str]) -> dict[str, dict[str, Any]]:
    """Held-out metrics per device class, each weighted by the devices' evaluation examples."""
    out: dict[str, dict[str, Any]] = {}
    for cls in sorted(set(classes)):
        group = [rm for rm, c in zip(reply_metrics, classes, strict=True) if c == cls]
        out[cls] = {
            "devices": len(group),
            "examples": sum(n for n, m in group if Metric.EVAL_ACC in m or Metric.EVAL_LOSS in m),
            "eval_acc": weighted(group, Metric.EVAL_ACC),
            "eval_loss": weighted(group, Metric.EVAL_LOSS),
        }
    return out


def replies_record(
    *, evaluating: bool, number: int, version: int, nodes: int, replies: int, decoded: DecodedReplies
) -> dict[str, Any]:
    """The fields every training and evaluation round record has: who answered, how, and the devices' metrics."""
    metrics = decoded.metrics
    return {
        "event": "evaluate" if evaluating else "round",
        "round": number,
        "version": version,
        "nodes": nodes,
        "replies": replies,
        "duplicates": decoded.duplicates,
        "failures": decoded.failures,
        "eval_acc": weighted(metrics, Metric.EVAL_ACC),
        "eval_loss": weighted(metrics, Metric.EVAL_LOSS),
        "train_loss": weighted([(int(m.get(Metric.NUM_EXAMPLES, 0)), m) for _, m in metrics], Metric.TRAIN_LOSS),
        "device_s": weighted([(1, m) for _, m in metrics], Metric.DEVICE_S),
        "train_s": weighted([(1, m) for _, m in metrics], Metric.TRAIN_S),
        "update_bytes": decoded.update_bytes,
        "reply_update_bytes": sum(int(m.get(Metric.UPDATE_BYTES, 0)) for _, m in metrics),  # what the devices sent
        "activations_reused": sum(int(m.get(Metric.ACTIVATIONS_REUSED, 0)) for _, m in metrics),  # backbone skipped
        "by_class": by_class(metrics, decoded.classes),
    }
