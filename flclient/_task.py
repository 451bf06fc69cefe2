"""Task execution: one instruction in, one reply out (no I/O beyond the local data and the artifacts).

:class:`TaskExecutor` decodes an instruction's content once into a typed :mod:`flclient.protocol` task and runs it
through one handler - resolve artifacts -> extract features -> load model -> fit -> build update - wrapped by the
ordered concerns of :mod:`flclient._concerns` (gate, compatibility, privacy budget, signing, SecAgg). The keys a
task may carry are the protocol's (:class:`flclient.protocol.Key`, documented there); a task this device cannot
run as asked is declined with a :class:`~flclient.TaskDeclined` whose reason is a :class:`flclient.protocol.Code`.

Train replies keep Flower's layout: ``{"arrays": ArrayRecord, "metrics": MetricRecord with "num-examples"}``,
or with an ``update-codec`` an ``"update"`` record holding the bytes of
:meth:`flclient.update.EncodedUpdate.to_bytes`. Every reply carries a ``"device"`` record: the device class
(the server reports evaluation per class) and what the device can run (backends, feature ABI, runtime version).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._concerns import (
    CompatibilityConcern,
    Concern,
    GateConcern,
    Handler,
    NodeBinding,
    PrivacyConcern,
    RoundContext,
    SecAggConcern,
    SigningConcern,
    compose,
)
from ._data import DataSource, LocalData, NpzDataSource
from ._errors import FeatureError, PrivacyBudgetExhausted, ProtocolError, TaskDeclined
from ._personal import personal_parameter_names
from .features import ABI_VERSION, FeatureModule, SandboxLimits
from .fleet._objects import ArrayRecord, ConfigRecord, RecordDict
from .gate import DeviceCapabilities, ParticipationGate
from .protocol import (
    BackboneLoRASpec,
    BackbonePin,
    Code,
    DenseModelSpec,
    DeviceInfo,
    EvaluateReply,
    EvaluateTask,
    FeaturePin,
    FeatureSpec,
    QueryReply,
    QueryTask,
    Reply,
    ReplyMetrics,
    StatsReply,
    Task,
    TrainReply,
    TrainTask,
    UpdateSpec,
    ValueReader,
    decode_task,
)
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
    import runtimes

    from .artifacts import RoundTrust

__all__ = [
    "DataSource",
    "LocalData",
    "NpzDataSource",
    "TaskExecutor",
    "TaskOutcome",
    "device_capabilities",
    "personal_parameter_names",
    "update_pipeline",
]

MODEL_FORMATS = ("dense-v1", "backbone-head-v1", "backbone-lora-v1")
"""The model formats this release loads (see :attr:`flclient.protocol.DenseModelSpec.model_format`)."""


@dataclass(frozen=True)
class TaskOutcome:
    """A reply (typed, and as the content of a reply message) plus what telemetry wants to know about it."""

    content: RecordDict
    train_s: float = 0.0
    features_s: float = 0.0
    num_examples: int = 0
    reply: Reply | None = None

    @classmethod
    def of(cls, reply: Reply) -> TaskOutcome:
        """The outcome of a typed reply."""
        metrics = getattr(reply, "metrics", None)
        return cls(
            reply.to_records(),
            train_s=float(metrics.train_s or 0.0) if metrics is not None else 0.0,
            features_s=float(metrics.features_s or 0.0) if metrics is not None else 0.0,
            num_examples=int(metrics.num_examples) if metrics is not None else 0,
            reply=reply,
        )


def device_capabilities(*, runtime_version: str | None = None, app_version: str | None = None) -> DeviceCapabilities:
    """What this installation can run: the runtime version, the feature ABI, model formats and backends."""
    import runtimes

    from . import __version__

    return DeviceCapabilities(
        app_version=app_version or __version__,
        runtime_version=runtime_version or __version__,
        model_formats=MODEL_FORMATS,
        feature_abis=(ABI_VERSION,),
        backends=runtimes.available_backends(),
    )


@dataclass
class TaskExecutor:
    """Runs ``train`` / ``evaluate`` / ``query`` instructions against local data and local feature modules.

    ``feature_modules`` are module files the device has (verified by sha256 at use); a pin in the task that none
    of them satisfies is declined with :class:`~flclient.TaskDeclined`, never run with another version. The
    backend is the one the task's model needs (``backend`` overrides it, e.g. to test a backend). ``node`` is
    where the node records its node id once connected (SecAgg and update signatures name it); ``secagg`` makes
    this node's SecAgg handler for a node id. The handler chain is built once, at construction.

    ``backbones`` are frozen backbone files the device has, found by the sha256 a backbone model's task pins
    (else fetched through ``trust``'s TUF repository by that exact pin). With ``activation_cache_dir`` the
    backbone's outputs for unchanged local examples are kept on disk (at most ``activation_cache_bytes``) and
    reused by later rounds, keyed by the backbone's and feature module's sha256, the scaler version and the
    examples themselves. ``model_path`` keeps the last global model a train or evaluate task brought (and what
    it pins), so that :meth:`predict` can run it locally, also in another process.
    """

    data: DataSource
    feature_modules: Sequence[Path] = ()
    backbones: Sequence[Path] = ()
    activation_cache_dir: Path | None = None
    activation_cache_bytes: int = 256 * 1024 * 1024
    module_cache_dir: Path | None = None
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    backend: str | None = None
    clock: Callable[[], float] = time.perf_counter
    gate: ParticipationGate | None = None
    secagg: Callable[[int], SecAggTaskHandler] | None = None
    ledger: PrivacyLedger | None = None
    residuals: ResidualStore | None = None
    update_rng: Callable[[], np.random.Generator] = secure_generator
    device_class: str | None = None
    personal_path: Path | None = None
    model_path: Path | None = None
    trust: RoundTrust | None = None
    capabilities: DeviceCapabilities | None = None
    node: NodeBinding = field(default_factory=NodeBinding)
    _personal: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False)
    _modules: dict[str, FeatureModule] = field(default_factory=dict, init=False, repr=False)
    _backbone_files: dict[str, Path] = field(default_factory=dict, init=False, repr=False)
    _scaler_version: int = field(default=0, init=False, repr=False)
    _handler: Handler = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.capabilities is None:
            self.capabilities = device_capabilities()
        concerns: list[Concern] = []
        if self.gate is not None:
            concerns.append(GateConcern(self.gate))
        concerns.append(CompatibilityConcern(self.capabilities))
        if self.ledger is not None:
            concerns.append(PrivacyConcern(self.ledger))
        if self.trust is not None:
            concerns.append(SigningConcern(self.trust, self.node))
        if self.secagg is not None:
            concerns.append(SecAggConcern(self.secagg, self.node))
        self._handler = compose(self._handle, concerns)

    def close(self) -> None:
        """Release the loaded feature modules."""
        for module in self._modules.values():
            module.close()
        self._modules.clear()

    def run(self, message_type: str, content: RecordDict, *, message_id: str = "") -> TaskOutcome:
        """Decode and execute one instruction; raises :class:`~flclient.TaskDeclined` when it cannot be run.

        ``message_id`` (the instruction's) names the round in the privacy ledger, so that the node can mark the
        participation uploaded once its reply is pushed (:meth:`PrivacyLedger.mark_uploaded_round`).
        """
        try:
            task = decode_task(message_type, content)
        except ProtocolError as exc:
            raise TaskDeclined(Code.BAD_CONFIG, exc.detail) from exc
        except ValueError as exc:
            raise TaskDeclined(Code.UNSUPPORTED_MESSAGE_TYPE, str(exc)) from exc
        return TaskOutcome.of(self._handler(task, RoundContext(message_id=message_id)))

    # -- the handler -------------------------------------------------------------------------------------------------
    def _handle(self, task: Task, context: RoundContext) -> Reply:
        if isinstance(task, QueryTask):
            return self._query(task)
        if isinstance(task, (TrainTask, EvaluateTask)):
            return self._model_round(task, context)
        raise TaskDeclined(Code.UNSUPPORTED_MESSAGE_TYPE, "this device is not set up for SecAgg+ rounds")

    def _device_info(self, data_class: str | None) -> DeviceInfo:
        caps = self.capabilities
        assert caps is not None
        return DeviceInfo(
            device_class=self.device_class or data_class,
            backends=caps.backends,
            feature_abis=caps.feature_abis,
            runtime_version=caps.runtime_version,
        )

    def _query(self, task: QueryTask) -> Reply:
        if task.query == "feature-stats":
            return self._feature_stats(task)
        local = self.data.load()
        metrics = ReplyMetrics(num_examples=len(local.labels))
        return QueryReply(metrics=metrics, device=self._device_info(local.device_class))

    def _model_round(self, task: TrainTask | EvaluateTask, context: RoundContext) -> Reply:
        # Stage 1: artifacts - the global model (from the task, or its TUF pin) and the feature module.
        params = self._global_model(task)
        self._remember(task, params)
        t0 = self.clock()
        # Stage 2: features.
        x, y, data_class = self._features(task.pins.feature_module, task.features)
        features_s = self.clock() - t0
        personal = task.personal_parameter_names
        local_params = dict(params)
        if personal:
            head = self._personal_head()
            for k in personal & set(params):
                if k in head and head[k].shape == params[k].shape:
                    local_params[k] = head[k]
        settings = task.settings
        order = np.random.Generator(np.random.PCG64(settings.seed)).permutation(len(y))
        n_eval = round(len(y) * settings.eval_fraction) if len(y) > 1 else 0
        eval_idx, train_idx = order[:n_eval], order[n_eval:]
        import runtimes

        # Stage 3: the model, on the backend it needs (a backbone model's frozen file found or fetched by its pin).
        model = task.model
        reused = None
        if isinstance(model, DenseModelSpec):
            spec: runtimes.DenseStack | runtimes.BackboneModel = model.to_runtime()
            backend = runtimes.create_backend(self.backend or model.backend)
        else:
            backbone = task.pins.backbone
            if backbone is None:
                raise TaskDeclined(Code.BACKBONE_PIN, f"a {model.kind} task must pin its backbone (backbone-sha256)")
            spec = model.to_runtime(self._backbone(backbone))
            backend = runtimes.create_backend(
                self.backend or model.backend, self._backend_options(backbone, task, len(y))
            )
            if isinstance(model, BackboneLoRASpec):
                local_params = {**model.frozen_a(), **local_params}  # A from the task's seed unless it travels
        metrics = ReplyMetrics(features_s=features_s, model_version=task.round.model_version, num_examples=0)
        try:
            try:
                backend.load(spec, local_params)
            except (runtimes.RuntimeBackendError, ValueError) as exc:
                raise TaskDeclined(Code.MODEL_MISMATCH, str(exc)) from exc
            if n_eval:
                ev = backend.evaluate(runtimes.TrainingData(x=x[eval_idx], y=y[eval_idx]))
                metrics = replace(
                    metrics,
                    eval_loss=float(ev["loss"]),
                    eval_acc=float(ev["accuracy"]) if "accuracy" in ev else None,
                    eval_examples=int(n_eval),
                )
            device = self._device_info(data_class)
            if isinstance(task, EvaluateTask):
                return EvaluateReply(metrics=replace(metrics, num_examples=int(n_eval)), device=device)
            if len(train_idx) == 0:
                raise TaskDeclined(Code.NO_DATA, "no local examples left for training")
            # Stage 4: fit, watched by the gate (context.checkpoint) between steps.
            t1 = self.clock()
            result = backend.fit(
                runtimes.TrainingData(x=x[train_idx], y=y[train_idx]),
                _train_config(task),
                checkpoint=context.checkpoint,
            )
            train_s = self.clock() - t1
            if not isinstance(model, DenseModelSpec):
                reused = bool(result.metadata.get("activations_reused", False))
        finally:
            backend.close()
        context.check_now()  # the device must still be in policy before anything is built for upload
        # Stage 5: the update.
        new = dict(local_params)
        new.update({k: np.asarray(v, dtype=np.float32) for k, v in result.parameters.items()})
        travelling = set(model.parameter_names())
        new = {k: v for k, v in new.items() if k in travelling}  # a backbone's frozen parts never leave the device
        params = {k: v for k, v in params.items() if k in travelling}
        if personal:
            self._save_personal_head({k: new[k] for k in personal if k in new})
            new = {k: v for k, v in new.items() if k not in personal}  # the private head never leaves the device
            params = {k: v for k, v in params.items() if k not in personal}
        metrics = replace(
            metrics,
            num_examples=int(result.num_examples),
            train_loss=float(result.loss_curve[-1]) if result.loss_curve else None,  # no batch ran: not reported
            train_s=train_s,
            activations_reused=None if reused is None else int(reused),
        )
        return self._build_update(task, context, new, params, metrics, device)

    # -- local inference ---------------------------------------------------------------------------------------
    def _remember(self, task: TrainTask | EvaluateTask, params: Mapping[str, np.ndarray]) -> None:
        if self.model_path is None:
            return
        from ._atomic import atomic_write_bytes

        # What predict needs: the evaluate form, without the arrays (saved beside) and the model's signature.
        config = replace(task.evaluation(), arrays=None, model_signature=None).to_records()["config"]
        assert isinstance(config, ConfigRecord)
        values = dict(config.values)
        buf = io.BytesIO()
        np.savez(
            buf, allow_pickle=False, **{f"p/{k}": np.asarray(v) for k, v in params.items()}, config=json.dumps(values)
        )
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.model_path, buf.getvalue(), mode=0o600)

    def predict(self, columns: Mapping[str, np.ndarray], *, x: np.ndarray | None = None) -> np.ndarray:
        """Outputs of the last global model this device was given (with its personal head when it has one) on
        raw records: the feature module's input ``columns`` (and dense extras ``x``), through the pinned feature
        module, scaler and backbone. Rows the module flags invalid are left out. Raises
        :class:`~flclient.TaskDeclined` (``no-model``) before any task brought a model."""
        import runtimes

        if self.model_path is None or not self.model_path.exists():
            raise TaskDeclined(Code.NO_MODEL, "no global model yet: predict runs the model of the last round")
        with np.load(self.model_path, allow_pickle=False) as f:
            params = {k[2:]: np.asarray(f[k], dtype=np.float32) for k in f.files if k.startswith("p/")}
            config = json.loads(str(f["config"]))
        try:
            task = EvaluateTask.from_records({"config": ConfigRecord(config), "arrays": ArrayRecord(params)})
        except ProtocolError as exc:
            raise TaskDeclined(Code.BAD_CONFIG, f"the stored model: {exc.detail}") from exc
        head = self._personal_head()
        for k in task.personal_parameter_names & set(params):
            if k in head and head[k].shape == params[k].shape:
                params[k] = head[k]
        module = self._module(task.pins.feature_module)
        if x is not None and any(c.name == "x" for c in module.manifest.inputs):
            x = None  # ``x`` is the module's input column, not dense extras
        n = len(next(iter(columns.values()))) if columns else (0 if x is None else len(x))
        local = LocalData(columns=columns, labels=np.zeros(n, dtype=np.int64), x=x)
        feats, _, _ = self._features(task.pins.feature_module, task.features, local=local)
        model = task.model
        if isinstance(model, DenseModelSpec):
            spec: runtimes.DenseStack | runtimes.BackboneModel = model.to_runtime()
        else:
            assert task.pins.backbone is not None
            spec = model.to_runtime(self._backbone(task.pins.backbone))
            if isinstance(model, BackboneLoRASpec):
                params = {**model.frozen_a(), **params}
        backend = runtimes.create_backend(self.backend or model.backend)
        try:
            backend.load(spec, params)
            return np.asarray(backend.predict(feats))
        finally:
            backend.close()

    def _backbone(self, pin: BackbonePin) -> Path:
        """The verified local file of the pinned backbone: a local one with its sha256, else fetched once through
        TUF by the exact pin (the artifact cache keeps it, under its size cap, for later rounds and runs). The
        backend is the model spec's, so the file's name (a cache object has no suffix) does not matter."""
        known = self._backbone_files.get(pin.sha256)
        if known is not None and known.is_file():
            return known
        for path in self.backbones:
            if path in self._backbone_files.values():
                continue
            try:
                digest = _sha256_file(path)
            except OSError:
                continue
            self._backbone_files[digest] = path
        local = self._backbone_files.get(pin.sha256)
        fetched = local or (self.trust.backbone(pin.name, pin.version, pin.sha256) if self.trust is not None else None)
        if fetched is None:
            raise TaskDeclined(
                Code.BACKBONE_PIN,
                f"no local backbone is {pin} with sha256 {pin.sha256[:16]}…, and no artifact repository is set up "
                "to fetch it; add it to device.backbones or configure [artifacts]",
            )
        self._backbone_files[pin.sha256] = fetched
        return fetched

    def _backend_options(self, pin: BackbonePin, task: TrainTask | EvaluateTask, rows: int) -> runtimes.BackendOptions:
        import runtimes

        if self.activation_cache_dir is None:
            return runtimes.BackendOptions()
        module = task.pins.feature_module
        namespace = "/".join(
            (pin.sha256, module.sha256 if module else "-", str(task.features.scaler_version or 0), str(rows))
        )
        store = runtimes.ActivationStore(
            self.activation_cache_dir / "activations", max_bytes=self.activation_cache_bytes
        )
        return runtimes.BackendOptions(activation_store=store, cache_namespace=namespace)

    def _global_model(self, task: TrainTask | EvaluateTask) -> dict[str, np.ndarray]:
        if self.trust is not None:  # a TUF checkpoint pin and/or the server's signature, checked before loading
            return self.trust.global_model(
                task.arrays,
                pin=task.pins.model,
                signature=task.model_signature,
                version=task.round.model_version,
            )
        if task.arrays is None:
            raise TaskDeclined(Code.NO_MODEL, "the instruction carries no 'arrays' record")
        return {k: np.asarray(v, dtype=np.float32) for k, v in task.arrays.items()}

    def _build_update(
        self,
        task: TrainTask,
        context: RoundContext,
        new: dict[str, np.ndarray],
        old: dict[str, np.ndarray],
        metrics: ReplyMetrics,
        device: DeviceInfo,
    ) -> TrainReply:
        pipeline = update_pipeline(task.update, ledger=self.ledger, residuals=self.residuals, rng=self.update_rng)
        if pipeline is None:
            size = sum(int(v.nbytes) for v in new.values())
            return TrainReply(metrics=replace(metrics, update_bytes=size), arrays=new, device=device)
        round_id = context.message_id or f"{task.round.server_round}/{task.round.model_version}"
        try:
            encoded = pipeline.run(round_id=round_id, new=new, old=old, names=list(old)).to_bytes()
        except PrivacyBudgetExhausted as exc:
            raise TaskDeclined(Code.PRIVACY_BUDGET, str(exc)) from exc
        return TrainReply(metrics=replace(metrics, update_bytes=len(encoded)), payload=encoded, device=device)

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
            from ._atomic import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, allow_pickle=False, **self._personal_head())
            self.personal_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.personal_path, buf.getvalue(), mode=0o600)

    # -- the feature stage -------------------------------------------------------------------------------------------
    def _module(self, pin: FeaturePin | None) -> FeatureModule:
        if pin is None:
            raise TaskDeclined(Code.NO_FEATURE_PIN, "the task must pin 'feature-module' (name@version) and its sha256")
        name, version, sha = pin.name, pin.version, pin.sha256
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
        text = f"{name}@{version}"
        fetched = self.trust.module(name, version, sha) if self.trust is not None else None
        if fetched is not None:  # through TUF: exactly the pinned name, version and sha256, verified
            try:
                module = FeatureModule.load(
                    fetched, limits=self.sandbox, cache_dir=self.module_cache_dir, expected_sha256=sha
                )
            except FeatureError as exc:
                raise TaskDeclined(Code.FEATURE_MODULE_INVALID, f"{text} from the artifact repository: {exc}") from exc
            if (module.manifest.name, module.manifest.version) != (name, version):
                module.close()
                raise TaskDeclined(Code.FEATURE_MODULE_PIN, f"the artifact published as {text} is another module")
            self._modules[sha] = module
            return module
        raise TaskDeclined(
            Code.FEATURE_MODULE_PIN,
            f"no local module is {text} with sha256 {sha[:16]}…; this device has {', '.join(seen) or 'none'}",
        )

    def _extract(
        self, pin: FeaturePin | None, local: LocalData | None = None
    ) -> tuple[LocalData, list[np.ndarray], np.ndarray]:
        """Local records, the module's numeric output columns (rows x width, float64, raw) and the valid rows."""
        module = self._module(pin)
        local = local if local is not None else self.data.load()
        try:
            out = module.extract({c.name: local.columns[c.name] for c in module.manifest.inputs})
        except KeyError as exc:
            raise TaskDeclined(Code.DATA_MISMATCH, f"local data lacks the module input column {exc}") from exc
        numeric = [c for c in module.manifest.outputs if c.dtype != "ascii"]
        cols = [np.asarray(out[c.name], dtype=np.float64).reshape(len(local.labels), -1) for c in numeric]
        return local, cols, np.asarray(out["status"]) == 0

    def _feature_stats(self, task: QueryTask) -> StatsReply:
        """Sum, sum of squares and count of the module's numeric columns over the valid local rows."""
        t0 = self.clock()
        _, cols, ok = self._extract(task.pins.feature_module)
        values = np.concatenate(cols, axis=1)[ok] if cols else np.zeros((int(ok.sum()), 0))
        count = len(values)
        return StatsReply(
            sum=values.sum(axis=0),
            sumsq=np.square(values).sum(axis=0),
            count=count,
            metrics=ReplyMetrics(num_examples=count, features_s=self.clock() - t0),
        )

    def _scaler(self, features: FeatureSpec, module_sha: str, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The task's federated scaler as (mean, std), None without one; declines one it cannot apply."""
        if features.scaler_version is None and features.scaler is None:
            return None
        version = features.scaler_version or 0
        scaler = features.scaler
        if scaler is None:
            raise TaskDeclined(Code.STALE_SCALER, f"the task names scaler version {version} but carries no scaler")
        if scaler.version != version:
            raise TaskDeclined(
                Code.STALE_SCALER, f"the task names scaler version {version}, its scaler is {scaler.version}"
            )
        if version < self._scaler_version:
            raise TaskDeclined(
                Code.STALE_SCALER, f"scaler version {version} is older than version {self._scaler_version} used here"
            )
        if scaler.module_sha256 != module_sha:
            raise TaskDeclined(Code.STALE_SCALER, f"scaler version {version} was computed for another feature module")
        if len(scaler.mean) != width:
            raise TaskDeclined(Code.STALE_SCALER, f"scaler version {version} does not fit the module's {width} columns")
        self._scaler_version = version
        return np.asarray(scaler.mean, dtype=np.float64), np.asarray(scaler.std, dtype=np.float64)

    def _features(
        self, pin: FeaturePin | None, features: FeatureSpec, *, local: LocalData | None = None
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        local, raw, ok = self._extract(pin, local)
        assert pin is not None  # _extract declines a task without one
        width = sum(c.shape[1] for c in raw)
        scaler = self._scaler(features, pin.sha256, width)
        if scaler is not None:
            mean, std = scaler
            joined = (np.concatenate(raw, axis=1) - mean) / std if raw else np.zeros((len(local.labels), 0))
            cols = [joined.astype(np.float32)]
        else:
            scale = features.scale if features.scale is not None else (1.0,) * len(raw)
            if len(scale) != len(raw):
                raise TaskDeclined(Code.BAD_CONFIG, f"feature-scale must list {len(raw)} divisors")
            cols = [c.astype(np.float32) / float(s) for c, s in zip(raw, scale, strict=True)]
        if local.x is not None:
            cols.insert(0, np.asarray(local.x, dtype=np.float32).reshape(len(local.labels), -1))
        x = np.concatenate(cols, axis=1)[ok]
        y = np.asarray(local.labels)[ok]
        if len(y) == 0:
            raise TaskDeclined(Code.NO_DATA, "no valid local examples after feature extraction")
        return x, y, local.device_class


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _train_config(task: TrainTask) -> runtimes.TrainConfig:
    import runtimes

    s = task.settings
    return runtimes.TrainConfig(
        epochs=s.epochs,
        batch_size=s.batch_size,
        learning_rate=s.lr,
        optimizer=s.optimizer,
        prox_mu=s.proximal_mu,
        weight_decay=s.weight_decay,
        seed=s.seed,
    )


def update_pipeline(
    spec: UpdateSpec | Mapping[str, object],
    *,
    ledger: PrivacyLedger | None = None,
    residuals: ResidualStore | None = None,
    rng: Callable[[], np.random.Generator] = secure_generator,
) -> UpdatePipeline | None:
    """The clip -> DP -> encode pipeline an update specification asks for, or None (plain arrays) without a codec.

    A task-config mapping is read through the protocol (:meth:`UpdateSpec.read`); one this device cannot honour
    is declined (``bad-config``), never silently weakened.
    """
    if not isinstance(spec, UpdateSpec):
        try:
            reader = ValueReader(spec, where="config")
            spec = UpdateSpec.read(reader)
            reader.finish()
        except ProtocolError as exc:
            raise TaskDeclined(Code.BAD_CONFIG, exc.detail) from exc
    if spec.codec is None:
        return None
    codec: UpdateCodec
    if spec.codec == "fp32":
        codec = LosslessFloat32Codec()
    elif spec.codec in ("fp16", "bf16"):
        codec = Float16Codec(kind=spec.codec)
    elif spec.codec == "int8":
        codec = BlockInt8Codec()
    elif spec.codec == "topk":
        codec = TopKCodec(fraction=spec.topk_fraction)
    else:  # rotated1 / rotated2 / rotated4
        codec = RotatedCodec(bits=int(spec.codec[-1]))
    stages: list[UpdateStage] = []
    if spec.clip_norm:
        stages.append(ClipStage(config=ClipConfig(max_norm=spec.clip_norm)))
    if spec.noise_multiplier:
        privacy = PrivacyConfig(mode=spec.dp_mode, noise_multiplier=spec.noise_multiplier)
        stages.append(PrivacyStage(config=privacy, ledger=ledger))
    feedback = ErrorFeedback(store=residuals) if residuals is not None and not codec.unbiased else None
    stages.append(EncodeStage(codec=codec, rng=rng(), error_feedback=feedback))
    return UpdatePipeline(stages)
