"""Learning quality under edge constraints (issue 9). The last line printed is one JSON object.

    python benchmarks/bench_quality.py [--devices 20] [--rounds 12] [--epochs 3] [--lr 0.2] [--eval-every 2]
        [--alpha 0.3] [--seed 0] [--runs fp32,rotated2,rotated1,topk,dp,secagg] [--out out/bench_quality]

scikit-learn's digits (real data, bundled) split over ``--devices`` device processes (``flclient run``) with
Dirichlet label skew ``--alpha`` (seeded, :func:`flclient.server._demo.make_partitions`); every device runs the
``device_context`` WASM feature module (built with featurec, so the Rust wasm toolchain is needed) and the numpy
runtime; the server is the flclient ServerApp on a real local SuperLink (``flower-superlink`` on loopback).
Each run starts with a federated-statistics round (the global scaler of the module's columns) and ends with a
federated evaluation round on the devices' held-out data; there is an evaluation round after every
``--eval-every`` training rounds for the curves.

The model: an MLP 67 -> 768 -> 128 -> 10 (ReLU, 151,946 parameters), trained on the devices with SGD (``--lr``,
``--epochs`` per round); the server applies FedAvgM (server lr 1, momentum 0.9) to the equal-weight mean of the
devices' updates (``aggregation = mean``: the rule a SecAgg round computes, so that every run, SecAgg included,
aggregates alike). A model this size makes the per-message overhead (protobuf envelope, metrics, the evaluation
replies, 3-4 kB a round) small next to the update itself, so that the upload ratios measure the codecs.

Baseline ``central_acc``: the same model trained centrally with the same local optimiser on the union of the
devices' training splits for ``rounds x epochs`` epochs, scored on the union of their held-out splits (the
examples the federated evaluation uses), features normalised with the union's scaler.

Runs: ``fp32`` the devices upload plain float32 arrays (Flower's standard layout); ``rotated2`` / ``rotated1``
Hadamard-rotated 2-bit / 1-bit updates; ``topk`` top-5 % with error feedback; ``secagg`` SecAgg+ rounds (24-bit
quantised, masked); ``dp`` central DP (device-level, DP-FedAvg: the devices clip, the server clips again and adds
Gaussian noise, epsilon by dp-accounting's PLD accountant over the run), on the linear model 67 -> 10 (680
parameters), because the noise of a device-level DP average grows with the square root of the parameter count
and 20 devices cannot drown it for a 334k-parameter model; the DP run carries its own ``central_acc``.

Per run: ``acc`` (final federated evaluation, weighted by examples), ``rounds``, ``mb_up_per_device`` (bytes the
devices pushed to the SuperLink, from their telemetry: every message of the run, the statistics and evaluation
replies included, averaged over devices, MB = 1e6 B), ``train_mb_up_per_device`` (the training replies alone),
``update_mb_per_device`` (the encoded update payloads alone, codec runs), ``params``, ``curve``.
``dp`` adds ``epsilon`` at ``delta``. Writes ``quality.png`` (accuracy vs round and vs MB uploaded per device) and
``quality.md`` under ``--out``. ``targets`` (issue 9): fp32 within 2 points of central; rotated2 within 1 point of
fp32 at <= 1/14 of its upload; secagg within 0.5 points of fp32; dp states its epsilon.
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
from flclient.protocol import TrainTask, model_spec_from_json  # noqa: E402
from flclient.server import LocalSuperLink, write_flower_app  # noqa: E402
from flclient.server._demo import (  # noqa: E402
    build_feature_module,
    make_partitions,
    start_device,
    stop_devices,
    write_device_config,
)
from flclient.server._plan import init_params as _init_params  # noqa: E402
from flclient.server._stats import FeatureStats, federated_scaler  # noqa: E402

MODEL_SPEC = json.dumps({"layers": [[67, 768, "relu"], [768, 128, "relu"], [128, 10, "none"]], "loss": "cross_entropy"})
LINEAR_SPEC = json.dumps({"layers": [[67, 10, "none"]], "loss": "cross_entropy"})
DP_NOISE, DP_CLIP, DP_DELTA = 2.0, 0.7, 1e-5
RUNS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "rotated2": {"update-codec": "rotated2"},
    "rotated1": {"update-codec": "rotated1"},
    "topk": {"update-codec": "topk", "topk-fraction": 0.05},
    "dp": {
        "model-spec": LINEAR_SPEC,
        "lr": 0.5,
        "server-optimizer": "fedavg",
        "aggregation": "fedavg",  # central DP averages the clipped updates with equal weights itself
        "dp-mode": "central",
        "clip-norm": DP_CLIP,
        "dp-noise-multiplier": DP_NOISE,
        "dp-delta": DP_DELTA,
    },
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
        "eval-every": args.eval_every,
        "model-spec": MODEL_SPEC,
        "server-optimizer": "fedavgm",
        "aggregation": "mean",
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
        typed = TrainTask.from_records({"config": ConfigRecord({**task, "model-spec": str(cfg["model-spec"])})})
        x, y, _ = ex._features(typed.pins.feature_module, typed.features)
        order = np.random.Generator(np.random.PCG64(int(cfg["seed"]))).permutation(len(y))  # the devices' split
        n_eval = round(len(y) * 0.2) if len(y) > 1 else 0
        eval_x.append(x[order[:n_eval]])
        eval_y.append(y[order[:n_eval]])
        train_x.append(x[order[n_eval:]])
        train_y.append(y[order[n_eval:]])
        ex.close()
    spec_json = str(cfg["model-spec"])
    spec = json.loads(spec_json)
    model = runtimes.DenseStack(
        layers=tuple(runtimes.DenseLayer(in_features=i, out_features=o, activation=a) for i, o, a in spec["layers"])
    )
    backend = runtimes.create_backend("numpy")
    try:
        initial = _init_params(model_spec_from_json(spec_json), int(cfg["init-seed"]))  # the federation's first model
        backend.load(model, initial)
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
    trains = [r for r in records if r["event"] == "round"]
    pushed = [_pushed_by_group(c.parent / "state" / "telemetry.jsonl") for c in configs]
    total = float(np.mean([sum(p.values()) for p in pushed]))
    n_rounds = int(cfg["num-server-rounds"])
    train_groups = [g for g in set().union(*pushed) if g.startswith("secagg") or (g.isdigit() and int(g) <= n_rounds)]
    train = float(np.mean([sum(p.get(g, 0) for g in train_groups) for p in pushed]))
    # cumulative MB per device at each evaluation: everything pushed up to the training round it follows
    upto = [_group_round(str(e["round"] - 1 if e.get("final") else e["round"])) for e in evals]
    cum = [float(np.mean([sum(v for g, v in p.items() if _group_round(g) <= u) for p in pushed])) / 1e6 for u in upto]
    result: dict[str, Any] = {
        "acc": evals[-1]["eval_acc"],
        "rounds": len(trains),
        "mb_up_per_device": total / 1e6,
        "train_mb_up_per_device": train / 1e6,
        # the encoded update payloads alone (codec runs; 0 for plain arrays and SecAgg, which the server doesn't count)
        "update_mb_per_device": sum(r.get("update_bytes", 0) for r in trains) / len(data) / 1e6,
        "params": int(sum(np.prod(s) for s in _shapes(str(cfg["model-spec"])))),
        "failures": sum(sum(r.get("failures", {}).values()) for r in records if r["event"] in ("round", "evaluate")),
        "wall_s": round(time.monotonic() - t0, 1),
        "curve": [e["eval_acc"] for e in evals],
        "curve_mb": cum,
    }
    dp = [r["dp"] for r in trains if "dp" in r]
    if dp:
        result["epsilon"] = dp[-1]["epsilon"]  # the server's PLD accounting over the noised rounds
        result["delta"] = dp[-1]["delta"]
        result["noise_multiplier"] = float(cfg["dp-noise-multiplier"])
        result["clip_norm"] = float(cfg["clip-norm"])
    return result


def _shapes(spec_json: str) -> list[tuple[int, ...]]:
    return [s for i, o, _ in json.loads(spec_json)["layers"] for s in ((i, o), (o,))]


def _group_round(group: str) -> int:
    """The training round a message group belongs to: ``stats`` 0, ``7``/``eval-7``/``secagg-<tag>/7`` 7."""
    tail = group.rsplit("/", 1)[-1].removeprefix("eval-")
    return int(tail) if tail.isdigit() else 0


def _pushed_by_group(telemetry: Path) -> dict[str, int]:
    """Bytes a device pushed, per message group (round), from its telemetry (``task`` joined to ``pushed``)."""
    lines = [json.loads(x) for x in telemetry.read_text().splitlines()] if telemetry.exists() else []
    group = {str(t.get("message_id", ""))[:16]: str(t.get("round", "")) for t in lines if t.get("event") == "task"}
    out: dict[str, int] = {}
    for t in lines:
        if t.get("event") == "pushed":
            g = group.get(str(t.get("reply_to", ""))[:16], "other")
            out[g] = out.get(g, 0) + int(t.get("bytes_up", 0))
    return out


def write_report(out: Path, results: dict[str, Any]) -> None:
    """``quality.png`` (accuracy vs round, vs MB uploaded per device) and ``quality.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: v for k, v in results.items() if isinstance(v, dict) and "curve" in v}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for name, r in runs.items():
        xs = np.linspace(r["rounds"] / len(r["curve"]), r["rounds"], len(r["curve"]))
        a1.plot(xs, r["curve"], "o-", ms=3, label=name)
        a2.plot(r["curve_mb"], r["curve"], "o-", ms=3, label=name)
    for ax in (a1, a2):
        ax.axhline(results["central_acc"], color="k", ls="--", lw=1, label="central (MLP)")
        ax.set_ylabel("accuracy (federated held-out)")
        ax.set_ylim(0, 1)
    a1.set_xlabel("training round")
    a2.set_xlabel("MB uploaded per device (cumulative)")
    a2.set_xscale("log")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality.png")
    plt.close(fig)
    lines = [
        f"central accuracy (MLP 67-768-128-10): {results['central_acc']:.4f}",
        "",
        "| run | accuracy | rounds | params | MB up / device | of which training | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        note = ""
        if "epsilon" in r:
            note = (
                f"epsilon {r['epsilon']:.2f} at delta {r['delta']:g} (z {r['noise_multiplier']:g}, clip "
                f"{r['clip_norm']:g}); central acc of this model {r['central_acc']:.4f}"
            )
        lines.append(
            f"| {name} | {r['acc']:.4f} | {r['rounds']} | {r['params']} | {r['mb_up_per_device']:.4f} "
            f"| {r['train_mb_up_per_device']:.4f} | {note} |"
        )
    t = results.get("targets", {})
    lines += ["", "targets: " + json.dumps(t, sort_keys=True)]
    (out / "quality.md").write_text("\n".join(lines) + "\n")


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets against this run's numbers (a target whose runs were skipped is left out)."""
    out: dict[str, Any] = {}
    results = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    fp32 = results.get("fp32")
    if fp32:
        gap = 100 * (results["central_acc"] - fp32["acc"])
        out["fp32_gap_pts"] = round(gap, 2)
        out["fp32_within_2pts_of_central"] = gap <= 2.0
    rot = results.get("rotated2")
    if fp32 and rot:
        gap = 100 * (fp32["acc"] - rot["acc"])
        ratio = rot["mb_up_per_device"] / fp32["mb_up_per_device"]
        out["rotated2_gap_pts"] = round(gap, 2)
        out["rotated2_upload_ratio"] = round(ratio, 5)
        out["rotated2_upload_1_over"] = round(1 / ratio, 2)
        out["rotated2_train_upload_1_over"] = round(fp32["train_mb_up_per_device"] / rot["train_mb_up_per_device"], 2)
        out["rotated2_within_1pt_at_1_14"] = gap <= 1.0 and ratio <= 1 / 14
    sa = results.get("secagg")
    if fp32 and sa:
        gap = 100 * abs(fp32["acc"] - sa["acc"])
        out["secagg_gap_pts"] = round(gap, 2)
        out["secagg_within_0_5pts"] = gap <= 0.5
    dp = results.get("dp")
    if dp:
        out["dp_epsilon"] = round(dp["epsilon"], 3)
        out["dp_delta"] = dp["delta"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_quality")
    args = p.parse_args()
    names = [n for n in args.runs.split(",") if n]
    unknown = set(names) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; known: {', '.join(RUNS)}")
    t0 = time.monotonic()
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
        cfg = {**base, **RUNS[name]}
        try:
            results[name] = federate(name, out, data, module, cfg)
        except RuntimeError as exc:  # one failed run must not lose the others' results
            print(f"{name}: FAILED {exc}", file=sys.stderr, flush=True)
            results[name] = {"error": str(exc)[:500]}
            continue
        if cfg["model-spec"] != base["model-spec"]:
            results[name]["central_acc"] = central_baseline(data, module, cfg, args.rounds * args.epochs)
        r = results[name]
        print(
            f"{name}: acc {r['acc']:.4f} MB/device {r['mb_up_per_device']:.4f} ({r['wall_s']} s)",
            file=sys.stderr,
            flush=True,
        )
    results["targets"] = targets(results)
    write_report(out, results)
    summary = {
        k: ({kk: vv for kk, vv in v.items() if not kk.startswith("curve")} if "curve" in v else v)
        if isinstance(v, dict)
        else v
        for k, v in results.items()
    }
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
