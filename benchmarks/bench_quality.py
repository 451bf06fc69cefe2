"""Learning quality under edge constraints (issue 9). The last line printed is one JSON object.

    python benchmarks/bench_quality.py [--devices 20] [--rounds 20] [--alpha 0.3] [--seed 0]
                                       [--runs fp32,rotated2,rotated1,topk,dp,secagg] [--out out/bench_quality]

scikit-learn's digits (real data, bundled) split over ``--devices`` device processes (``flclient run``) with
Dirichlet label skew ``--alpha`` (seeded, :func:`flclient.server._demo.make_partitions`); every device runs the
``device_context`` WASM feature module (built with featurec, so the Rust wasm toolchain is needed) and the numpy
runtime; the server is the flclient ServerApp on a real local SuperLink (``flower-superlink`` on loopback).
Each run starts with a federated-statistics round (the global scaler of the module's columns) and ends with a
federated evaluation round on the devices' held-out data; there is an evaluation round after every training
round for the curves.

Baseline ``central_acc``: the same model (67 -> 10 softmax) trained centrally with the same local optimiser on
the union of the devices' training splits for ``rounds x epochs`` epochs, scored on the union of their held-out
splits (the examples the federated evaluation uses), features normalised with the union's scaler.

Per run: ``acc`` (final federated evaluation, weighted by examples), ``rounds``, ``mb_up_per_device`` (bytes the
devices pushed to the SuperLink, from their telemetry, all messages of the run, averaged over devices, MB = 1e6 B).
``update_mb_per_device``: the encoded update payloads alone (codec runs).
``dp`` adds ``epsilon`` at ``delta`` (device-level, local Gaussian DP composed over the rounds, PLD accountant).
Writes ``quality.png`` (accuracy vs round and vs MB uploaded per device) and ``quality.md`` under ``--out``.
Targets (issue 9): fp32 within 2 points of central; rotated2 within 1 point of fp32 at <= 1/14 of its upload;
secagg within 0.5 points of fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient._task import NpzDataSource, TaskExecutor  # noqa: E402
from flclient.fleet._objects import ArrayRecord, ConfigRecord  # noqa: E402
from flclient.server import LocalSuperLink, write_flower_app  # noqa: E402
from flclient.server._demo import (  # noqa: E402
    MODEL_SPEC,
    build_feature_module,
    make_partitions,
    start_device,
    stop_devices,
    write_device_config,
)
from flclient.server._stats import FeatureStats, federated_scaler  # noqa: E402
from flclient.server.app import _init_params  # noqa: E402

DP_NOISE, DP_CLIP, DP_DELTA = 0.8, 2.0, 1e-5
RUNS: dict[str, dict[str, Any]] = {
    "fp32": {"update-codec": "fp32"},
    "rotated2": {"update-codec": "rotated2", "clip-norm": 50.0},
    "rotated1": {"update-codec": "rotated1", "clip-norm": 50.0},
    "topk": {"update-codec": "topk", "topk-fraction": 0.05},
    "dp": {"update-codec": "fp32", "clip-norm": DP_CLIP, "dp-noise-multiplier": DP_NOISE},
    "secagg": {"secagg": "true", "secagg-clip": 50.0, "secagg-bits": 24},
}


def _base_config(pin: str, sha: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "num-server-rounds": args.rounds,
        "min-nodes": args.devices,
        "node-wait-s": 120,
        "round-timeout-s": 120,
        "feature-module": pin,
        "feature-module-sha256": sha,
        "federated-scaler": "true",
        "eval-every": 1,
        "model-spec": MODEL_SPEC,
        "lr": args.lr,
        "epochs": args.epochs,
        "seed": args.seed,
        "init-seed": args.seed,
    }


def central_baseline(data: list[Path], module: Path, cfg: dict[str, Any], epochs: int) -> float:
    """Train the same model on the union of the training splits; accuracy on the union of the held-out splits."""
    import runtimes

    executors = [TaskExecutor(data=NpzDataSource(p), feature_modules=[module]) for p in data]
    task = {k: v for k, v in cfg.items() if k in ("feature-module", "feature-module-sha256")}
    stats = []
    for ex in executors:
        rec = ex.run("query", {"config": ConfigRecord({**task, "query": "feature-stats"})}).content["stats"]
        assert isinstance(rec, ArrayRecord)
        stats.append(FeatureStats(rec.arrays["sum"], rec.arrays["sumsq"], int(rec.arrays["count"][0])))
    scaler = federated_scaler(stats, version=1, module_sha256=str(cfg["feature-module-sha256"]))
    task.update({"scaler": scaler.to_json(), "scaler-version": 1})
    train_x, train_y, eval_x, eval_y = [], [], [], []
    for ex in executors:
        x, y, _ = ex._features(task)
        order = np.random.Generator(np.random.PCG64(int(cfg["seed"]))).permutation(len(y))  # the devices' split
        n_eval = round(len(y) * 0.2) if len(y) > 1 else 0
        eval_x.append(x[order[:n_eval]])
        eval_y.append(y[order[:n_eval]])
        train_x.append(x[order[n_eval:]])
        train_y.append(y[order[n_eval:]])
        ex.close()
    spec = json.loads(MODEL_SPEC)
    model = runtimes.DenseStack(
        layers=tuple(runtimes.DenseLayer(in_features=i, out_features=o, activation=a) for i, o, a in spec["layers"])
    )
    backend = runtimes.create_backend("numpy")
    try:
        backend.load(model, _init_params(MODEL_SPEC, int(cfg["init-seed"])))  # the federation's initial model
        train = runtimes.TrainingData(x=np.concatenate(train_x), y=np.concatenate(train_y))
        backend.fit(train, runtimes.TrainConfig(epochs=epochs, learning_rate=float(cfg["lr"]), seed=int(cfg["seed"])))
        ev = backend.evaluate(runtimes.TrainingData(x=np.concatenate(eval_x), y=np.concatenate(eval_y)))
    finally:
        backend.close()
    return float(ev["accuracy"])


def federate(name: str, out: Path, data: list[Path], module: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """One federation over a fresh local SuperLink and fresh device processes; its result and curve."""
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = {**cfg, "metrics-path": str(run_dir / "metrics.jsonl"), "history-dir": str(run_dir / "models")}
    link = LocalSuperLink(run_dir / "flwr")
    procs = []
    t0 = time.monotonic()
    try:
        link.start()
        configs = [
            write_device_config(run_dir / f"device{i}", superlink_url=link.url, data=p, modules=[module], grace_s=2.0)
            for i, p in enumerate(data)
        ]
        procs = [start_device(c) for c in configs]
        run_id = link.submit(write_flower_app(run_dir / "app", cfg))
        status = link.wait(run_id, timeout_s=300 + 60 * int(cfg["num-server-rounds"]))
        if status != "finished:completed":
            raise RuntimeError(f"run {name} ended {status}:\n{link.logs(run_id)[-3000:]}")
    finally:
        stop_devices(procs)
        link.stop()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["event"] == "evaluate"]
    pushed = []
    for c in configs:
        tel = c.parent / "state" / "telemetry.jsonl"
        lines = tel.read_text().splitlines() if tel.exists() else []
        pushed.append(sum(int(json.loads(x).get("bytes_up", 0)) for x in lines if '"pushed"' in x))
    rounds = sum(1 for r in records if r["event"] == "round")
    mb = float(np.mean(pushed)) / 1e6
    result: dict[str, Any] = {
        "acc": evals[-1]["eval_acc"],
        "rounds": rounds,
        "mb_up_per_device": mb,
        # the encoded update payloads alone (codec runs; 0 for plain arrays and SecAgg, which the server doesn't count)
        "update_mb_per_device": sum(r.get("update_bytes", 0) for r in records if r["event"] == "round")
        / len(data)
        / 1e6,
        "wall_s": round(time.monotonic() - t0, 1),
        "curve": [e["eval_acc"] for e in evals],
    }
    if cfg.get("dp-noise-multiplier"):
        from flclient.update._server_accounting import central_epsilon

        result["epsilon"] = central_epsilon(
            noise_multiplier=float(cfg["dp-noise-multiplier"]), sampling_rate=1.0, rounds=rounds, delta=DP_DELTA
        )
        result["delta"] = DP_DELTA
    return result


def write_report(out: Path, results: dict[str, Any]) -> None:
    """``quality.png`` (accuracy vs round, vs MB uploaded per device) and ``quality.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: v for k, v in results.items() if isinstance(v, dict)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for name, r in runs.items():
        curve = r["curve"]
        xs = np.arange(1, len(curve) + 1)
        a1.plot(xs, curve, "o-", ms=3, label=name)
        a2.plot(xs / len(curve) * r["mb_up_per_device"], curve, "o-", ms=3, label=name)
    for ax in (a1, a2):
        ax.axhline(results["central_acc"], color="k", ls="--", lw=1, label="central")
        ax.set_ylabel("accuracy (federated held-out)")
        ax.set_ylim(0, 1)
    a1.set_xlabel("round")
    a2.set_xlabel("MB uploaded per device (cumulative, approx. linear in rounds)")
    a2.set_xscale("log")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality.png")
    plt.close(fig)
    lines = [
        f"central accuracy: {results['central_acc']:.4f}",
        "",
        "| run | accuracy | rounds | MB up / device | note |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        note = f"epsilon {r['epsilon']:.2f} at delta {r['delta']:g}" if "epsilon" in r else ""
        lines.append(f"| {name} | {r['acc']:.4f} | {r['rounds']} | {r['mb_up_per_device']:.4f} | {note} |")
    (out / "quality.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_quality")
    args = p.parse_args()
    names = [n for n in args.runs.split(",") if n]
    unknown = set(names) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; known: {', '.join(RUNS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    module = build_feature_module(out / "modules")
    from flclient.features import FeatureModule

    with FeatureModule.load(module) as fm:
        pin, sha = f"{fm.manifest.name}@{fm.manifest.version}", fm.sha256
    data = make_partitions(args.devices, out / "data", seed=args.seed, alpha=args.alpha)
    base = _base_config(pin, sha, args)
    results: dict[str, Any] = {"central_acc": central_baseline(data, module, base, args.rounds * args.epochs)}
    print(f"central: {results['central_acc']:.4f}", file=sys.stderr, flush=True)
    for name in names:
        results[name] = federate(name, out, data, module, {**base, **RUNS[name]})
        r = results[name]
        print(f"{name}: acc {r['acc']:.4f} MB/device {r['mb_up_per_device']:.4f}", file=sys.stderr, flush=True)
    write_report(out, results)
    summary = {
        k: ({kk: vv for kk, vv in v.items() if kk != "curve"} if isinstance(v, dict) else v) for k, v in results.items()
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
