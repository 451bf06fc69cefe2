"""Training-step benchmark for the runtimes backends. The last line printed is one JSON object.

    python benchmarks/bench_training.py [--steps 300] [--repeats 5]

ms per step at batch 32 with one thread: the digits MLP head 64->64->10 (numpy, LiteRT train signature),
LoRA r=8 on a frozen 2x(256x256) stack (numpy, LiteRT train signature), an ONNX backbone + numpy head epoch
with and without the activation cache, the same models in torch when torch is installed (optional, never a
dependency), and the peak RSS of a fresh process training the numpy digits head.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# One BLAS thread before numpy loads, so every backend (and torch) is compared on one core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "runtimes"

from runtimes import (  # noqa: E402
    BackboneModel,
    BackendOptions,
    DenseLayer,
    DenseStack,
    LoRAConfig,
    RuntimeBackendError,
    TrainConfig,
    TrainingData,
    TrainSignatureModel,
    create_backend,
    init_parameters,
)

BATCH = 32


def digits() -> TrainingData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return TrainingData(x=(bunch.data / 16.0).astype(np.float32), y=bunch.target.astype(np.int64))


def mlp_spec() -> DenseStack:
    return DenseStack(
        layers=(
            DenseLayer(in_features=64, out_features=64, activation="relu"),
            DenseLayer(in_features=64, out_features=10),
        )
    )


def lora_spec() -> DenseStack:
    return DenseStack(
        layers=(
            DenseLayer(in_features=256, out_features=256, activation="relu"),
            DenseLayer(in_features=256, out_features=256),
        ),
        loss="mse",
        lora=LoRAConfig(rank=8, alpha=16.0),
    )


def lora_data() -> TrainingData:
    rng = np.random.Generator(np.random.PCG64(0))
    x = rng.normal(size=(2048, 256)).astype(np.float32)
    return TrainingData(x=x, y=(0.1 * x).astype(np.float32))


def median_ms_per_step(run: Callable[[], tuple[float, int]], repeats: int) -> float:
    """Median over repeats of (seconds, steps) -> ms per step, after one warm-up run."""
    run()
    samples = []
    for _ in range(repeats):
        seconds, steps = run()
        samples.append(1000.0 * seconds / steps)
    return round(statistics.median(samples), 4)


def bench_backend(
    name: str, model: object, params: dict[str, np.ndarray], data: TrainingData, steps: int, repeats: int
) -> float:
    config = TrainConfig(epochs=1000, max_steps=steps, batch_size=BATCH, learning_rate=0.01, drop_last=True)
    with create_backend(name) as backend:

        def run() -> tuple[float, int]:
            backend.load(model, params)  # type: ignore[arg-type]
            result = backend.fit(data, config)
            return result.wall_time_s, result.steps

        return median_ms_per_step(run, repeats)


def bench_onnx_epochs(data: TrainingData, repeats: int) -> tuple[float, float]:
    """One epoch of a numpy head on a 64->512->512->512 ONNX backbone, with a warm cache and without one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.Generator(np.random.PCG64(0))
    sizes = [64, 512, 512, 512]
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        inits += [
            numpy_helper.from_array(rng.normal(0, a**-0.5, (a, b)).astype(np.float32), f"W{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Relu", [f"z{i}"], [f"h{i}"]),
        ]
        cur = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "bench_backbone",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["n", 512])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    head = DenseStack(layers=(DenseLayer(in_features=512, out_features=10),))
    params = init_parameters(head, rng=rng)
    config = TrainConfig(epochs=1, batch_size=BATCH, learning_rate=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backbone.onnx"
        onnx.save(proto, str(path))
        model = BackboneModel(path=path, head=head)
        results = []
        for cached in (True, False):
            with create_backend("onnx", BackendOptions(cache_activations=cached)) as backend:
                backend.load(model, params)
                backend.fit(data, config)  # warm-up; fills the cache for the cached run
                samples = []
                for _ in range(repeats):
                    if not cached:
                        backend.load(model, params)
                    samples.append(1000.0 * backend.fit(data, config).wall_time_s)
                results.append(round(statistics.median(samples), 3))
    return results[0], results[1]


def bench_torch(data: TrainingData, lora: TrainingData, steps: int, repeats: int) -> tuple[float, float]:
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    def loop(
        model: torch.nn.Module,
        params: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[..., torch.Tensor],
    ) -> tuple[float, int]:
        opt = torch.optim.SGD(params, lr=0.01)
        n = x.shape[0] // BATCH
        start = time.perf_counter()
        for s in range(steps):
            i = (s % n) * BATCH
            opt.zero_grad()
            loss = loss_fn(model(x[i : i + BATCH]), y[i : i + BATCH])
            loss.backward()
            opt.step()
        return time.perf_counter() - start, steps

    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    xd, yd = torch.from_numpy(data.x), torch.from_numpy(data.y)
    mlp_ms = median_ms_per_step(
        lambda: loop(mlp, list(mlp.parameters()), xd, yd, torch.nn.functional.cross_entropy), repeats
    )

    class LoRALinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = torch.nn.Linear(256, 256)
            self.base.requires_grad_(False)
            self.a = torch.nn.Parameter(torch.randn(256, 8, generator=gen) * 0.06)
            self.b = torch.nn.Parameter(torch.zeros(8, 256))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.a) @ self.b * 2.0

    stack = torch.nn.Sequential(LoRALinear(), torch.nn.ReLU(), LoRALinear())
    trainable = [p for p in stack.parameters() if p.requires_grad]
    xl, yl = torch.from_numpy(lora.x), torch.from_numpy(lora.y)
    lora_ms = median_ms_per_step(lambda: loop(stack, trainable, xl, yl, torch.nn.functional.mse_loss), repeats)
    return mlp_ms, lora_ms


_RSS_CHILD = """
import os, resource, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, sys.argv[1])
import numpy as np
from runtimes import DenseLayer, DenseStack, TrainConfig, TrainingData, create_backend, init_parameters
arrays = np.load(sys.argv[2])
head = DenseStack(layers=(DenseLayer(in_features=64, out_features=64, activation="relu"),
                          DenseLayer(in_features=64, out_features=10)))
with create_backend("numpy") as backend:
    backend.load(head, init_parameters(head, rng=np.random.default_rng(0)))
    backend.fit(TrainingData(x=arrays["x"], y=arrays["y"]), TrainConfig(epochs=3, learning_rate=0.1))
# VmHWM belongs to this address space; ru_maxrss can carry the parent's high-water mark across fork/exec.
try:
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    print(int(hwm.split()[1]) / 1024.0)
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def numpy_peak_rss_mb(data: TrainingData) -> float:
    """Peak RSS of a fresh interpreter that imports runtimes and trains the digits head for 3 epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        np.savez(path, x=data.x, y=data.y)
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(ROOT), str(path)], check=True, capture_output=True, text=True
        )
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data, lora = digits(), lora_data()
    result: dict[str, object] = {"batch": BATCH, "threads": 1, "steps": args.steps}

    mlp_params = init_parameters(mlp_spec(), rng=np.random.default_rng(0))
    lora_params = init_parameters(lora_spec(), rng=np.random.default_rng(0))
    result["numpy_mlp_ms"] = bench_backend("numpy", mlp_spec(), mlp_params, data, args.steps, args.repeats)
    result["numpy_lora_ms"] = bench_backend("numpy", lora_spec(), lora_params, lora, args.steps, args.repeats)
    try:
        result["litert_mlp_ms"] = bench_backend(
            "litert",
            TrainSignatureModel(path=FIXTURES / "digits_mlp_train.tflite"),
            mlp_params,
            data,
            args.steps,
            args.repeats,
        )
        lora_model = TrainSignatureModel(
            path=FIXTURES / "lora_256_train.tflite",
            loss="mse",
            frozen=("dense0_weight", "dense0_bias", "dense1_weight", "dense1_bias"),
        )
        result["litert_lora_ms"] = bench_backend("litert", lora_model, lora_params, lora, args.steps, args.repeats)
    except RuntimeBackendError as exc:
        print(f"litert skipped: {exc}")
        result["litert_mlp_ms"] = result["litert_lora_ms"] = None
    try:
        result["onnx_cached_epoch_ms"], result["onnx_uncached_epoch_ms"] = bench_onnx_epochs(data, args.repeats)
    except (RuntimeBackendError, ImportError) as exc:
        print(f"onnx skipped: {exc}")
        result["onnx_cached_epoch_ms"] = result["onnx_uncached_epoch_ms"] = None
    try:
        result["torch_mlp_ms"], result["torch_lora_ms"] = bench_torch(data, lora, args.steps, args.repeats)
    except ImportError:
        print("torch not installed: torch_* are null (pip install torch==2.13.0 to compare)")
        result["torch_mlp_ms"] = result["torch_lora_ms"] = None
    result["numpy_peak_rss_mb"] = numpy_peak_rss_mb(data)

    def ratio(a: object, b: object) -> float | None:
        return round(float(a) / float(b), 3) if isinstance(a, float) and isinstance(b, float) and b else None  # type: ignore[arg-type]

    result["targets"] = {
        "numpy_mlp_le_torch": None
        if result["torch_mlp_ms"] is None
        else result["numpy_mlp_ms"] <= result["torch_mlp_ms"],  # type: ignore[operator]
        "numpy_lora_le_1.2x_litert": None
        if result["litert_lora_ms"] is None
        else result["numpy_lora_ms"] <= 1.2 * result["litert_lora_ms"],  # type: ignore[operator]
        "onnx_cache_speedup": ratio(result["onnx_uncached_epoch_ms"], result["onnx_cached_epoch_ms"]),
        "onnx_cache_ge_5x": None
        if result["onnx_cached_epoch_ms"] is None
        else result["onnx_uncached_epoch_ms"] >= 5 * result["onnx_cached_epoch_ms"],  # type: ignore[operator]
        "numpy_peak_rss_le_80mb": result["numpy_peak_rss_mb"] <= 80.0,  # type: ignore[operator]
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
