"""Hypothesis strategies for valid instances of every :mod:`flclient.protocol` class, and exact comparisons.

Values stay inside what the wire carries (int64 integers, finite floats, UTF-8 strings without lone surrogates),
so the same instances also round-trip through the Fleet object codec.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flclient.fleet._objects import RecordDict, decode_content, encode_message
from flclient.fleet._proto import flclient_fleet_pb2 as pb
from flclient.protocol import (
    ACTIVATIONS,
    LOSSES,
    QUERIES,
    UPDATE_CODECS,
    ArtifactPins,
    BackboneHeadSpec,
    BackboneLoRASpec,
    BackbonePin,
    DenseLayerSpec,
    DenseModelSpec,
    DeviceInfo,
    ErrorReply,
    EvaluateReply,
    EvaluateTask,
    FeaturePin,
    FeatureSpec,
    ModelPin,
    QueryReply,
    QueryTask,
    ReplyMetrics,
    RoundInfo,
    Scaler,
    SecAggReply,
    SecAggStage,
    StatsReply,
    TaskRequirements,
    TrainingSettings,
    TrainReply,
    TrainTask,
    UpdateSignature,
    UpdateSpec,
)

INT63 = 2**63 - 1
# Text the wire can carry: protobuf strings are UTF-8, so no lone surrogates.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
small_bytes = st.binary(max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False)
sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,15}\Z")
versions = st.lists(st.integers(0, 10**9 - 1), min_size=1, max_size=3).map(lambda parts: ".".join(map(str, parts)))


@st.composite
def dense_models(draw: st.DrawFn) -> DenseModelSpec:
    widths = draw(st.lists(st.integers(1, 1 << 24), min_size=2, max_size=6))
    layers = tuple(
        DenseLayerSpec(in_features=a, out_features=b, activation=draw(st.sampled_from(ACTIVATIONS)))
        for a, b in itertools.pairwise(widths)
    )
    return DenseModelSpec(layers=layers, loss=draw(st.sampled_from(LOSSES)))


def _chain(draw: st.DrawFn, widths: list[int]) -> tuple[DenseLayerSpec, ...]:
    return tuple(
        DenseLayerSpec(in_features=a, out_features=b, activation=draw(st.sampled_from(ACTIVATIONS)))
        for a, b in itertools.pairwise(widths)
    )


@st.composite
def backbone_head_models(draw: st.DrawFn) -> BackboneHeadSpec:
    return BackboneHeadSpec(
        backbone_format=draw(st.sampled_from(("onnx", "litert"))),
        head=_chain(draw, draw(st.lists(st.integers(1, 1 << 24), min_size=2, max_size=5))),
        output_name=draw(st.none() | st.from_regex(r"\A[A-Za-z0-9_.:/-]{1,20}\Z")),
        loss=draw(st.sampled_from(LOSSES)),
    )


@st.composite
def backbone_lora_models(draw: st.DrawFn, max_width: int = 4096) -> BackboneLoRASpec:
    widths = draw(st.lists(st.integers(1, max_width), min_size=2, max_size=6))
    n_adapted = draw(st.integers(1, len(widths) - 1))
    adapted, head = _chain(draw, widths[: n_adapted + 1]), _chain(draw, widths[n_adapted:])
    targets = draw(st.none() | st.lists(st.integers(0, n_adapted - 1), min_size=1, unique=True).map(tuple))
    return BackboneLoRASpec(
        backbone_format="onnx",
        adapted=adapted,
        head=head,
        rank=draw(st.integers(1, max_width)),
        alpha=draw(st.floats(min_value=1e-6, max_value=1e6)),
        targets=targets,
        seed=draw(st.integers(0, INT63)),
        lora_a=draw(st.sampled_from(("frozen", "trained"))),
        loss=draw(st.sampled_from(LOSSES)),
    )


model_specs = dense_models() | backbone_head_models() | backbone_lora_models()


def max_personal_layers(model: Any) -> int:
    """The largest personal-layers a model allows."""
    if isinstance(model, DenseModelSpec):
        return len(model.layers) - 1
    if isinstance(model, BackboneHeadSpec):
        return len(model.head) - 1
    return len(model.head)


rounds = st.builds(
    RoundInfo,
    server_round=st.integers(0, INT63),
    model_version=st.integers(0, INT63),
    run_id=st.integers(0, 2**64 - 1),
)

settings_ = st.builds(
    TrainingSettings,
    epochs=st.integers(1, 10_000),
    batch_size=st.integers(1, 1 << 20),
    lr=st.floats(min_value=0.0, exclude_min=True, allow_infinity=False) | st.integers(1, 100),
    optimizer=st.sampled_from(("sgd", "adam")),
    seed=st.integers(0, INT63),
    eval_fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    proximal_mu=st.floats(min_value=0.0, allow_infinity=False),
    weight_decay=st.floats(min_value=0.0, allow_infinity=False),
)


@st.composite
def scalers(draw: st.DrawFn) -> Scaler:
    n = draw(st.integers(0, 6))
    return Scaler(
        version=draw(st.integers(1, INT63)),
        module_sha256=draw(sha256s | st.text(max_size=64)),
        mean=tuple(draw(st.lists(finite, min_size=n, max_size=n))),
        std=tuple(
            draw(st.lists(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False), min_size=n, max_size=n))
        ),
        count=draw(st.integers(0, INT63)),
    )


features = st.builds(
    FeatureSpec,
    scale=st.none() | st.lists(finite, min_size=1, max_size=6).map(tuple),
    scaler=st.none() | scalers(),
    scaler_version=st.none() | st.integers(0, INT63),
)

feature_pins = st.builds(FeaturePin, name=names, version=versions, sha256=sha256s)
model_pins = st.builds(ModelPin, name=names, version=names, sha256=sha256s)
backbone_pins = st.builds(BackbonePin, name=names, version=names, sha256=sha256s)
pins = st.builds(
    ArtifactPins,
    feature_module=st.none() | feature_pins,
    model=st.none() | model_pins,
    backbone=st.none() | backbone_pins,
)

requirements = st.builds(
    TaskRequirements,
    min_app_version=st.none() | versions,
    min_runtime_version=st.none() | versions,
    max_runtime_major=st.none() | st.integers(0, INT63),
    model_format=st.none() | texts,
    feature_abi=st.none() | st.integers(1, INT63),
    required_backends=st.lists(texts, max_size=3).map(tuple),
)


@st.composite
def updates(draw: st.DrawFn) -> UpdateSpec:
    secagg = draw(st.booleans())
    codec = None if secagg else draw(st.none() | st.sampled_from(UPDATE_CODECS))
    clip = draw(st.just(0.0) | st.floats(min_value=0.0, allow_infinity=False))
    noisy = codec is not None and clip > 0 and draw(st.booleans())
    return UpdateSpec(
        codec=codec,
        clip_norm=clip,
        topk_fraction=draw(st.floats(min_value=0.0, max_value=1.0, exclude_min=True)),
        dp_mode=draw(st.sampled_from(("local", "central"))),
        noise_multiplier=draw(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)) if noisy else 0.0,
        secagg_bits=draw(st.integers(1, 32)) if secagg else 0,
    )


array_dtypes = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.uint16, np.bool_]
).map(np.dtype)
arrays_ = hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
array_maps = st.dictionaries(texts, arrays_, max_size=3)


@st.composite
def _model_task_fields(draw: st.DrawFn, models: st.SearchStrategy[Any] = model_specs) -> dict[str, Any]:
    model = draw(models)
    return dict(
        model=model,
        round=draw(rounds),
        settings=draw(settings_),
        features=draw(features),
        pins=draw(pins),
        requirements=draw(requirements),
        personal_layers=draw(st.integers(0, max_personal_layers(model))),
        model_signature=draw(st.none() | small_bytes),
        arrays=draw(st.none() | array_maps),
    )


train_tasks = st.builds(lambda fields, update: TrainTask(update=update, **fields), _model_task_fields(), updates())
dense_train_tasks = st.builds(
    lambda fields, update: TrainTask(update=update, **fields), _model_task_fields(dense_models()), updates()
)
evaluate_tasks = _model_task_fields().map(lambda fields: EvaluateTask(**fields))
query_tasks = st.builds(QueryTask, query=st.sampled_from(QUERIES), pins=pins, round=rounds)
secagg_stages = st.builds(SecAggStage, request=small_bytes, task=st.none() | train_tasks)
tasks = st.one_of(train_tasks, evaluate_tasks, query_tasks, secagg_stages)

_optional_count = st.none() | st.integers(0, INT63)
_optional_float = st.none() | finite
metrics = st.builds(
    ReplyMetrics,
    num_examples=st.integers(0, INT63),
    eval_examples=_optional_count,
    eval_loss=_optional_float,
    eval_acc=_optional_float,
    train_loss=_optional_float,
    train_s=_optional_float,
    features_s=_optional_float,
    model_version=_optional_count,
    update_bytes=_optional_count,
    bytes_down=_optional_count,
    device_s=_optional_float,
)
devices = st.builds(
    DeviceInfo,
    device_class=st.none() | texts,
    backends=st.lists(texts, max_size=3).map(tuple),
    feature_abis=st.lists(st.integers(0, INT63), max_size=3).map(tuple),
    runtime_version=st.none() | texts,
)
signatures = st.builds(UpdateSignature, signature=small_bytes, public_key=small_bytes)


@st.composite
def train_replies(draw: st.DrawFn) -> TrainReply:
    as_arrays = draw(st.booleans())
    return TrainReply(
        metrics=draw(metrics),
        arrays=draw(array_maps) if as_arrays else None,
        payload=None if as_arrays else draw(small_bytes),
        device=draw(st.none() | devices),
        signature=draw(st.none() | signatures),
    )


evaluate_replies = st.builds(EvaluateReply, metrics=metrics, device=st.none() | devices)
query_replies = st.builds(QueryReply, metrics=metrics, device=st.none() | devices)


@st.composite
def stats_replies(draw: st.DrawFn) -> StatsReply:
    width = draw(st.integers(0, 5))
    column = hnp.arrays(np.float64, width, elements=finite)
    return StatsReply(sum=draw(column), sumsq=draw(column), count=draw(st.integers(0, INT63)), metrics=draw(metrics))


secagg_replies = st.builds(SecAggReply, reply=small_bytes, metrics=st.none() | metrics)
replies = st.one_of(train_replies(), evaluate_replies, query_replies, stats_replies(), secagg_replies)
error_replies = st.builds(
    ErrorReply,
    kind=st.sampled_from(("declined", "rejected", "failed")),
    code=st.text(min_size=1, max_size=64),
    detail=st.text(max_size=40),
    reasons=st.lists(st.text(max_size=10), max_size=3).map(tuple),
)


def same_arrays(a: Mapping[str, np.ndarray] | None, b: Mapping[str, np.ndarray] | None) -> bool:
    """Exactly the same named arrays: names, dtypes, shapes and values (NaN equal to NaN)."""
    if a is None or b is None:
        return a is None and b is None
    if set(a) != set(b):
        return False
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return False
    return True


def assert_same(decoded: object, original: object) -> None:
    """``decoded`` equals ``original``, including the fields dataclass equality leaves out (arrays)."""
    assert type(decoded) is type(original)
    if isinstance(original, StatsReply):
        assert isinstance(decoded, StatsReply)
        assert same_arrays({"sum": decoded.sum, "sumsq": decoded.sumsq}, {"sum": original.sum, "sumsq": original.sumsq})
        assert (decoded.count, decoded.metrics) == (original.count, original.metrics)
        return
    assert decoded == original
    for f in dataclasses.fields(original):  # type: ignore[arg-type]
        mine, theirs = getattr(decoded, f.name), getattr(original, f.name)
        if f.name == "arrays":
            assert same_arrays(mine, theirs), f.name
        elif dataclasses.is_dataclass(theirs):
            assert_same(mine, theirs)


def through_wire(content: RecordDict) -> RecordDict:
    """``content`` after the Fleet object codec: encoded to content-addressed objects and decoded again."""
    encoded = encode_message(pb.Metadata(message_type="train"), content)
    decoded = decode_content(encoded.message_id, encoded.objects)
    assert decoded is not None
    return decoded
