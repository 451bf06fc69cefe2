"""The device-side hook: answer SecAgg stage instructions, running local training only for the masked input.

An instruction takes part in SecAgg when its content holds a ``"secagg"`` ConfigRecord with ``"request"``
(bytes); the reply carries ``"secagg"`` with ``"reply"`` (bytes). At the collect stage the wrapped training
function runs on the instruction (its ``"arrays"`` and ``"config"``); the delta ``new - old`` (layers in sorted
order) is L2-clipped to ``clip_norm`` and masked, and the trained weights themselves never leave the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._errors import SecAggProtocolError
from ..fleet._objects import ArrayRecord, ConfigRecord, RecordDict
from . import _messages as m
from ._compose import flatten_update
from ._device import SecAggDevice

__all__ = ["RECORD", "SecAggTaskHandler"]

RECORD = "secagg"
Train = Callable[[RecordDict], RecordDict]


@dataclass(frozen=True, kw_only=True)
class SecAggTaskHandler:
    """Wraps a device's training for SecAgg rounds; see the module docstring for the message layout."""

    device: SecAggDevice
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive, got {self.clip_norm}")

    @staticmethod
    def wants(content: RecordDict) -> bool:
        """Whether an instruction is a SecAgg stage."""
        rec = content.get(RECORD)
        return isinstance(rec, ConfigRecord) and isinstance(rec.values.get("request"), bytes)

    def run(self, content: RecordDict, train: Train) -> RecordDict:
        """Answer one SecAgg stage instruction."""
        rec = content.get(RECORD)
        if not isinstance(rec, ConfigRecord) or not isinstance(rec.values.get("request"), bytes):
            raise SecAggProtocolError("not a SecAgg instruction (no 'secagg' record with a 'request')")
        request = rec.values["request"]
        assert isinstance(request, bytes)
        out: RecordDict = {}
        if m.decode_request(request).stage != m.STAGE_COLLECT:
            out[RECORD] = ConfigRecord({"reply": self.device.handle(request)})
            return out
        result: RecordDict = {}

        def update() -> np.ndarray:
            nonlocal result
            old = content.get("arrays")
            if not isinstance(old, ArrayRecord):
                raise SecAggProtocolError("the collect stage carries no model ('arrays')")
            result = train({k: v for k, v in content.items() if k != RECORD})
            new = result.get("arrays")
            if not isinstance(new, ArrayRecord):
                raise SecAggProtocolError("local training returned no 'arrays'")
            names = sorted(old.arrays)
            delta = flatten_update(new.arrays, names)[0] - flatten_update(old.arrays, names)[0]
            norm = float(np.linalg.norm(delta))
            if self.clip_norm is not None and norm > self.clip_norm:
                delta *= np.float32(self.clip_norm / norm)
            return delta

        out[RECORD] = ConfigRecord({"reply": self.device.handle(request, update=update)})
        if "metrics" in result:
            out["metrics"] = result["metrics"]
        return out
