"""The update pipeline: delta -> clip -> DP noise -> encode, as ordered, composable stages.

Each stage is a plain callable ``UpdateDraft -> UpdateDraft`` with a fixed rank; :class:`UpdatePipeline` refuses
stages out of order, so noise can never be added before clipping or after compression. The draft carries the
tensors and a record of what each stage did, which becomes the manifest the server needs to decode and account
(codec and its parameters, clip bound, noise multiplier and std). The DP noise seed is never recorded: with it
the server could subtract the noise. Rotation seeds travel inside the codec payloads.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from .._errors import UpdateCodecError, UpdateError
from .._json import loads_untrusted
from .._sqlite import SqliteFile
from ._clip import ClipConfig, clip_update
from ._codecs import UpdateCodec, decode_vector
from ._ledger import PrivacyLedger

__all__ = [
    "ClipStage",
    "EncodeStage",
    "EncodedUpdate",
    "ErrorFeedback",
    "InMemoryResidualStore",
    "PrivacyConfig",
    "PrivacyStage",
    "ResidualStore",
    "SqliteResidualStore",
    "UpdateDraft",
    "UpdatePipeline",
    "UpdateStage",
    "compute_delta",
    "decode_update",
    "secure_generator",
]

F32 = npt.NDArray[np.float32]

_MAGIC = b"FLUP"
_VERSION = 2  # 2: a CRC-32 of the header and manifest follows the manifest (version 1 had none)
_HEAD = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")
_LEN = struct.Struct("<Q")
_MAX_MANIFEST = 1 << 20
_MAX_NDIM = 32  # numpy's own limit is 32 (1.x) or 64 (2.x) dimensions
_MAX_MANIFEST_DEPTH = 8  # the pipeline writes 3 levels ({"layers": [[name, [dims]]]}); room for more fields


def secure_generator() -> np.random.Generator:
    """A numpy generator seeded from the OS's cryptographic randomness: the production source of DP noise."""
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(128)))


def compute_delta(
    new: Mapping[str, npt.ArrayLike], old: Mapping[str, npt.ArrayLike], *, names: Sequence[str] | None = None
) -> dict[str, F32]:
    """``new - old`` per layer, float32, in ``new``'s order.

    ``names`` restricts the update to those layers; by default, when ``new`` holds LoRA adapters
    (``*_lora_a`` / ``*_lora_b``) only they are sent, since the frozen weights do not change.
    """
    if names is None:
        lora = [k for k in new if k.endswith(("_lora_a", "_lora_b"))]
        names = lora or list(new)
    out: dict[str, F32] = {}
    for name in names:
        if name not in new or name not in old:
            raise ValueError(f"layer {name!r} is missing from the new or the old parameters")
        a, b = np.asarray(new[name], dtype=np.float32), np.asarray(old[name], dtype=np.float32)
        if a.shape != b.shape:
            raise ValueError(f"layer {name!r} changed shape: {b.shape} -> {a.shape}")
        out[name] = a - b
    return out


@dataclass(frozen=True, kw_only=True)
class UpdateDraft:
    """Tensors on their way through the pipeline, with the record of what the stages did."""

    round_id: str
    tensors: dict[str, F32]
    record: dict[str, Any] = field(default_factory=dict)


class UpdateStage(Protocol):
    """One step of the pipeline; ``rank`` fixes where it may stand (clip 10, noise 20, encode 30)."""

    rank: ClassVar[int]

    def __call__(self, draft: UpdateDraft) -> UpdateDraft: ...


@dataclass(frozen=True, kw_only=True)
class ClipStage:
    """L2 clipping (per update, or per layer)."""

    config: ClipConfig
    rank: ClassVar[int] = 10

    def __call__(self, draft: UpdateDraft) -> UpdateDraft:
        tensors, report = clip_update(draft.tensors, self.config)
        record = {**draft.record, "clip": {"max_norm": report.max_norm, "per_layer": report.per_layer}}
        return replace(draft, tensors=tensors, record=record)


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """Differential privacy for the update.

    ``mode="local"``: the device adds Gaussian noise with std ``noise_multiplier * clip norm`` to the clipped
    update. ``mode="central"``: the device only clips; the server plugin adds the noise (with this multiplier)
    to the aggregate. Both are charged to the device's ledger, which assumes the stated multiplier.
    """

    mode: Literal["local", "central"]
    noise_multiplier: float

    def __post_init__(self) -> None:
        if self.mode not in ("local", "central"):
            raise ValueError(f"mode must be 'local' or 'central', got {self.mode!r}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be a positive finite number, got {self.noise_multiplier}")


@dataclass(frozen=True, kw_only=True)
class PrivacyStage:
    """Charge the ledger (durably), then add local Gaussian noise, or nothing in central mode.

    ``rng`` is for tests; left ``None``, each call draws from :func:`secure_generator`.
    """

    config: PrivacyConfig
    ledger: PrivacyLedger | None = None
    rng: np.random.Generator | None = None
    rank: ClassVar[int] = 20

    def __call__(self, draft: UpdateDraft) -> UpdateDraft:
        clip = draft.record.get("clip")
        if clip is None:
            raise ValueError("the privacy stage needs a clip stage before it (the sensitivity is the clip norm)")
        clip_norm = float(clip["max_norm"])
        mechanism = f"gaussian-{self.config.mode}"
        entry_id = None
        if self.ledger is not None:
            entry_id = self.ledger.charge(
                round_id=draft.round_id,
                mechanism=mechanism,
                noise_multiplier=self.config.noise_multiplier,
                clip_norm=clip_norm,
            ).id
        sigma = self.config.noise_multiplier * clip_norm
        tensors = draft.tensors
        if self.config.mode == "local":
            rng = self.rng if self.rng is not None else secure_generator()
            tensors = {
                k: (v + rng.normal(0.0, sigma, size=v.shape).astype(np.float32)).astype(np.float32)
                for k, v in tensors.items()
            }
        privacy = {
            "mechanism": mechanism,
            "noise_multiplier": self.config.noise_multiplier,
            "noise_std": sigma if self.config.mode == "local" else 0.0,
            "server_noise_std": sigma if self.config.mode == "central" else 0.0,
            "ledger_entry": entry_id,
        }
        return replace(draft, tensors=tensors, record={**draft.record, "privacy": privacy})


class ResidualStore(Protocol):
    """Where error-feedback residuals live between rounds (the device state)."""

    def load(self, name: str) -> F32 | None: ...

    def save(self, residuals: Mapping[str, F32]) -> None: ...


class SqliteResidualStore(SqliteFile):
    """Residuals in a table of the device's SQLite state file, all layers replaced in one transaction."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            schema="CREATE TABLE IF NOT EXISTS update_residuals"
            " (name TEXT PRIMARY KEY, shape TEXT NOT NULL, data BLOB)",
            open_error=lambda why: UpdateError(f"cannot open the residual store {path}: {why}"),
        )

    def load(self, name: str) -> F32 | None:
        row = self._conn().execute("SELECT shape, data FROM update_residuals WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        out: F32 = np.frombuffer(row[1], dtype="<f4").astype(np.float32).reshape(json.loads(row[0]))
        return out

    def save(self, residuals: Mapping[str, F32]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, r in residuals.items():
                db.execute(
                    "INSERT OR REPLACE INTO update_residuals (name, shape, data) VALUES (?, ?, ?)",
                    (name, json.dumps(list(r.shape)), r.astype("<f4").tobytes()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


@dataclass
class InMemoryResidualStore:
    """A :class:`ResidualStore` in a dict, for tests and for devices without persistent state."""

    residuals: dict[str, F32] = field(default_factory=dict)

    def load(self, name: str) -> F32 | None:
        return self.residuals.get(name)

    def save(self, residuals: Mapping[str, F32]) -> None:
        self.residuals.update({k: v.copy() for k, v in residuals.items()})


@dataclass(frozen=True, kw_only=True)
class ErrorFeedback:
    """Error feedback for biased codecs: add last round's residual before encoding, keep what was lost now."""

    store: ResidualStore


@dataclass(frozen=True, kw_only=True)
class EncodeStage:
    """Encode every layer with ``codec`` (one payload per layer), optionally with error feedback.

    ``rng`` feeds the codec's randomness (rotation seeds, stochastic rounding).
    """

    codec: UpdateCodec
    rng: np.random.Generator
    error_feedback: ErrorFeedback | None = None
    rank: ClassVar[int] = 30

    def __call__(self, draft: UpdateDraft) -> UpdateDraft:
        payloads: dict[str, bytes] = {}
        new_residuals: dict[str, F32] = {}
        for name, tensor in draft.tensors.items():
            flat = tensor.ravel()
            if self.error_feedback is not None:
                previous = self.error_feedback.store.load(name)
                if previous is not None and previous.size == flat.size:
                    flat = flat + previous.ravel()
            payloads[name] = self.codec.encode(flat, rng=self.rng)
            if self.error_feedback is not None:
                decoded = decode_vector(payloads[name], max_coords=flat.size)
                new_residuals[name] = (flat - decoded).reshape(tensor.shape)
        if self.error_feedback is not None:
            self.error_feedback.store.save(new_residuals)
        record = {
            **draft.record,
            "codec": {"name": self.codec.name, "params": _codec_params(self.codec)},
            "layers": [[name, list(t.shape)] for name, t in draft.tensors.items()],
            "payloads": payloads,
        }
        return replace(draft, record=record)


def _codec_params(codec: UpdateCodec) -> dict[str, Any]:
    fields = getattr(codec, "__dataclass_fields__", {})
    return {k: getattr(codec, k) for k in fields}


@dataclass(frozen=True, kw_only=True)
class EncodedUpdate:
    """The device's upload: a manifest (JSON-able) and one codec payload per layer."""

    manifest: dict[str, Any]
    payloads: dict[str, bytes]

    def to_bytes(self) -> bytes:
        """Wire form: ``b"FLUP"``, version, manifest length and JSON, CRC-32 of all that, then each payload
        length-prefixed (each payload carries its own CRC)."""
        meta = json.dumps(self.manifest, sort_keys=True, separators=(",", ":")).encode()
        head = _HEAD.pack(_MAGIC, _VERSION, len(meta)) + meta
        parts = [head, _CRC.pack(zlib.crc32(head))]
        for name, _shape in self.manifest["layers"]:
            parts += [_LEN.pack(len(self.payloads[name])), self.payloads[name]]
        return b"".join(parts)

    @property
    def nbytes(self) -> int:
        """Payload bytes, all layers together (the manifest excluded)."""
        return sum(len(p) for p in self.payloads.values())


class UpdatePipeline:
    """delta -> stages (clip, DP, encode) in their fixed order.

    Example::

        pipeline = UpdatePipeline([
            ClipStage(config=ClipConfig(max_norm=1.0)),
            PrivacyStage(config=PrivacyConfig(mode="local", noise_multiplier=1.1), ledger=ledger),
            EncodeStage(codec=RotatedCodec(bits=2), rng=np.random.default_rng()),
        ])
        update = pipeline.run(round_id="r42", new=trained, old=global_model)
    """

    def __init__(self, stages: Sequence[UpdateStage]) -> None:
        ranks = [type(s).rank for s in stages]
        if not stages or ranks[-1] != EncodeStage.rank:
            raise ValueError("the pipeline must end with an EncodeStage")
        if any(a >= b for a, b in itertools.pairwise(ranks)):
            names = [type(s).__name__ for s in stages]
            raise ValueError(f"stages out of order {names}: the order is clip -> privacy -> encode, each at most once")
        if PrivacyStage.rank in ranks and ClipStage.rank not in ranks:
            raise ValueError("a privacy stage needs a clip stage before it")
        self.stages: tuple[UpdateStage, ...] = tuple(stages)

    def run(
        self,
        *,
        round_id: str,
        new: Mapping[str, npt.ArrayLike],
        old: Mapping[str, npt.ArrayLike],
        names: Sequence[str] | None = None,
        trace: Callable[[str, UpdateDraft], None] | None = None,
    ) -> EncodedUpdate:
        """Compute the delta and pass it through the stages; ``trace`` sees the draft after each stage."""
        draft = UpdateDraft(round_id=round_id, tensors=compute_delta(new, old, names=names))
        for stage in self.stages:
            draft = stage(draft)
            if trace is not None:
                trace(type(stage).__name__, draft)
        record = dict(draft.record)
        payloads = record.pop("payloads")
        manifest = {"format": _VERSION, "round_id": round_id, **record}
        return EncodedUpdate(manifest=manifest, payloads=payloads)


def decode_update(data: bytes, *, max_coords: int) -> tuple[dict[str, Any], dict[str, F32]]:
    """Server side: the manifest and the decoded layers (in their shapes) of :meth:`EncodedUpdate.to_bytes`.

    ``max_coords`` bounds all layers together; anything malformed raises :class:`~flclient.UpdateCodecError`
    (and nothing else: a hostile upload must fail only itself).
    """
    buf = memoryview(data)
    if len(buf) < _HEAD.size:
        raise UpdateCodecError("update is truncated (shorter than its header)")
    magic, version, meta_len = _HEAD.unpack(buf[: _HEAD.size])
    if magic != _MAGIC:
        raise UpdateCodecError("not an encoded update (bad magic)")
    if version != _VERSION:
        raise UpdateCodecError(f"unsupported update format version {version} (this build reads {_VERSION})")
    if meta_len > min(_MAX_MANIFEST, len(buf) - _HEAD.size - _CRC.size):
        raise UpdateCodecError("update manifest is truncated or too large")
    pos = _HEAD.size + meta_len
    (crc,) = _CRC.unpack(buf[pos : pos + _CRC.size])
    if zlib.crc32(buf[:pos]) != crc:
        raise UpdateCodecError("update manifest checksum mismatch (corrupted or truncated)")
    manifest, layers = _parse_manifest(bytes(buf[_HEAD.size : pos]))
    pos += _CRC.size
    budget = max_coords
    out: dict[str, F32] = {}
    for name, shape in layers:
        size = math.prod(shape)
        if size > budget:
            raise UpdateCodecError(f"layer {name!r} exceeds the allowed number of coordinates ({max_coords} in all)")
        if pos + _LEN.size > len(buf):
            raise UpdateCodecError("update is truncated")
        (length,) = _LEN.unpack(buf[pos : pos + _LEN.size])
        pos += _LEN.size
        if length > len(buf) - pos:
            raise UpdateCodecError("update is truncated")
        vec = decode_vector(bytes(buf[pos : pos + length]), max_coords=size)
        if vec.size != size:
            raise UpdateCodecError(f"layer {name!r} decodes to {vec.size} values, expected {size}")
        out[name] = vec.reshape(shape)
        pos += length
        budget -= size
    if pos != len(buf):
        raise UpdateCodecError("update has trailing bytes")
    return manifest, out


def _parse_manifest(raw: bytes) -> tuple[dict[str, Any], list[tuple[str, list[int]]]]:
    """The manifest and its layers, every layer a unique name and a shape of non-negative integers."""
    try:
        manifest = loads_untrusted(raw, max_depth=_MAX_MANIFEST_DEPTH)
    except ValueError as exc:
        raise UpdateCodecError(f"update manifest is malformed: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise UpdateCodecError("update manifest must be a JSON object with a 'layers' list")
    layers: list[tuple[str, list[int]]] = []
    seen: set[str] = set()
    for i, entry in enumerate(manifest["layers"]):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise UpdateCodecError(f"update manifest layers[{i}] must be [name, shape]")
        name, shape = entry
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise UpdateCodecError(f"layer {name!r} has shape {shape!r}; dimensions must be non-negative integers")
        if len(shape) > _MAX_NDIM:
            raise UpdateCodecError(f"layer {name!r} has {len(shape)} dimensions, more than the {_MAX_NDIM} allowed")
        if name in seen:
            raise UpdateCodecError(f"update manifest names layer {name!r} twice")
        seen.add(name)
        layers.append((name, shape))
    return manifest, layers
