"""ONNX Runtime backend: a frozen ONNX backbone runs in onnxruntime, the trainable part in numpy.

Two shapes of model (see :class:`BackboneModel`): a numpy head on the backbone's output, or LoRA adapters on
the final linear layers lifted out of the ONNX graph, which can then be exported with the adapters merged.
onnxruntime-training is not used (abandoned, no aarch64 wheels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backbone import ActivationCache, evaluate_on_backbone, fit_on_backbone, predict_on_backbone
from ._dense import merge_lora
from ._exceptions import (
    BackendUnavailableError,
    ExportMismatchError,
    ModelLoadError,
    ParameterError,
    UnsupportedFeatureError,
)
from ._protocol import (
    ACTIVATION_CACHE,
    FROZEN_BACKBONE,
    GRAPH_EXTRACTION,
    LORA,
    MERGED_EXPORT,
    NUMPY_TRAINING,
    BackendBase,
    bind_dense,
)
from ._registry import BackendOptions
from ._spec import (
    BackboneModel,
    DenseLayer,
    DenseStack,
    FitResult,
    ModelSource,
    Parameters,
    TrainConfig,
    TrainingBudget,
    TrainingData,
)
from ._training import Clock

_HINT = "pip install 'flclient[onnx]'"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(f"the onnx backend needs onnxruntime: {_HINT}") from exc
    return onnxruntime


def _import_onnx() -> Any:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise BackendUnavailableError(
            f"lifting layers out of an ONNX graph and exporting it needs the onnx package: {_HINT}"
        ) from exc
    return onnx, numpy_helper


@dataclass(frozen=True)
class _LinearSite:
    """Where one extracted linear layer's weight lives in the graph."""

    weight_name: str
    transposed: bool  # Gemm transB=1 stores (out, in)


class OnnxBackend(BackendBase):
    """Frozen ONNX backbone in onnxruntime with cached activations, numpy head or LoRA on top."""

    name = "onnx"
    capabilities = NUMPY_TRAINING | {FROZEN_BACKBONE, ACTIVATION_CACHE, LORA, GRAPH_EXTRACTION, MERGED_EXPORT}

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__()
        self._ort = _import_onnxruntime()
        self._options = options or BackendOptions()
        self._cache = ActivationCache(
            ram_bytes=self._options.cache_ram_bytes,
            spill_dir=self._options.spill_dir,
            store=self._options.activation_store,
            namespace=self._options.cache_namespace,
        )
        self._session: Any = None
        self._input_name = ""
        self._output_name = ""
        self._proto: Any = None  # the full onnx.ModelProto when layers were extracted
        self._sites: list[_LinearSite] = []

    def _session_options(self) -> Any:
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self._options.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return so

    def _make_session(self, model_bytes: bytes, what: str) -> Any:
        try:
            return self._ort.InferenceSession(
                model_bytes, sess_options=self._session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for every failure
            raise ModelLoadError(f"onnxruntime cannot load {what}: {exc}") from exc

    def load(self, model: ModelSource, parameters: Mapping[str, np.ndarray] | None = None) -> None:
        """Load a :class:`BackboneModel` whose ``path`` is an ONNX file, and the trainable part's parameters.

        With ``extract_final_linear``, the base weights come from the graph and ``parameters`` may hold the
        LoRA adapters (or be ``None`` to start them from ``lora.init_seed``).
        """
        self._check_open()
        if not isinstance(model, BackboneModel):
            raise UnsupportedFeatureError(f"the onnx backend trains on BackboneModel files, not {type(model).__name__}")
        try:
            data = model.path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read the ONNX model {model.path}: {exc}") from exc
        self._cache.clear()
        self._proto, self._sites = None, []
        if model.extract_final_linear == 0 and model.head is not None:
            session = self._make_session(data, str(model.path))
            self._bind_session(session, model.output_name, str(model.path))
            self._check_width(session, model.head.in_features)
            self._model = bind_dense(model.head, parameters)
        else:
            self._load_extracted(model, data, parameters)

    def _bind_session(self, session: Any, output_name: str | None, what: str) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"the backbone {what} must have exactly one input, it has {len(inputs)}")
        outputs = [o.name for o in session.get_outputs()]
        name = output_name or outputs[0]
        if name not in outputs:
            raise ModelLoadError(f"the backbone {what} has no output {name!r}; it has {outputs}")
        self._session, self._input_name, self._output_name = session, inputs[0].name, name

    def _check_width(self, session: Any, width: int) -> None:
        shape = next(o.shape for o in session.get_outputs() if o.name == self._output_name)
        last = shape[-1] if shape else None
        if isinstance(last, int) and last != width:
            raise ModelLoadError(f"the backbone gives {last} features but the head takes {width}")

    def _load_extracted(self, model: BackboneModel, data: bytes, parameters: Mapping[str, np.ndarray] | None) -> None:
        onnx, numpy_helper = _import_onnx()
        try:
            proto = onnx.load_model_from_string(data)
        except Exception as exc:
            raise ModelLoadError(f"{model.path} is not an ONNX model: {exc}") from exc
        graph = proto.graph
        if len(graph.output) != 1 or len(graph.input) < 1:
            raise ModelLoadError("layer extraction needs a graph with one input and one output")
        inits = {t.name: t for t in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output}
        layers: list[DenseLayer] = []
        base: Parameters = {}
        sites: list[_LinearSite] = []
        cur = graph.output[0].name
        weights: list[tuple[np.ndarray, np.ndarray, str, _LinearSite]] = []
        for _ in range(model.extract_final_linear):
            node = producers.get(cur)
            act = "none"
            if node is not None and node.op_type == "Relu":
                act, cur = "relu", node.input[0]
                node = producers.get(cur)
            w, b, cur, site = _match_linear(node, cur, inits, producers, numpy_helper)
            weights.append((w, b, act, site))
        weights.reverse()
        for i, (w, b, act, site) in enumerate(weights):
            layers.append(
                DenseLayer(in_features=w.shape[0], out_features=w.shape[1], activation=act, trainable=False)  # type: ignore[arg-type]
            )
            base[f"dense{i}_weight"], base[f"dense{i}_bias"] = w, b
            sites.append(site)
        assert model.lora is not None
        if model.head is not None:
            if model.head.in_features != layers[-1].out_features:
                raise ModelLoadError(
                    f"the lifted layers give {layers[-1].out_features} features but the head takes "
                    f"{model.head.in_features}"
                )
            layers += model.head.layers
        spec = DenseStack(layers=tuple(layers), loss=model.loss, lora=model.lora)
        adapters = dict(parameters or {})
        clash = sorted(set(adapters) & set(base))
        if clash:
            raise ParameterError(f"{clash} come from the ONNX graph; pass only the LoRA adapters")
        self._model = bind_dense(spec, {**base, **adapters})
        graph_input = graph.input[0].name
        if cur == graph_input:
            self._session = None  # every layer was extracted: the backbone is the identity
            self._input_name, self._output_name = graph_input, graph_input
        else:
            backbone = onnx.ModelProto()
            backbone.CopyFrom(proto)
            del backbone.graph.output[:]
            backbone.graph.output.append(onnx.helper.make_empty_tensor_value_info(cur))
            session = self._make_session(backbone.SerializeToString(), f"the backbone of {model.path}")
            self._bind_session(session, cur, str(model.path))
        self._proto, self._sites = proto, sites

    def _features(self, x: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(x, dtype=np.float32)
        if self._session is None:
            return batch.reshape(batch.shape[0], -1)
        try:
            (out,) = self._session.run([self._output_name], {self._input_name: batch})
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime failed on an input of shape {batch.shape}: {exc}") from exc
        return np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1)

    def fit(
        self,
        data: TrainingData,
        config: TrainConfig,
        *,
        budget: TrainingBudget | None = None,
        clock: Clock = time.perf_counter,
        checkpoint: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train the numpy part; backbone activations for ``data`` are computed once and cached.

        ``checkpoint`` is called before each 512-row chunk of the backbone pass, before every step and after
        the last. When it raises, the exception propagates: a half-filled activation cache is dropped and the
        numpy part keeps the steps completed so far (see ``TrainingBackend.fit``).
        """
        model = self._bound()
        self._require(config, model.spec.loss)
        cache = self._cache if self._options.cache_activations else None
        return fit_on_backbone(
            model, self._features, cache, data, config, budget=budget, clock=clock, checkpoint=checkpoint
        )

    def evaluate(self, data: TrainingData) -> dict[str, float]:
        """Mean loss (and accuracy) of backbone + trained part."""
        return evaluate_on_backbone(self._bound(), self._features, data)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs of backbone + trained part (the unmerged numpy forward)."""
        return predict_on_backbone(self._bound(), self._features, x)

    def parameters(self) -> Parameters:
        """Copies of the trainable parameters."""
        return {name: p.copy() for name, p in self._bound().trainable().items()}

    def export_merged(self) -> bytes:
        """The original ONNX model with every extracted layer's weight replaced by ``W + scale * A @ B``."""
        model = self._bound()
        if self._proto is None:
            raise UnsupportedFeatureError("merged export needs a model loaded with extract_final_linear")
        onnx, numpy_helper = _import_onnx()
        merged = merge_lora(model.spec, model.parameters)
        out = onnx.ModelProto()
        out.CopyFrom(self._proto)
        by_name = {t.name: t for t in out.graph.initializer}
        for i, site in enumerate(self._sites):
            w = merged[f"dense{i}_weight"].astype(np.float32)
            by_name[site.weight_name].CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(w.T if site.transposed else w), site.weight_name)
            )
        return bytes(out.SerializeToString())

    def verify_export(self, exported: bytes, x: np.ndarray, *, tolerance: float = 1e-5) -> float:
        """Run ``exported`` in onnxruntime on ``x`` and compare with the numpy forward.

        Returns the largest absolute difference; raises :class:`ExportMismatchError` when any element differs
        by more than ``tolerance`` (absolute, plus the same relative tolerance for large outputs).
        """
        expected = self.predict(x)
        session = self._make_session(exported, "the exported model")
        name = session.get_inputs()[0].name
        (got,) = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
        got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if not np.allclose(got, expected, atol=tolerance, rtol=tolerance):
            raise ExportMismatchError(f"the exported model differs from the numpy forward by up to {diff}")
        return diff

    def _release(self) -> None:
        self._cache.clear()
        self._session = None
        self._model = None


def _match_linear(
    node: Any, cur: str, inits: Mapping[str, Any], producers: Mapping[str, Any], numpy_helper: Any
) -> tuple[np.ndarray, np.ndarray, str, _LinearSite]:
    """Recognise ``Gemm(x, W, b)`` or ``Add(MatMul(x, W), b)`` producing ``cur``, with W and b initializers."""
    if node is None:
        raise ModelLoadError(f"tensor {cur!r} is a graph input, not the output of a linear layer")
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if attrs.get("transA") is not None and attrs["transA"].i:
            raise ModelLoadError(f"Gemm node {node.name!r} uses transA, which extraction does not support")
        for key in ("alpha", "beta"):
            if key in attrs and attrs[key].f != 1.0:
                raise ModelLoadError(f"Gemm node {node.name!r} has {key} != 1, which extraction does not support")
        if node.input[1] not in inits:
            raise ModelLoadError(f"Gemm node {node.name!r} takes its weight from a tensor, not an initializer")
        transposed = bool(attrs["transB"].i) if "transB" in attrs else False
        w = numpy_helper.to_array(inits[node.input[1]])
        w = w.T if transposed else w
        b = _bias(node, 2, inits, numpy_helper, w.shape[1])
        return _as_f32(w), b, node.input[0], _LinearSite(node.input[1], transposed)
    if node.op_type == "Add":
        a_name, b_name = node.input[0], node.input[1]
        if a_name in inits:
            a_name, b_name = b_name, a_name
        matmul = producers.get(a_name)
        if b_name not in inits or matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in inits:
            raise ModelLoadError(f"Add node {node.name!r} is not MatMul(x, W) + b with initializer W and b")
        w = numpy_helper.to_array(inits[matmul.input[1]])
        bias = np.asarray(numpy_helper.to_array(inits[b_name])).reshape(-1)
        if w.ndim != 2 or bias.shape != (w.shape[1],):
            raise ModelLoadError(f"MatMul/Add at {cur!r} has weight {w.shape} and bias {bias.shape}")
        return _as_f32(w), _as_f32(bias), matmul.input[0], _LinearSite(matmul.input[1], False)
    raise ModelLoadError(
        f"tensor {cur!r} comes from a {node.op_type} node; extraction needs Gemm or MatMul + Add (ReLU between)"
    )


def _bias(node: Any, index: int, inits: Mapping[str, Any], numpy_helper: Any, width: int) -> np.ndarray:
    if len(node.input) <= index or not node.input[index]:
        return np.zeros(width, dtype=np.float32)
    if node.input[index] not in inits:
        raise ModelLoadError(f"node {node.name!r} takes its bias from a tensor, not an initializer")
    bias = np.asarray(numpy_helper.to_array(inits[node.input[index]])).reshape(-1)
    if bias.shape != (width,):
        raise ModelLoadError(f"node {node.name!r} has a bias of shape {bias.shape}; expected ({width},)")
    return _as_f32(bias)


def _as_f32(a: np.ndarray) -> np.ndarray:
    return np.array(a, dtype=np.float32, order="C", copy=True)
