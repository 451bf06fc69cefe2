"""Flower records <-> the protocol's records: the one place the server plugin converts between the two."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ..fleet import _objects as ours

__all__ = ["from_flwr", "to_flwr"]


def to_flwr(content: ours.RecordDict) -> RecordDict:
    """A protocol message content (``to_records()``) as Flower's ``RecordDict``."""
    out = RecordDict()
    for name, record in content.items():
        if isinstance(record, ours.ArrayRecord):
            out[name] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in record.arrays.items()})
        elif isinstance(record, ours.MetricRecord):
            out[name] = MetricRecord(dict(record.values))
        else:
            out[name] = ConfigRecord(dict(record.values))
    return out


def from_flwr(content: RecordDict) -> ours.RecordDict:
    """A Flower ``RecordDict`` as protocol records (for ``from_records``)."""
    out: ours.RecordDict = {}
    for name, arrays in content.array_records.items():
        out[name] = ours.ArrayRecord({k: a.numpy() for k, a in arrays.items()})
    for name, metrics in content.metric_records.items():
        out[name] = ours.MetricRecord(dict(metrics))
    for name, config in content.config_records.items():
        out[name] = ours.ConfigRecord(dict(config))
    return out
