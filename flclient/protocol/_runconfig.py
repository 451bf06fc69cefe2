"""The ServerApp's run config, parsed once: :class:`RunConfig`, and the reference generated from it.

Flower hands the ServerApp a run config, a mapping of keys to strings, numbers or booleans (which of them
depends on how the run was submitted: ``flwr run --run-config``, the app's ``[tool.flwr.app.config]``, or a dict
in a test). :meth:`RunConfig.from_run_config` turns it into one frozen, validated value before the first round:
every key is converted by the converter its field names, an unknown key or a bad value raises
:class:`~flclient.RunConfigError` naming the key, the value and what is allowed, and the rules that tie keys
together (``dp-mode = "central"`` needs plain ``fedavg`` and no ``secagg``, ...) are checked here too.

Each field carries its run-config key, its documentation and its default in one place (the field's metadata), and
:func:`run_config_reference` renders ``docs/run-config.md`` from them. Regenerate that file with::

    python scripts/gen_run_config_doc.py
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import RunConfigError
from ._names import AGGREGATIONS, SERVER_OPTIMIZERS
from ._update import DP_MODES, UPDATE_CODECS

__all__ = ["DEFAULT_MODEL_SPEC", "RunConfig", "run_config_reference"]

DEFAULT_MODEL_SPEC = json.dumps({"layers": [[67, 10, "none"]], "loss": "cross_entropy"})
"""A linear model over the 67 columns of the demo's feature module."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d+(\.\d+){0,2}")


# -- converters: a raw run-config value -> the field's value, or ValueError(what is allowed) ----------------------


class _Bad(ValueError):
    """A value a converter refuses; the message says what would be allowed."""


@dataclass(frozen=True)
class _Converter:
    """Converts a run-config value (str, int, float or bool; or an already converted value) and checks it."""

    text: str  # what is allowed, for messages and the reference
    convert: Callable[[Any], Any]

    def __call__(self, raw: Any) -> Any:
        try:
            return self.convert(raw)
        except (TypeError, ValueError) as exc:
            raise _Bad(self.text) from exc


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeError("a boolean is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _whole(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)  # exact, also past 2**53
        except ValueError:
            pass  # "3.0", "1e3": whole numbers written as floats
    value = _number(raw)
    if not value.is_integer():
        raise ValueError("not a whole number")
    return int(value)


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> tuple[str, Callable[[float], bool]]:
    if lo is not None and hi is not None:
        text = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        text = ""

    def inside(v: float) -> bool:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    return text, inside


def _int(lo: int | None = None, hi: int | None = None) -> _Converter:
    text, inside = _bounds(lo, hi, False, False)

    def convert(raw: Any) -> int:
        value = _whole(raw)
        if not inside(value):
            raise ValueError("out of range")
        return value

    return _Converter(f"a whole number {text}".strip(), convert)


def _float(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> _Converter:
    text, inside = _bounds(lo, hi, lo_open, hi_open)

    def convert(raw: Any) -> float:
        value = _number(raw)
        if not inside(value):
            raise ValueError("out of range")
        return value

    return _Converter(f"a finite number {text}".strip(), convert)


def _optional(conv: _Converter) -> _Converter:
    return _Converter(conv.text, lambda raw: None if raw is None else conv(raw))


def _bool_value(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError("not a flag")


_BOOL = _Converter("true or false (also 1/0, yes/no, on/off)", _bool_value)


def _choice(choices: tuple[str, ...], *, optional: bool = False) -> _Converter:
    def convert(raw: Any) -> str | None:
        if optional and (raw is None or raw == ""):
            return None
        if not isinstance(raw, str) or raw not in choices:
            raise ValueError("not a choice")
        return raw

    text = "one of " + ", ".join(choices) + (' (unset or "": off)' if optional else "")
    return _Converter(text, convert)


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError("not text")
    return raw


def _sha256(raw: Any) -> str:
    value = _text(raw).strip().lower()
    if value and not _SHA256.fullmatch(value):
        raise ValueError("not a sha256")
    return value


def _model_spec(raw: Any) -> str:
    text = _text(raw)
    if not isinstance(json.loads(text), dict):  # what it describes is checked by the protocol (plan_from_config)
        raise ValueError("not an object")
    return text


def _text_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, (tuple, list)):
        return tuple(_text(v) for v in raw)
    return tuple(v.strip() for v in _text(raw).split(",") if v.strip())


def _version(raw: Any) -> str:
    text = _text(raw).strip()
    if text and not _VERSION.fullmatch(text):
        raise ValueError("not a version")
    return text


def _float_list(raw: Any) -> tuple[float, ...]:
    if isinstance(raw, (tuple, list)):
        return tuple(_number(v) for v in raw)
    if isinstance(raw, str):
        return tuple(_number(v) for v in raw.split(",")) if raw.strip() else ()
    return (_number(raw),)


def _path(raw: Any) -> Path | None:
    if raw is None or isinstance(raw, Path):
        return raw
    return Path(_text(raw)) if _text(raw).strip() else None


def _path_list(raw: Any) -> tuple[Path, ...]:
    if isinstance(raw, (tuple, list)):
        return tuple(Path(p) for p in raw)
    return tuple(Path(p.strip()) for p in _text(raw).split(",") if p.strip())


def _some_path(raw: Any) -> Path:
    path = _path(raw)
    if path is None:
        raise ValueError("empty")
    return path


_PATH = _Converter("a path", _path)
_SOME_PATH = _Converter("a path (not empty)", _some_path)


# -- the fields -----------------------------------------------------------------------------------------------------


class _Section:
    """The fields of one section of the reference: ``field(default=..., metadata=SECTION(key, converter, doc))``."""

    def __init__(self, title: str) -> None:
        self.title = title

    def __call__(self, key: str, conv: _Converter, doc: str, *, shown: str | None = None) -> dict[str, Any]:
        """The metadata of a field read from run-config ``key``; ``shown`` replaces its default in the reference."""
        return {"key": key, "conv": conv, "doc": " ".join(doc.split()), "shown": shown, "section": self.title}


_ROUNDS = _Section("Rounds and participants")
_TASK = _Section("Training task (sent to the devices)")
_FEATURES = _Section("Feature module")
_BACKBONE = _Section("Frozen backbone (model kinds backbone-head and backbone-lora)")
_AGGREGATION = _Section("Aggregation")
_OPTIMIZER = _Section("Server optimiser")
_PRIVACY = _Section("Update pipeline and differential privacy")
_SECAGG = _Section("Secure aggregation")
_REQUIRES = _Section("Device requirements (checked by each device before any work)")
_EVALUATION = _Section("Evaluation")
_HISTORY = _Section("Model history and metrics")
_TRUST = _Section("Trusted artifacts")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The ServerApp's settings, one field per run-config key (see ``docs/run-config.md``).

    Build it with :meth:`from_run_config` from Flower's run config; constructing it directly converts and checks
    the values the same way. Every problem raises :class:`~flclient.RunConfigError`.

    Example::

        run = RunConfig.from_run_config({"num-server-rounds": "5", "aggregation": "median"})
        assert run.rounds == 5
    """

    rounds: int = field(
        default=3,
        metadata=_ROUNDS("num-server-rounds", _int(0), "Training rounds; a final evaluation round follows them."),
    )
    min_nodes: int = field(
        default=1,
        metadata=_ROUNDS("min-nodes", _int(0), "Wait (up to `node-wait-s`) until this many nodes are connected."),
    )
    node_wait_s: float = field(
        default=60.0, metadata=_ROUNDS("node-wait-s", _float(0), "How long to wait for `min-nodes` before starting.")
    )
    round_timeout_s: float = field(
        default=120.0,
        metadata=_ROUNDS(
            "round-timeout-s", _float(0, lo_open=True), "How long a query or SecAgg exchange waits for replies."
        ),
    )
    target: int = field(
        default=0,
        metadata=_ROUNDS(
            "target", _int(0), "Updates wanted per training round; 0: every available node (a synchronous round)."
        ),
    )
    over_selection: float = field(
        default=0.0,
        metadata=_ROUNDS(
            "over-selection",
            _float(0),
            "A training round asks `ceil(target * (1 + over-selection))` of the available nodes (at most all).",
        ),
    )
    round_deadline_s: float | None = field(
        default=None,
        metadata=_ROUNDS(
            "round-deadline-s",
            _optional(_float(0, lo_open=True)),
            "Close a round this many seconds after its messages were pushed; replies after it are late "
            "(discarded, counted).",
            shown="`round-timeout-s`",
        ),
    )
    min_replies: int = field(
        default=1,
        metadata=_ROUNDS(
            "min-replies",
            _int(0),
            "Aggregate only when at least this many updates arrived in time; otherwise skip the round, keep the model.",
        ),
    )
    selection_seed: int | None = field(
        default=None,
        metadata=_ROUNDS(
            "selection-seed", _optional(_int(0)), "Seed of the random selection of nodes.", shown="`seed`"
        ),
    )
    round_poll_s: float = field(
        default=0.5, metadata=_ROUNDS("round-poll-s", _float(0, lo_open=True), "How often a round pulls replies.")
    )
    reissue_after: float = field(
        default=0.5,
        metadata=_ROUNDS(
            "reissue-after",
            _float(0, 1, hi_open=True),
            "Send a task once more to a node still online that has not answered after this fraction of the round "
            "deadline (its pull answer may have been lost); 0: never.",
        ),
    )
    eval_target: int = field(
        default=0,
        metadata=_ROUNDS(
            "eval-target", _int(0), "An evaluation round asks a random `eval-target` of the nodes; 0: every node."
        ),
    )
    model_spec: str = field(
        default=DEFAULT_MODEL_SPEC,
        metadata=_TASK(
            "model-spec",
            _Converter("a JSON object (a model spec of flclient.protocol)", _model_spec),
            'The model: JSON `{"layers": [[n_in, n_out, activation], ...], "loss": ...}`.',
            shown="a linear 67 -> 10 model",
        ),
    )
    init_seed: int = field(default=0, metadata=_TASK("init-seed", _int(0), "Seed of the initial model's weights."))
    lr: float = field(default=0.1, metadata=_TASK("lr", _float(0, lo_open=True), "The devices' learning rate."))
    epochs: int = field(default=1, metadata=_TASK("epochs", _int(1), "Local epochs per training round."))
    batch_size: int = field(default=32, metadata=_TASK("batch-size", _int(1), "Local mini-batch size."))
    seed: int = field(
        default=0, metadata=_TASK("seed", _int(0), "The devices' training seed (and the default `selection-seed`).")
    )
    eval_fraction: float = field(
        default=0.2,
        metadata=_TASK(
            "eval-fraction", _float(0, 1, hi_open=True), "Share of each device's data held out for evaluation."
        ),
    )
    proximal_mu: float = field(
        default=0.0, metadata=_TASK("proximal-mu", _float(0), "FedProx's proximal term on the devices; 0: off.")
    )
    weight_decay: float = field(
        default=0.0, metadata=_TASK("weight-decay", _float(0), "L2 weight decay of the devices' optimiser; 0: off.")
    )
    personal_layers: int = field(
        default=0,
        metadata=_TASK(
            "personal-layers",
            _int(0),
            "k > 0: the model's last k dense layers are private heads on the devices, never uploaded; the server "
            "aggregates the other layers only, and evaluation records carry `per_device` accuracies.",
        ),
    )
    feature_module: str = field(
        default="",
        metadata=_FEATURES(
            "feature-module",
            _Converter("text (`name@version`)", _text),
            "The pinned feature module (needs feature-module-sha256); empty: none.",
        ),
    )
    feature_module_sha256: str = field(
        default="",
        metadata=_FEATURES(
            "feature-module-sha256", _Converter("64 hex digits", _sha256), "The sha256 the feature module must have."
        ),
    )
    feature_scale: tuple[float, ...] = field(
        default=(),
        metadata=_FEATURES(
            "feature-scale",
            _Converter("comma-separated finite numbers", _float_list),
            "Divisors of the feature module's numeric columns, in manifest order.",
            shown="none",
        ),
    )
    federated_scaler: bool = field(
        default=False,
        metadata=_FEATURES(
            "federated-scaler",
            _BOOL,
            "A feature-stats query round first; train and evaluate tasks then carry the global `scaler` and its "
            "`scaler-version`, stored as `<history-dir>/scalers/scaler-<version>.json`. Needs `feature-module`.",
        ),
    )
    backbone: str = field(
        default="",
        metadata=_BACKBONE(
            "backbone",
            _Converter("text (`name@version`)", _text),
            "The pinned frozen backbone (ONNX or TFLite file) of a backbone model: devices find it among their local "
            "`backbones` by sha256, or fetch it once through TUF by this pin. Empty: the name of `backbone-path` "
            "(`<file stem>@local`).",
        ),
    )
    backbone_sha256: str = field(
        default="",
        metadata=_BACKBONE(
            "backbone-sha256",
            _Converter("64 hex digits", _sha256),
            "The sha256 the backbone must have; empty: that of `backbone-path`.",
        ),
    )
    backbone_path: Path | None = field(
        default=None,
        metadata=_BACKBONE(
            "backbone-path",
            _PATH,
            "The backbone file on the server: its sha256 is the pin (it must match `backbone-sha256` when both are "
            "set). The file never travels in a task.",
            shown="unset",
        ),
    )
    lora_aggregation: str = field(
        default="exact",
        metadata=_BACKBONE(
            "lora-aggregation",
            _choice(("exact", "fedavg-ab")),
            "exact (FFA-LoRA: A is frozen, drawn from the model spec's seed on every device, and only B and the head "
            "are trained and sent, so the average of the updates is the update of the products B·A) or fedavg-ab "
            "(A and B are both trained and averaged separately, for comparison). Overrides the spec's `lora-a`.",
        ),
    )
    aggregation: str = field(
        default="fedavg",
        metadata=_AGGREGATION(
            "aggregation",
            _choice(AGGREGATIONS),
            "fedavg (weighted by examples), mean (equal weights, as SecAgg), median, trimmed-mean.",
        ),
    )
    trim_fraction: float = field(
        default=0.1,
        metadata=_AGGREGATION(
            "trim-fraction",
            _float(0, 0.5, hi_open=True),
            "trimmed-mean drops this share of the values at each end, per coordinate.",
        ),
    )
    norm_bound: float = field(
        default=0.0,
        metadata=_AGGREGATION("norm-bound", _float(0), "Reject an update whose delta has a larger L2 norm; 0: off."),
    )
    rollback_drop: float = field(
        default=0.0,
        metadata=_AGGREGATION(
            "rollback-drop", _float(0), "Roll back to the best version when accuracy falls this much below it; 0: off."
        ),
    )
    server_optimizer: str = field(
        default="fedavg",
        metadata=_OPTIMIZER(
            "server-optimizer",
            _choice(SERVER_OPTIMIZERS),
            "The optimiser applied to the aggregated delta (see `flclient.server._optim`).",
        ),
    )
    server_lr: float | None = field(
        default=None,
        metadata=_OPTIMIZER(
            "server-lr", _optional(_float(0, lo_open=True)), "The server learning rate.", shown="1 (0.01 for fedadam)"
        ),
    )
    server_momentum: float = field(
        default=0.9, metadata=_OPTIMIZER("server-momentum", _float(0, 1, hi_open=True), "fedavgm's momentum.")
    )
    adam_beta1: float = field(
        default=0.9, metadata=_OPTIMIZER("adam-beta1", _float(0, 1, hi_open=True), "fedadam's first-moment decay.")
    )
    adam_beta2: float = field(
        default=0.99, metadata=_OPTIMIZER("adam-beta2", _float(0, 1, hi_open=True), "fedadam's second-moment decay.")
    )
    adam_tau: float = field(
        default=1e-3,
        metadata=_OPTIMIZER("adam-tau", _float(0, lo_open=True), "fedadam's adaptivity (added to sqrt(v))."),
    )
    update_codec: str | None = field(
        default=None,
        metadata=_PRIVACY(
            "update-codec",
            _choice(UPDATE_CODECS, optional=True),
            "The devices reply with an encoded delta; unset: plain float32 arrays.",
            shown="unset",
        ),
    )
    clip_norm: float | None = field(
        default=None,
        metadata=_PRIVACY(
            "clip-norm", _optional(_float(0)), "The devices clip their delta to this L2 norm.", shown="unset"
        ),
    )
    topk_fraction: float | None = field(
        default=None,
        metadata=_PRIVACY(
            "topk-fraction",
            _optional(_float(0, 1, lo_open=True)),
            "Share of the coordinates the topk codec keeps.",
            shown="unset (the devices use 0.01)",
        ),
    )
    dp_noise_multiplier: float | None = field(
        default=None,
        metadata=_PRIVACY(
            "dp-noise-multiplier",
            _optional(_float(0)),
            "Gaussian noise multiplier (std = multiplier * clip-norm): added by the devices (local: needs "
            "update-codec) or the server (central). Needs clip-norm; not with secagg.",
            shown="unset",
        ),
    )
    dp_mode: str = field(
        default="local",
        metadata=_PRIVACY(
            "dp-mode",
            _choice(DP_MODES),
            "local: the devices add the noise; central: the devices clip only, the server clips again, averages with "
            "equal weights and adds the noise (needs fedavg, no secagg, clip-norm and dp-noise-multiplier > 0). Round "
            "records then carry `dp` with the run's epsilon so far.",
        ),
    )
    dp_delta: float = field(
        default=1e-5,
        metadata=_PRIVACY("dp-delta", _float(0, 1, lo_open=True, hi_open=True), "The delta epsilon is stated at."),
    )
    dp_population: int = field(
        default=0,
        metadata=_PRIVACY(
            "dp-population",
            _int(0),
            "Central DP's sampling rate is nodes asked / population; 0: the nodes in the round are everyone.",
        ),
    )
    secagg: bool = field(
        default=False,
        metadata=_SECAGG(
            "secagg", _BOOL, "Training rounds run SecAgg+ (excludes update-codec, personal-layers and dp-mode central)."
        ),
    )
    secagg_clip: float = field(
        default=1.0,
        metadata=_SECAGG(
            "secagg-clip", _float(0, lo_open=True), "Per-coordinate range of SecAgg's shared quantisation scale."
        ),
    )
    secagg_bits: int = field(
        default=24, metadata=_SECAGG("secagg-bits", _int(2, 32), "Bits per coordinate of SecAgg's quantisation.")
    )
    backend: tuple[str, ...] = field(
        default=(),
        metadata=_REQUIRES(
            "backend",
            _Converter("comma-separated backend names", _text_list),
            "Backends a device must have installed (all of them); none: any device.",
            shown="none",
        ),
    )
    min_runtime_version: str = field(
        default="",
        metadata=_REQUIRES(
            "min-runtime-version",
            _Converter("a version MAJOR[.MINOR[.PATCH]]", _version),
            "Devices whose runtime is older decline the task (`runtime-version`).",
            shown="none",
        ),
    )
    max_runtime_major: int | None = field(
        default=None,
        metadata=_REQUIRES(
            "max-runtime-major",
            _optional(_int(0)),
            "Devices whose runtime has a later major version decline the task.",
            shown="none",
        ),
    )
    model_format: str = field(
        default="",
        metadata=_REQUIRES(
            "model-format",
            _Converter("text (e.g. dense-v1)", _text),
            "The model format a device must support.",
            shown="none",
        ),
    )
    feature_abi: int | None = field(
        default=None,
        metadata=_REQUIRES(
            "feature-abi", _optional(_int(0)), "The feature-module ABI version a device must speak.", shown="none"
        ),
    )
    eval_every: int = field(
        default=0,
        metadata=_EVALUATION(
            "eval-every",
            _int(0),
            "k > 0: an evaluation round after every k-th training round, besides the final one; evaluation rounds "
            "never change the model and their records carry `by_class` (metrics per device class).",
        ),
    )
    history_dir: Path = field(
        default=Path("flclient-models"),
        metadata=_HISTORY(
            "history-dir",
            _SOME_PATH,
            "Model versions, each with the server optimiser's state (and device key pins, scalers).",
        ),
    )
    metrics_path: Path | None = field(
        default=None,
        metadata=_HISTORY(
            "metrics-path", _PATH, "Append one JSON line per round here (they are printed anyway).", shown="unset"
        ),
    )
    start_version: int = field(
        default=0,
        metadata=_HISTORY(
            "start-version",
            _int(0),
            "Resume (or roll back) from this model version and the optimiser state saved with it; 0: a new model.",
        ),
    )
    resume: bool = field(
        default=False,
        metadata=_HISTORY(
            "resume",
            _BOOL,
            "Continue a run that ended early (its SuperLink restarted): from the last round recorded in "
            "`<history-dir>/progress.json`, with the model version and optimiser state it reached.",
        ),
    )
    model_signing_key: Path | None = field(
        default=None,
        metadata=_TRUST(
            "model-signing-key",
            _PATH,
            "Ed25519 private key (PEM): every global model version carries `model-signature`.",
            shown="unset",
        ),
    )
    artifacts_repo: Path | None = field(
        default=None,
        metadata=_TRUST(
            "artifacts-repo",
            _PATH,
            "A TUF repository: every model version is published as the checkpoint `global@<version>` and tasks carry "
            "its pin. Needs `artifacts-keys`.",
            shown="unset",
        ),
    )
    artifacts_keys: tuple[Path, ...] = field(
        default=(),
        metadata=_TRUST(
            "artifacts-keys",
            _Converter("comma-separated paths", _path_list),
            "Private key files for publishing: the checkpoints role key and the online snapshot/timestamp key.",
            shown="none",
        ),
    )
    model_via_tuf: bool = field(
        default=False,
        metadata=_TRUST(
            "model-via-tuf", _BOOL, "Tasks carry only the checkpoint pin, not the arrays (needs artifacts-repo)."
        ),
    )
    require_signed_updates: bool = field(
        default=False,
        metadata=_TRUST("require-signed-updates", _BOOL, "Reject a train reply without a valid update signature."),
    )
    device_keys: Path | None = field(
        default=None,
        metadata=_TRUST(
            "device-keys", _PATH, "A directory of `*.pub` device update keys: only those are accepted.", shown="unset"
        ),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            key = f.metadata["key"]
            raw = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, f.metadata["conv"](raw))
            except _Bad as exc:
                raise RunConfigError(key, f"{raw!r} is not allowed: expected {exc}") from None
        self._check_rules()

    def _check_rules(self) -> None:
        """The rules that tie keys together."""
        if self.target and self.min_replies > self.target:
            raise RunConfigError("min-replies", f"{self.min_replies} must not exceed target ({self.target})")
        if self.dp_mode == "central":
            if self.secagg or self.aggregation != "fedavg":
                raise RunConfigError(
                    "dp-mode",
                    f"central needs plain fedavg aggregation without secagg, got {self.aggregation!r}"
                    + (" with secagg" if self.secagg else ""),
                )
            if not self.clip_norm:
                raise RunConfigError("clip-norm", f"dp-mode central needs a positive clip-norm, got {self.clip_norm}")
            if not self.dp_noise_multiplier:
                raise RunConfigError(
                    "dp-noise-multiplier",
                    f"dp-mode central needs a positive dp-noise-multiplier, got {self.dp_noise_multiplier}",
                )
        if self.dp_noise_multiplier and not self.clip_norm:
            raise RunConfigError("dp-noise-multiplier", "needs clip-norm (the sensitivity the noise is scaled to)")
        if self.dp_noise_multiplier and self.secagg:
            raise RunConfigError("dp-noise-multiplier", "SecAgg rounds would not add this noise: unset it with secagg")
        if self.dp_noise_multiplier and self.dp_mode == "local" and not self.update_codec:
            raise RunConfigError(
                "dp-noise-multiplier",
                "local DP noise is added by the devices' update pipeline, which runs only with update-codec "
                "(set update-codec, e.g. fp32)",
            )
        if self.secagg and self.personal_layers:
            raise RunConfigError(
                "secagg", "secagg and personal-layers exclude each other: SecAgg masks the whole model"
            )
        if self.secagg and self.update_codec:
            raise RunConfigError(
                "secagg", "secagg and update-codec exclude each other: SecAgg masks its own quantised update"
            )
        if self.federated_scaler and not self.feature_module:
            raise RunConfigError("federated-scaler", "federated-scaler needs a pinned feature-module")
        if self.feature_module_sha256 and not self.feature_module:
            raise RunConfigError("feature-module-sha256", "is set but feature-module is not")
        if self.backbone_sha256 and not (self.backbone or self.backbone_path):
            raise RunConfigError("backbone-sha256", "is set but neither backbone nor backbone-path is")
        if self.backbone and not (self.backbone_sha256 or self.backbone_path):
            raise RunConfigError("backbone", "needs backbone-sha256 (or backbone-path, whose sha256 is the pin)")
        if self.model_via_tuf and self.artifacts_repo is None:
            raise RunConfigError("model-via-tuf", "model-via-tuf needs artifacts-repo (and artifacts-keys)")
        if self.artifacts_repo is not None and not self.artifacts_keys:
            raise RunConfigError(
                "artifacts-keys", "artifacts-repo needs artifacts-keys (the checkpoints role key and the online key)"
            )
        from ._plan import plan_from_config

        plan_from_config(self)  # what the protocol refuses (a model spec, a feature pin, ...) stops the run here too

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's run config (missing keys take their defaults); raises :class:`~flclient.RunConfigError`."""
        by_key = {f.metadata["key"]: f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in run_config if k not in by_key)
        if unknown:
            hints = [
                f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, by_key, 1)) else repr(k)
                for k in unknown
            ]
            raise RunConfigError(
                unknown[0], f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; see docs/run-config.md"
            )
        return cls(**{by_key[k]: v for k, v in run_config.items()})

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """The run config that gives this value back (its non-default keys), e.g. for a Flower app's pyproject."""
        out: dict[str, str | int | float | bool] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default or value is None:
                continue
            if isinstance(value, tuple):
                out[f.metadata["key"]] = ",".join(str(v) for v in value)
            elif isinstance(value, Path):
                out[f.metadata["key"]] = str(value)
            else:
                out[f.metadata["key"]] = value
        return out

    # -- values derived from several keys ----------------------------------------------------------------------
    @property
    def deadline_s(self) -> float:
        """When a round closes: ``round-deadline-s``, else ``round-timeout-s``."""
        return self.round_timeout_s if self.round_deadline_s is None else self.round_deadline_s

    @property
    def selection_rng_seed(self) -> int:
        """The selection's seed: ``selection-seed``, else ``seed``."""
        return self.seed if self.selection_seed is None else self.selection_seed

    @property
    def optimizer_lr(self) -> float:
        """The server learning rate: ``server-lr``, else 1 (0.01 for ``fedadam``)."""
        if self.server_lr is not None:
            return self.server_lr
        return 0.01 if self.server_optimizer == "fedadam" else 1.0


def run_config_reference() -> str:
    """The run-config reference as Markdown (what ``docs/run-config.md`` holds), from :class:`RunConfig`'s fields."""
    out = [
        "# Run config reference",
        "",
        "<!-- Generated from flclient/protocol/_runconfig.py by "
        "`python scripts/gen_run_config_doc.py`; do not edit by hand. -->",
        "",
        "The flclient ServerApp (`flclient.server.app:app`) reads these keys from Flower's run config "
        "(`[tool.flwr.app.config]` in the app's `pyproject.toml`, or `flwr run --run-config`). All are optional. "
        "Values may be strings, numbers or booleans; they are converted and checked once, before the first round: "
        "an unknown key or a bad value stops the run with `RunConfigError`, naming the key, the value and what "
        "is allowed.",
    ]
    section = None
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if meta["section"] != section:
            section = meta["section"]
            out += ["", f"## {section}", "", "| key | value | default | meaning |", "| --- | --- | --- | --- |"]
        default = meta["shown"] or _shown(f.default)
        cells = [f"`{meta['key']}`", meta["conv"].text, default, meta["doc"]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and not value:
        return "empty"
    return f"`{value}`"
