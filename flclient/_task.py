"""Task execution: one instruction's content in, one reply's content out (no I/O beyond the local data).

A ``train`` message runs the round pipeline: local raw records -> the pinned WASM feature module (sandboxed) ->
columns -> ``runtimes`` backend -> new parameters, replied in Flower's standard layout
``{"arrays": ArrayRecord, "metrics": MetricRecord with "num-examples"}``. ``evaluate`` and ``query`` likewise.

The task config (``content["config"]``) says what to run:

=========================  ==========================================================================
``feature-module``         ``"name@version"`` of the feature module the round needs (pinned)
``feature-module-sha256``  its sha256; a device without exactly that module declines the task
``feature-scale``          divisors for the module's numeric output columns, in manifest order
``model-spec``             JSON: ``{"layers": [[in, out, activation], ...], "loss": "cross_entropy"}``
``epochs`` ``batch-size`` ``lr`` ``optimizer`` ``seed``   training settings (``runtimes.TrainConfig``)
``eval-fraction``          share of local examples held out for evaluation (seeded split)
``model-version``          the global model's version, echoed in the reply metrics
``update-codec``           reply with an encoded delta instead of the new arrays (see :func:`update_pipeline`):
                           ``fp32`` ``fp16`` ``bf16`` ``int8`` ``rotated1`` ``rotated2`` ``rotated4`` ``topk``
``clip-norm``              L2 bound of the delta (needed by DP); ``topk-fraction`` the share top-k keeps
``dp-noise-multiplier``    Gaussian DP noise multiplier; ``dp-mode`` ``local``: the device adds noise of std
                           multiplier x clip-norm; ``central``: the device only clips, the server adds the noise;
                           either way the round is charged to the device's privacy ledger
``query``                  ``feature-stats`` (query messages): reply the sum, sum of squares and count of the
                           feature module's numeric output columns (raw, unscaled) in a ``"stats"`` record
``scaler`` ``scaler-version``  a federated scaler (JSON ``{"version", "module-sha256", "mean", "std"}``) and
                           the version the task names: the module's columns become ``(v - mean) / std``
                           instead of ``feature-scale``; a scaler this device cannot apply (another version,
                           another module, other width, older than one it already used) declines ``stale-scaler``
``proximal-mu``            FedProx: ``mu/2 * ||w - w_global||^2`` added to the local loss (0 = off)
``model-pin``              ``"global@<version>"``: the model is the TUF checkpoint with ``model-sha256`` (devices
                           with ``[artifacts]`` fetch and verify it; the task may then carry no arrays)
``model-signature``        the server plugin's Ed25519 signature of the model (checked with ``[signatures]``)
``run-id``                 the run (a decimal string): train replies are signed for run, round, node and version
``personal-layers``        k > 0: the last k dense layers are this device's private head: trained and kept on
                           the device (``personal_path``), used for its evaluation, and never in a reply
=========================  ==========================================================================

With ``update-codec`` set, a train reply is ``{"update": ArrayRecord({"payload": uint8 bytes}), "metrics": ...}``:
the bytes of :meth:`flclient.update.EncodedUpdate.to_bytes`, which the server reads with
:func:`flclient.update.decode_update`. Without it the reply keeps Flower's plain float32 ``"arrays"``.

Train and evaluate replies of a device that knows its class (``device_class``, or the data's) carry it in a
``"device"`` ConfigRecord (``device-class``): the server reports evaluation per device class.

A ``gate`` (:class:`flclient.gate.ParticipationGate`) is asked ``may_start`` before training and ``may_continue``
after it; a device that may not train declines with reason ``not-eligible`` and the gate's coarse reasons.
A ``secagg`` handler answers SecAgg stage instructions, running this executor for the masked update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ._errors import FeatureError, PrivacyBudgetExhausted, TaskDeclined
from ._personal import personal_parameter_names
from .features import FeatureModule, SandboxLimits
from .fleet._objects import ArrayRecord, ConfigRecord, ConfigValue, MetricRecord, MetricValue, RecordDict
from .gate import ParticipationGate, Reason, RoundOutcome
from .secagg import SecAggTaskHandler
from .update import (
    BlockInt8Codec,
    ClipConfig,
    ClipStage,
    EncodeStage,
    ErrorFeedback,
    Float16Codec,
    LosslessFloat32Codec,
    PrivacyConfig,
    PrivacyLedger,
    PrivacyStage,
    ResidualStore,
    RotatedCodec,
    TopKCodec,
    UpdateCodec,
    UpdatePipeline,
    UpdateStage,
    secure_generator,
)

if TYPE_CHECKING:  # flclient.artifacts imports tuf: loaded only by devices that configure trusted artifacts
    from .artifacts import RoundTrust

__all__ = [
    "UPDATE_CODECS",
    "UPDATE_RECORD",
    "DataSource",
    "LocalData",
    "NpzDataSource",
    "TaskExecutor",
    "TaskOutcome",
    "personal_parameter_names",
    "update_pipeline",
]

UPDATE_RECORD = "update"
UPDATE_CODECS = ("fp32", "fp16", "bf16", "int8", "rotated1", "rotated2", "rotated4", "topk")


@dataclass(frozen=True, kw_only=True, eq=False)
class LocalData:
    """A device's raw records: the feature module's input columns, optional dense extras ``x`` and labels."""

    columns: Mapping[str, np.ndarray]
    labels: np.ndarray
    x: np.ndarray | None = None
    device_class: str | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, col in self.columns.items():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows but there are {n} labels")
        if self.x is not None and len(self.x) != n:
            raise ValueError(f"x has {len(self.x)} rows but there are {n} labels")


class DataSource(Protocol):
    """Where a device's local training records come from (read at each task, so new records count)."""

    def load(self) -> LocalData:
        """The current local records."""
        ...


@dataclass(frozen=True)
class NpzDataSource:
    """Records in an ``.npz`` file: module input columns by name, ``label``, optionally ``x`` and a 0-d string
    ``device_class``."""

    path: Path

    def load(self) -> LocalData:
        """Read the file (``allow_pickle=False``)."""
        with np.load(self.path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        labels = arrays.pop("label")
        x = arrays.pop("x", None)
        cls = arrays.pop("device_class", None)
        return LocalData(columns=arrays, labels=labels, x=x, device_class=None if cls is None else str(cls))


@dataclass(frozen=True)
class TaskOutcome:
    """A reply's content plus what telemetry wants to know about producing it."""

    content: RecordDict
    train_s: float = 0.0
    features_s: float = 0.0
    num_examples: int = 0


@dataclass
class TaskExecutor:
    """Runs ``train`` / ``evaluate`` / ``query`` instructions against local data and local feature modules.

    ``feature_modules`` are module files the device has (verified by sha256 at use); a pin in the task config
    that none of them satisfies is declined with :class:`~flclient.TaskDeclined`, never run with another version.
    """

    data: DataSource
    feature_modules: Sequence[Path] = ()
    module_cache_dir: Path | None = None
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    backend: str = "numpy"
    clock: Callable[[], float] = time.perf_counter
    gate: ParticipationGate | None = None
    secagg: SecAggTaskHandler | None = None
    ledger: PrivacyLedger | None = None
    residuals: ResidualStore | None = None
    update_rng: Callable[[], np.random.Generator] = secure_generator
    device_class: str | None = None
    personal_path: Path | None = None
    trust: RoundTrust | None = None
    _personal: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False)
    _modules: dict[str, FeatureModule] = field(default_factory=dict, init=False, repr=False)
    _scaler_version: int = field(default=0, init=False, repr=False)

    def close(self) -> None:
        """Release the loaded feature modules."""
        for module in self._modules.values():
            module.close()
        self._modules.clear()

    def run(self, message_type: str, content: RecordDict, *, message_id: str = "") -> TaskOutcome:
        """Execute one instruction; raises :class:`~flclient.TaskDeclined` when it cannot be run as asked.

        ``message_id`` (the instruction's) names the round in the privacy ledger, so that the node can mark the
        participation uploaded once its reply is pushed (:meth:`PrivacyLedger.mark_uploaded_round`).
        """
        if self.secagg is not None and self.secagg.wants(content):
            return TaskOutcome(self.secagg.run(content, lambda c: self.run(message_type, c).content))
        kind = message_type.split(".")[0]
        config = _config(content)
        if kind == "query" and config.get("query") == "feature-stats":
            return self._feature_stats(config)
        if kind == "query":
            local = self.data.load()
            return TaskOutcome(
                {"metrics": MetricRecord({"num-examples": len(local.labels)})}, num_examples=len(local.labels)
            )
        if kind not in ("train", "evaluate"):
            raise TaskDeclined("unsupported-message-type", f"this device runs train, evaluate and query, not {kind!r}")
        arrays = content.get("arrays")
        if not isinstance(arrays, ArrayRecord) and self.trust is None:
            raise TaskDeclined("no-model", "the instruction carries no 'arrays' record")
        pipeline = (
            update_pipeline(config, ledger=self.ledger, residuals=self.residuals, rng=self.update_rng)
            if kind == "train"
            else None
        )
        if kind == "train" and self.gate is not None:
            start = self.gate.may_start()
            if not start.eligible:
                raise _not_eligible(RoundOutcome(status="not_eligible", reasons=tuple(r.value for r in start.reasons)))
        noise = _num(config, "dp-noise-multiplier", 0.0) if pipeline is not None else 0.0
        if noise and self.ledger is not None and not self.ledger.check(noise_multiplier=noise).allowed:
            # Refused before any work: the round would take the device past its lifetime privacy budget.
            raise _not_eligible(RoundOutcome(status="not_eligible", reasons=(Reason.PRIVACY_BUDGET.value,)))
        t0 = self.clock()
        x, y, data_class = self._features(config)
        device_record: RecordDict = {}
        if self.device_class or data_class:
            device_record["device"] = ConfigRecord({"device-class": str(self.device_class or data_class)})
        features_s = self.clock() - t0
        spec = _model_spec(config)
        if self.trust is not None:  # a TUF checkpoint pin and/or the server's signature, checked before loading
            params = self.trust.global_model(arrays.arrays if isinstance(arrays, ArrayRecord) else None, config)
        else:
            assert isinstance(arrays, ArrayRecord)
            params = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.arrays.items()}
        personal = personal_parameter_names(config)
        local_params = dict(params)
        if personal:
            head = self._personal_head()
            for k in personal & set(params):
                if k in head and head[k].shape == params[k].shape:
                    local_params[k] = head[k]
        seed = int(_num(config, "seed", 0))
        eval_fraction = float(_num(config, "eval-fraction", 0.2))
        order = np.random.Generator(np.random.PCG64(seed)).permutation(len(y))
        n_eval = round(len(y) * eval_fraction) if len(y) > 1 else 0
        eval_idx, train_idx = order[:n_eval], order[n_eval:]
        import runtimes

        backend = runtimes.create_backend(self.backend)
        try:
            try:
                backend.load(spec, local_params)
            except (runtimes.RuntimeBackendError, ValueError) as exc:
                raise TaskDeclined("model-mismatch", str(exc)) from exc
            metrics: dict[str, MetricValue] = {"features-s": features_s}
            if "model-version" in config:
                metrics["model-version"] = int(_num(config, "model-version", 0))
            if n_eval:
                ev = backend.evaluate(runtimes.TrainingData(x=x[eval_idx], y=y[eval_idx]))
                metrics["eval-loss"] = float(ev["loss"])
                if "accuracy" in ev:
                    metrics["eval-acc"] = float(ev["accuracy"])
                metrics["eval-examples"] = int(n_eval)
            if kind == "evaluate":
                metrics["num-examples"] = int(n_eval)
                return TaskOutcome(
                    {"metrics": MetricRecord(metrics), **device_record}, features_s=features_s, num_examples=n_eval
                )
            if len(train_idx) == 0:
                raise TaskDeclined("no-data", "no local examples left for training")
            prox_mu = _num(config, "proximal-mu", 0.0)
            if not (prox_mu >= 0 and np.isfinite(prox_mu)):
                raise TaskDeclined("bad-config", f"proximal-mu must be a finite number >= 0, got {prox_mu}")
            cfg = runtimes.TrainConfig(
                epochs=int(_num(config, "epochs", 1)),
                batch_size=int(_num(config, "batch-size", 32)),
                learning_rate=float(_num(config, "lr", 0.05)),
                optimizer=str(config.get("optimizer", "sgd")),  # type: ignore[arg-type]
                prox_mu=prox_mu,
                seed=seed,
            )
            t1 = self.clock()
            result = backend.fit(runtimes.TrainingData(x=x[train_idx], y=y[train_idx]), cfg)
            train_s = self.clock() - t1
        finally:
            backend.close()
        if self.gate is not None:
            cont = self.gate.may_continue()
            if not cont.eligible:
                self.gate.record_abandoned()
                raise _not_eligible(RoundOutcome(status="abandoned", reasons=tuple(r.value for r in cont.reasons)))
            self.gate.record_completed()
        new = dict(local_params)
        new.update({k: np.asarray(v, dtype=np.float32) for k, v in result.parameters.items()})
        if personal:
            self._save_personal_head({k: new[k] for k in personal if k in new})
            new = {k: v for k, v in new.items() if k not in personal}  # the private head never leaves the device
            params = {k: v for k, v in params.items() if k not in personal}
        metrics.update(
            {
                "num-examples": int(result.num_examples),
                "train-loss": float(result.loss_curve[-1]) if result.loss_curve else float("nan"),
                "train-s": train_s,
            }
        )
        if pipeline is not None:
            round_id = message_id or f"{int(_num(config, 'server-round', 0))}/{int(_num(config, 'model-version', 0))}"
            try:
                encoded = pipeline.run(round_id=round_id, new=new, old=params, names=list(params)).to_bytes()
            except PrivacyBudgetExhausted as exc:
                raise TaskDeclined("privacy-budget", str(exc)) from exc
            metrics["update-bytes"] = len(encoded)
            reply: RecordDict = {
                UPDATE_RECORD: ArrayRecord({"payload": np.frombuffer(encoded, dtype=np.uint8)}),
                "metrics": MetricRecord(metrics),
                **device_record,
            }
        else:
            reply = {"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics), **device_record}
        if self.trust is not None:
            self._sign_reply(reply, config)
        return TaskOutcome(
            reply,
            train_s=train_s,
            features_s=features_s,
            num_examples=int(result.num_examples),
        )

    def _sign_reply(self, reply: RecordDict, config: Mapping[str, ConfigValue]) -> None:
        """Add the ``"signature"`` record: the device's Ed25519 signature over its update, bound to the context."""
        from .artifacts._round import SIGNATURE_RECORD, update_payload

        assert self.trust is not None
        update, plain = reply.get(UPDATE_RECORD), reply.get("arrays")
        encoded = update.arrays["payload"].tobytes() if isinstance(update, ArrayRecord) else None
        arrays = plain.arrays if isinstance(plain, ArrayRecord) else None
        payload = update_payload(arrays, encoded, int(_num(config, "model-version", 0)))
        signed = self.trust.sign_reply(payload, config)
        if signed is not None:
            reply[SIGNATURE_RECORD] = ConfigRecord(dict(signed))

    # -- the private head (personalisation) ---------------------------------------------------------------------------
    def _personal_head(self) -> dict[str, np.ndarray]:
        if self._personal is None:
            self._personal = {}
            if self.personal_path is not None and self.personal_path.exists():
                try:
                    with np.load(self.personal_path, allow_pickle=False) as f:
                        self._personal = {k: np.asarray(f[k], dtype=np.float32) for k in f.files}
                except (OSError, ValueError):
                    self._personal = {}  # an unreadable head is re-learnt from the global one
        return self._personal

    def _save_personal_head(self, head: Mapping[str, np.ndarray]) -> None:
        self._personal_head().update({k: np.array(v, dtype=np.float32) for k, v in head.items()})
        if self.personal_path is not None:
            import io

            from ._atomic import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, allow_pickle=False, **self._personal_head())
            self.personal_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.personal_path, buf.getvalue(), mode=0o600)

    # -- the feature stage -------------------------------------------------------------------------------------------
    def _module(self, config: Mapping[str, ConfigValue]) -> FeatureModule:
        pin = config.get("feature-module")
        sha = config.get("feature-module-sha256")
        if not isinstance(pin, str) or "@" not in pin or not isinstance(sha, str):
            raise TaskDeclined("no-feature-pin", "the task must pin 'feature-module' (name@version) and its sha256")
        name, version = pin.split("@", 1)
        if sha in self._modules:
            return self._modules[sha]
        seen: list[str] = []
        for path in self.feature_modules:
            try:
                module = FeatureModule.load(path, limits=self.sandbox, cache_dir=self.module_cache_dir)
            except FeatureError:
                continue
            m = module.manifest
            seen.append(f"{m.name}@{m.version}")
            if (m.name, m.version, module.sha256) == (name, version, sha):
                self._modules[sha] = module
                return module
            module.close()
        fetched = self.trust.module(name, version, sha) if self.trust is not None else None
        if fetched is not None:  # through TUF: exactly the pinned name, version and sha256, verified
            try:
                module = FeatureModule.load(
                    fetched, limits=self.sandbox, cache_dir=self.module_cache_dir, expected_sha256=sha
                )
            except FeatureError as exc:
                raise TaskDeclined("feature-module-invalid", f"{pin} from the artifact repository: {exc}") from exc
            if (module.manifest.name, module.manifest.version) != (name, version):
                module.close()
                raise TaskDeclined("feature-module-pin", f"the artifact published as {pin} is another module")
            self._modules[sha] = module
            return module
        raise TaskDeclined(
            "feature-module-pin",
            f"no local module is {pin} with sha256 {sha[:16]}…; this device has {', '.join(seen) or 'none'}",
        )

    def _extract(self, config: Mapping[str, ConfigValue]) -> tuple[LocalData, list[np.ndarray], np.ndarray]:
        """Local records, the module's numeric output columns (rows x width, float64, raw) and the valid rows."""
        module = self._module(config)
        local = self.data.load()
        try:
            out = module.extract({c.name: local.columns[c.name] for c in module.manifest.inputs})
        except KeyError as exc:
            raise TaskDeclined("data-mismatch", f"local data lacks the module input column {exc}") from exc
        numeric = [c for c in module.manifest.outputs if c.dtype != "ascii"]
        cols = [np.asarray(out[c.name], dtype=np.float64).reshape(len(local.labels), -1) for c in numeric]
        return local, cols, np.asarray(out["status"]) == 0

    def _feature_stats(self, config: Mapping[str, ConfigValue]) -> TaskOutcome:
        """Sum, sum of squares and count of the module's numeric columns over the valid local rows."""
        t0 = self.clock()
        _, cols, ok = self._extract(config)
        values = np.concatenate(cols, axis=1)[ok] if cols else np.zeros((int(ok.sum()), 0))
        count = len(values)
        reply: RecordDict = {
            "stats": ArrayRecord(
                {
                    "sum": values.sum(axis=0),
                    "sumsq": np.square(values).sum(axis=0),
                    "count": np.array([count], dtype=np.int64),
                }
            ),
            "metrics": MetricRecord({"num-examples": count, "features-s": self.clock() - t0}),
        }
        return TaskOutcome(reply, features_s=self.clock() - t0, num_examples=count)

    def _scaler(self, config: Mapping[str, ConfigValue], width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The task's federated scaler as (mean, std), None without one; declines one it cannot apply."""
        if "scaler-version" not in config and "scaler" not in config:
            return None
        version = int(_num(config, "scaler-version", 0))
        raw = config.get("scaler")
        try:
            scaler = json.loads(raw) if isinstance(raw, str) else None
            mean = np.asarray(scaler["mean"], dtype=np.float64) if scaler else None
            std = np.asarray(scaler["std"], dtype=np.float64) if scaler else None
        except (ValueError, KeyError, TypeError) as exc:
            raise TaskDeclined("bad-config", f"scaler is not valid JSON with mean and std: {exc}") from exc
        if scaler is None or mean is None or std is None:
            raise TaskDeclined("stale-scaler", f"the task names scaler version {version} but carries no scaler")
        if scaler.get("version") != version:
            raise TaskDeclined(
                "stale-scaler", f"the task names scaler version {version}, its scaler is {scaler.get('version')}"
            )
        if version < self._scaler_version:
            raise TaskDeclined(
                "stale-scaler", f"scaler version {version} is older than version {self._scaler_version} used here"
            )
        if scaler.get("module-sha256") != config.get("feature-module-sha256"):
            raise TaskDeclined("stale-scaler", f"scaler version {version} was computed for another feature module")
        if mean.shape != (width,) or std.shape != (width,) or not (np.all(np.isfinite(mean)) and np.all(std > 0)):
            raise TaskDeclined("stale-scaler", f"scaler version {version} does not fit the module's {width} columns")
        self._scaler_version = version
        return mean, std

    def _features(self, config: Mapping[str, ConfigValue]) -> tuple[np.ndarray, np.ndarray, str | None]:
        local, raw, ok = self._extract(config)
        width = sum(c.shape[1] for c in raw)
        scaler = self._scaler(config, width)
        if scaler is not None:
            mean, std = scaler
            joined = (np.concatenate(raw, axis=1) - mean) / std if raw else np.zeros((len(local.labels), 0))
            cols = [joined.astype(np.float32)]
        else:
            scale = config.get("feature-scale", [1.0] * len(raw))
            if not isinstance(scale, list) or len(scale) != len(raw):
                raise TaskDeclined("bad-config", f"feature-scale must list {len(raw)} divisors")
            cols = [
                c.astype(np.float32) / float(s)  # type: ignore[arg-type]
                for c, s in zip(raw, scale, strict=True)
            ]
        if local.x is not None:
            cols.insert(0, np.asarray(local.x, dtype=np.float32).reshape(len(local.labels), -1))
        x = np.concatenate(cols, axis=1)[ok]
        y = np.asarray(local.labels)[ok]
        if len(y) == 0:
            raise TaskDeclined("no-data", "no valid local examples after feature extraction")
        return x, y, local.device_class


def update_pipeline(
    config: Mapping[str, ConfigValue],
    *,
    ledger: PrivacyLedger | None = None,
    residuals: ResidualStore | None = None,
    rng: Callable[[], np.random.Generator] = secure_generator,
) -> UpdatePipeline | None:
    """The clip -> DP -> encode pipeline a task config asks for, or None (plain arrays) without ``update-codec``.

    A config this device cannot honour is declined (``bad-config``), never silently weakened.
    """
    name = config.get("update-codec")
    if name is None or name == "":
        return None
    codec: UpdateCodec
    if name == "fp32":
        codec = LosslessFloat32Codec()
    elif name in ("fp16", "bf16"):
        codec = Float16Codec(kind=name)
    elif name == "int8":
        codec = BlockInt8Codec()
    elif name in ("rotated1", "rotated2", "rotated4"):
        codec = RotatedCodec(bits=int(name[-1]))
    elif name == "topk":
        fraction = _num(config, "topk-fraction", 0.01)
        if not 0 < fraction <= 1:
            raise TaskDeclined("bad-config", f"topk-fraction must be in (0, 1], got {fraction}")
        codec = TopKCodec(fraction=fraction)
    else:
        raise TaskDeclined("bad-config", f"update-codec must be one of {', '.join(UPDATE_CODECS)}, got {name!r}")
    stages: list[UpdateStage] = []
    clip = _num(config, "clip-norm", 0.0)
    if clip < 0 or not np.isfinite(clip):
        raise TaskDeclined("bad-config", f"clip-norm must be a positive number (0 = off), got {clip}")
    if clip:
        stages.append(ClipStage(config=ClipConfig(max_norm=clip)))
    noise = _num(config, "dp-noise-multiplier", 0.0)
    if noise:
        mode = config.get("dp-mode", "local")
        if mode not in ("local", "central"):
            raise TaskDeclined("bad-config", f"dp-mode must be 'local' or 'central', got {mode!r}")
        if not clip:
            raise TaskDeclined("bad-config", "dp-noise-multiplier needs clip-norm (the sensitivity)")
        if not (noise > 0 and np.isfinite(noise)):
            raise TaskDeclined("bad-config", f"dp-noise-multiplier must be a positive number, got {noise}")
        privacy = PrivacyConfig(mode="central" if mode == "central" else "local", noise_multiplier=noise)
        stages.append(PrivacyStage(config=privacy, ledger=ledger))
    feedback = ErrorFeedback(store=residuals) if residuals is not None and not codec.unbiased else None
    stages.append(EncodeStage(codec=codec, rng=rng(), error_feedback=feedback))
    return UpdatePipeline(stages)


def _not_eligible(outcome: RoundOutcome) -> TaskDeclined:
    return TaskDeclined("not-eligible", json.dumps(outcome.to_reply(), sort_keys=True))


def _config(content: RecordDict) -> dict[str, ConfigValue]:
    rec = content.get("config")
    return dict(rec.values) if isinstance(rec, ConfigRecord) else {}


def _num(config: Mapping[str, ConfigValue], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskDeclined("bad-config", f"config {key!r} must be a number, got {value!r}")
    return float(value)


def _model_spec(config: Mapping[str, ConfigValue]) -> Any:
    import runtimes

    raw = config.get("model-spec")
    if not isinstance(raw, str):
        raise TaskDeclined("bad-config", "config 'model-spec' (JSON) is missing")
    try:
        spec = json.loads(raw)
        layers = tuple(
            runtimes.DenseLayer(in_features=int(i), out_features=int(o), activation=a) for i, o, a in spec["layers"]
        )
        return runtimes.DenseStack(layers=layers, loss=spec.get("loss", "cross_entropy"))
    except (ValueError, KeyError, TypeError) as exc:
        raise TaskDeclined("bad-config", f"model-spec is not a valid dense stack: {exc}") from exc
