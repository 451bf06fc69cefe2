"""The update specification: how a device turns its trained model into what it uploads."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Final, Literal

from .._errors import ProtocolError
from ._names import Key
from ._values import ValueReader

__all__ = ["DP_MODES", "UPDATE_CODECS", "UpdateSpec"]

CodecName = Literal["fp32", "fp16", "bf16", "int8", "rotated1", "rotated2", "rotated4", "topk"]
UPDATE_CODECS: Final[tuple[CodecName, ...]] = typing.get_args(CodecName)
"""The codec names a task may ask for (``update-codec``)."""
DP_MODES: Final[tuple[Literal["local", "central"], ...]] = ("local", "central")


@dataclass(frozen=True, kw_only=True)
class UpdateSpec:
    """Clip -> DP -> encode settings of a train reply.

    ``codec`` None: the reply carries the new parameters as plain float32 arrays (Flower's layout). ``clip_norm``
    0 is off; ``noise_multiplier`` > 0 needs a clip norm (the sensitivity) and a codec; ``dp_mode`` ``local``: the
    device adds Gaussian noise of std multiplier x clip; ``central``: the device clips and the server adds it.
    ``secagg_bits`` > 0 marks a SecAgg+ round (masked updates in Z_2^bits) and excludes a codec.
    """

    codec: CodecName | None = None
    clip_norm: float = 0.0
    topk_fraction: float = 0.01
    dp_mode: Literal["local", "central"] = "local"
    noise_multiplier: float = 0.0
    secagg_bits: int = 0

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in UPDATE_CODECS:
            raise ValueError(f"update-codec must be one of {', '.join(UPDATE_CODECS)}, got {self.codec!r}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ValueError(f"clip-norm must be a finite number >= 0 (0 = off), got {self.clip_norm}")
        if not 0 < self.topk_fraction <= 1:
            raise ValueError(f"topk-fraction must be in (0, 1], got {self.topk_fraction}")
        if self.dp_mode not in DP_MODES:
            raise ValueError(f"dp-mode must be 'local' or 'central', got {self.dp_mode!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"dp-noise-multiplier must be a finite number >= 0, got {self.noise_multiplier}")
        if self.noise_multiplier and not self.clip_norm:
            raise ValueError("dp-noise-multiplier needs clip-norm (the sensitivity)")
        if self.noise_multiplier and self.codec is None:
            raise ValueError("dp-noise-multiplier needs update-codec (the device's update pipeline adds the noise)")
        if not 0 <= self.secagg_bits <= 32:
            raise ValueError(f"secagg-bits must be in [0, 32] (0 = no SecAgg), got {self.secagg_bits}")
        if self.secagg_bits and self.codec is not None:
            raise ValueError("secagg-bits and update-codec exclude each other: SecAgg masks its own quantised update")

    @property
    def private(self) -> bool:
        """Whether the round adds DP noise (and is charged to the device's privacy ledger)."""
        return self.noise_multiplier > 0

    def to_values(self) -> dict[str, object]:
        """The task-config values of this specification (defaults left out)."""
        out: dict[str, object] = {}
        if self.codec is not None:
            out[Key.UPDATE_CODEC] = self.codec
        if self.clip_norm:
            out[Key.CLIP_NORM] = self.clip_norm
        # A non-default value is sent even where it has no effect, so that decoding gives back this very spec.
        if self.codec == "topk" or self.topk_fraction != _DEFAULT.topk_fraction:
            out[Key.TOPK_FRACTION] = self.topk_fraction
        if self.noise_multiplier or self.dp_mode != _DEFAULT.dp_mode:
            out[Key.DP_MODE] = self.dp_mode
        if self.noise_multiplier:
            out[Key.DP_NOISE_MULTIPLIER] = self.noise_multiplier
        if self.secagg_bits:
            out[Key.SECAGG_BITS] = self.secagg_bits
        return out

    @classmethod
    def read(cls, reader: ValueReader) -> UpdateSpec:
        """Read the update keys of a task config (the caller finishes the reader)."""
        codec = reader.choice(Key.UPDATE_CODEC, UPDATE_CODECS, default=None) if reader.has(Key.UPDATE_CODEC) else None
        spec = dict(
            codec=codec,
            clip_norm=reader.number(Key.CLIP_NORM, 0.0, minimum=0.0),
            topk_fraction=reader.number(Key.TOPK_FRACTION, 0.01),
            dp_mode=reader.choice(Key.DP_MODE, DP_MODES, default="local"),
            noise_multiplier=reader.number(Key.DP_NOISE_MULTIPLIER, 0.0, minimum=0.0),
            secagg_bits=reader.whole(Key.SECAGG_BITS, 0, minimum=0, maximum=32),
        )
        try:
            return cls(**spec)  # type: ignore[arg-type]
        except ValueError as exc:
            key = next((k for k in _KEY_OF if str(exc).startswith(k)), Key.UPDATE_CODEC)
            raise ProtocolError(key, str(exc)) from exc


_DEFAULT = UpdateSpec()
_KEY_OF = (Key.UPDATE_CODEC, Key.CLIP_NORM, Key.TOPK_FRACTION, Key.DP_MODE, Key.DP_NOISE_MULTIPLIER, Key.SECAGG_BITS)
