"""The device-side answer to SecAgg+ stage requests, running local training only for the masked input.

The round contract carries a stage as :class:`flclient.protocol.SecAggStage` (the coordinator's request bytes;
at the collect stage also the train task) and the answer as :class:`flclient.protocol.SecAggReply`. At the
collect stage ``update()`` trains and returns the delta ``new - old`` (layers in sorted order); it is L2-clipped
to ``clip_norm`` and masked here, and the trained weights themselves never leave the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _messages as m
from ._device import SecAggDevice

__all__ = ["SecAggTaskHandler"]


@dataclass(frozen=True, kw_only=True)
class SecAggTaskHandler:
    """One node's SecAgg+ device with the clip applied to its masked input."""

    device: SecAggDevice
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive, got {self.clip_norm}")

    def answer(self, request: bytes, update: Callable[[], np.ndarray] | None = None) -> bytes:
        """The reply bytes to one stage request; ``update`` computes the delta when the stage is collect."""
        if m.decode_request(request).stage != m.STAGE_COLLECT or update is None:
            return self.device.handle(request)

        def clipped() -> np.ndarray:
            delta = update()
            norm = float(np.linalg.norm(delta))
            if self.clip_norm is not None and norm > self.clip_norm:
                delta = delta * np.float32(self.clip_norm / norm)
            return delta

        return self.device.handle(request, update=clipped)
