"""The Flower ServerApp for flclient devices (the only module, with its package, that imports ``flwr``).

Submit it as a Flower app whose ``serverapp`` component is ``flclient.server.app:app`` (see
:func:`flclient.server.write_flower_app`). Run config keys (all optional):

``num-server-rounds`` ``min-nodes`` ``node-wait-s`` ``round-timeout-s``     rounds and who takes part
``target`` ``over-selection`` ``round-deadline-s`` ``min-replies`` ``selection-seed`` ``round-poll-s``
``eval-target``   over-selection, a round deadline and partial aggregation; late replies are discarded and counted;
round records carry ``selected`` ``closed`` ``late`` ``aggregated`` ``reply_s_p50/p99`` (:mod:`flclient.server._rounds`)
``aggregation`` (fedavg | mean: equal weights, as SecAgg | median | trimmed-mean) ``trim-fraction``
``norm-bound`` (0 = off)
``feature-module`` ``feature-module-sha256`` ``feature-scale`` (comma-separated)   the pinned feature module
``model-spec`` (JSON) ``init-seed`` ``lr`` ``epochs`` ``batch-size`` ``seed`` ``eval-fraction``
``history-dir`` (model versions, each with the server optimiser's state) ``metrics-path`` (JSON lines, one per
round) ``start-version`` (resume/rollback: the model and the optimiser state of that version)
``rollback-drop`` (roll back when accuracy falls this much below the best version; 0 = off)
``update-codec`` (fp32 | fp16 | bf16 | int8 | rotated1 | rotated2 | rotated4 | topk; unset = plain float32 arrays)
``clip-norm`` ``topk-fraction`` ``dp-noise-multiplier`` ``dp-mode`` (local)   the devices' update pipeline
``dp-mode = central`` (devices clip only; the server clips again, averages with equal weights and adds Gaussian
noise, see :mod:`flclient.server._dp`) ``dp-delta`` (1e-5) ``dp-population`` (cohort sampling rate = nodes in
the round / population; default: the nodes in the round are everyone): round records carry ``dp`` with the
run's epsilon so far (PLD, dp-accounting)
``secagg`` (true: SecAgg+ training rounds) ``secagg-clip`` ``secagg-bits``   secure aggregation
``server-optimizer`` (fedavg | fedavgm | fedadam) ``server-lr`` ``server-momentum`` ``adam-beta1`` ``adam-beta2``
``adam-tau``   the server optimiser applied to the aggregated delta (see :mod:`flclient.server._optim`)
``proximal-mu``   FedProx's proximal term on the devices (0 = off)
``eval-every`` (k > 0: an evaluation round after every k-th training round, besides the final one; evaluation
rounds never change the model; their records carry ``by_class``: metrics per device class, weighted by examples)
``personal-layers`` (k > 0: the model's last k dense layers are private heads on the devices, never uploaded;
the server aggregates the other layers only; evaluation records carry ``per_device`` accuracies)
``model-signing-key`` ``artifacts-repo`` ``artifacts-keys`` ``model-via-tuf`` ``require-signed-updates`` ``device-keys``
signed global models, checkpoints through TUF and verified device updates (see :mod:`flclient.server._trust`)
``federated-scaler`` (true: a feature-stats query round first; train/evaluate tasks carry the global ``scaler``
and its ``scaler-version``, stored as ``<history-dir>/scalers/scaler-<version>.json``)
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from .._errors import ProtocolError, SecAggAborted, UpdateCodecError
from ..protocol import ErrorReply, ModelSpec
from ._aggregate import DeviceUpdate, aggregate, apply_encoded_update
from ._dp import CentralDP, central_dp_aggregate
from ._exchange import send_and_receive
from ._history import ModelHistory
from ._optim import ServerOptimizer
from ._plan import TaskPlan, plan_from_config
from ._rounds import RoundCollector, RoundRules
from ._runconfig import truthy
from ._stats import FeatureStats, Scaler, ScalerStore, federated_scaler
from ._trust import ServerTrust

__all__ = ["app", "run_federation"]

app = ServerApp()

_DEFAULT_SPEC = json.dumps({"layers": [[67, 10, "none"]], "loss": "cross_entropy"})


def _init_params(model: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate((ly.in_features, ly.out_features) for ly in model.layers):
        out[f"dense{i}_weight"] = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out))).astype(
            np.float32
        )
        out[f"dense{i}_bias"] = np.zeros(n_out, dtype=np.float32)
    return out


def _weighted(replies: Iterable[tuple[int, Mapping[str, Any]]], key: str) -> float | None:
    pairs = [(n, float(m[key])) for n, m in replies if key in m]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


class _Metrics:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None

    def write(self, record: dict[str, Any]) -> None:
        print(json.dumps(record, sort_keys=True), flush=True)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def _send(grid: Grid, nodes: list[int], kind: str, content: RecordDict, group: str, timeout_s: float) -> list[Message]:
    msgs = [Message(content=content, dst_node_id=n, message_type=kind, group_id=group) for n in nodes]
    return send_and_receive(grid, msgs, timeout=timeout_s)


def _failure_reason(reply: Message) -> str:
    """How a failed reply is counted: the device's error code, or Flower's own error (node unavailable, ...)."""
    try:
        return ErrorReply.from_reason(reply.error.reason or "").code
    except ProtocolError:
        return f"flower-error-{reply.error.code}"


def run_federation(grid: Grid, cfg: Mapping[str, Any]) -> None:
    """The server loop: send train tasks, decode and aggregate replies, version the model, evaluate."""
    rounds = int(cfg.get("num-server-rounds", 3))
    history = ModelHistory(Path(str(cfg.get("history-dir", "flclient-models"))))
    metrics = _Metrics(str(cfg.get("metrics-path", "")))
    trust = ServerTrust.from_config(cfg, history_dir=Path(str(cfg.get("history-dir", "flclient-models"))))
    plan = plan_from_config(cfg, default_model=_DEFAULT_SPEC)
    personal = plan.personal
    start = int(cfg.get("start-version", 0))
    if start:
        params = history.load(start)
        version = history.rollback(start, "start-version")
    else:
        params = _init_params(plan.model, int(cfg.get("init-seed", 0)))
        version = history.commit(params, {"round": 0, "init": True})
    secagg = truthy(cfg.get("secagg", False))
    central_dp = None
    if plan.update.noise_multiplier and plan.update.dp_mode == "central":
        central_dp = CentralDP(
            clip_norm=plan.update.clip_norm,
            noise_multiplier=plan.update.noise_multiplier,
            delta=float(cfg.get("dp-delta", 1e-5)),
        )
        if secagg or str(cfg.get("aggregation", "fedavg")) != "fedavg":
            raise ValueError("dp-mode central needs plain fedavg aggregation without secagg")
    dp_rounds: list[float] = []  # the sampling rate of every noised round so far
    dp_rng = np.random.default_rng(secrets.randbits(128))  # the server's noise: never a fixed seed
    if truthy(cfg.get("federated-scaler", False)) and plan.pins.feature_module is None:
        raise ValueError("federated-scaler needs a pinned feature-module")
    if secagg and personal:
        raise ValueError("secagg and personal-layers exclude each other: SecAgg masks the whole model")
    if secagg and plan.update.codec is not None:
        raise ValueError("secagg and update-codec exclude each other: SecAgg masks its own quantised update")
    tag = secrets.token_hex(8)  # SecAgg round ids must never repeat on a device, across runs too
    method = str(cfg.get("aggregation", "fedavg"))
    optimizer = ServerOptimizer.from_config(cfg)
    if start:  # resume with the momentum/moments saved with that version (none: start them afresh)
        optimizer.load_state_dict(history.load_optimizer_state(version))
    norm_bound = float(cfg.get("norm-bound", 0.0)) or None
    timeout = float(cfg.get("round-timeout-s", 120))
    collector = RoundCollector(grid, RoundRules.from_config(cfg))
    rollback_drop = float(cfg.get("rollback-drop", 0.0))
    best: tuple[float, int] = (-1.0, version)
    nodes = _wait_for_nodes(grid, int(cfg.get("min-nodes", 1)), float(cfg.get("node-wait-s", 60)))
    metrics.write({"event": "start", "nodes": len(nodes), "version": version, "rounds": rounds})
    if truthy(cfg.get("federated-scaler", False)):
        store = ScalerStore(Path(str(cfg.get("history-dir", "flclient-models"))) / "scalers")
        plan = plan.with_scaler(_stats_round(grid, nodes, plan, store, timeout, metrics))
    eval_every = int(cfg.get("eval-every", 0))
    schedule: list[tuple[int, bool]] = []
    for r in range(1, rounds + 1):
        schedule.append((r, False))
        if eval_every > 0 and r % eval_every == 0 and r < rounds:
            schedule.append((r, True))
    schedule.append((rounds + 1, True))  # the final evaluation
    for rnd, evaluating in schedule:
        group = str(rnd) if not evaluating or rnd == rounds + 1 else f"eval-{rnd}"
        nodes = sorted(grid.get_node_ids())
        t0 = time.monotonic()
        build = plan.evaluate if evaluating else plan.train
        content = build(params, server_round=rnd, version=version)
        if trust is not None:  # signed model, TUF checkpoint pin (see flclient.server._trust)
            trust.prepare(content, params, version=version, run_id=grid.run.run_id)
        kind = MessageType.EVALUATE if evaluating else MessageType.TRAIN
        if secagg and not evaluating:
            sa_record: dict[str, Any] = {"event": "round", "round": rnd, "version": version, "nodes": len(nodes)}
            # The task's config as prepared above: with the model's signature and the run id when trust is on.
            prepared = dict(content.config_records["config"])
            params, version = _secagg_round(
                grid, nodes, params, version, prepared, cfg, rnd, tag, history, sa_record, optimizer
            )
            sa_record["new_version"] = version
            sa_record["round_s"] = time.monotonic() - t0
            metrics.write(sa_record)
            continue
        asked = collector.select(nodes, training=not evaluating)
        collected = collector.collect(
            [Message(content=content, dst_node_id=n, message_type=kind, group_id=group) for n in asked],
            training=not evaluating,
        )
        replies = collected.replies
        updates: list[DeviceUpdate] = []
        undecodable: dict[int, str] = {}
        update_bytes = 0
        reply_metrics: list[tuple[int, dict[str, Any]]] = []
        classes: list[str] = []
        failures: dict[str, int] = {}
        per_node: dict[int, int] = {}
        shared = {k: v for k, v in params.items() if k not in personal}
        per_device: dict[str, float] = {}
        for reply in replies:
            src = reply.metadata.src_node_id
            per_node[src] = per_node.get(src, 0) + 1
            if reply.has_error():
                key = _failure_reason(reply)
                failures[key] = failures.get(key, 0) + 1
                continue
            m: dict[str, Any] = dict(reply.content.metric_records.get("metrics", {}))
            n = int(m.get("num-examples", 0))
            reply_metrics.append((max(int(m.get("eval-examples", n)), 0), m))
            classes.append(_device_class(reply))
            if "eval-acc" in m:
                per_device[str(src)] = float(m["eval-acc"])
            if not evaluating and trust is not None:  # verify the update signature before aggregation
                refused = trust.refuse(reply, server_round=rnd, version=version, run_id=grid.run.run_id)
                if refused is not None:
                    undecodable[src] = refused
                    continue
            if not evaluating and "arrays" in reply.content.array_records:
                arrays = {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}
                updates.append(DeviceUpdate(src, arrays, n))
            elif not evaluating and "update" in reply.content.array_records:
                payload = reply.content.array_records["update"].get("payload")
                try:
                    if payload is None:
                        raise UpdateCodecError("the 'update' record has no 'payload'")
                    raw = payload.numpy().tobytes()
                    update_bytes += len(raw)
                    updates.append(DeviceUpdate(src, apply_encoded_update(shared, raw), n))
                except (UpdateCodecError, ValueError) as exc:
                    undecodable[src] = f"undecodable update: {exc}"
        record: dict[str, Any] = {
            "event": "evaluate" if evaluating else "round",
            "round": rnd,
            "version": version,
            "nodes": len(nodes),
            "replies": len(replies),
            "duplicates": sum(c - 1 for c in per_node.values()),
            "failures": failures,
            "eval_acc": _weighted(reply_metrics, "eval-acc"),
            "eval_loss": _weighted(reply_metrics, "eval-loss"),
            "train_loss": _weighted([(int(m.get("num-examples", 0)), m) for _, m in reply_metrics], "train-loss"),
            "device_s": _weighted([(1, m) for _, m in reply_metrics], "device-s"),
            "train_s": _weighted([(1, m) for _, m in reply_metrics], "train-s"),
            "update_bytes": update_bytes,
            "by_class": _by_class(reply_metrics, classes),
        }
        if trust is not None and not evaluating:
            record["signed_updates"] = trust.take_summary()
        record.update(collected.to_record())
        if not evaluating and not collected.aggregate:
            updates = []  # fewer than min-replies updates in time: skip the round, keep the model
        if evaluating:
            record["final"] = rnd == rounds + 1
            record["per_device"] = per_device
        acc = record["eval_acc"]
        if acc is not None and acc > best[0]:
            best = (acc, version)
        if not evaluating:
            if rollback_drop and acc is not None and acc < best[0] - rollback_drop:
                version = history.rollback(best[1], f"accuracy {acc:.3f} fell below best {best[0]:.3f}")
                params = history.load(version)
                optimizer.load_state_dict(history.load_optimizer_state(version))  # the state it had then
                record["rolled_back_to"] = best[1]
                shared = {k: v for k, v in params.items() if k not in personal}
            if central_dp is not None:
                result, noise_std = central_dp_aggregate(shared, updates, central_dp, dp_rng)
                if result.used:
                    population = int(cfg.get("dp-population", 0)) or len(nodes)
                    dp_rounds.append(min(1.0, len(asked) / max(population, 1)))
                record["dp"] = {
                    "mode": "central",
                    "noise_std": noise_std,
                    "delta": central_dp.delta,
                    "epsilon": _dp_epsilon(central_dp, dp_rounds),
                }
            else:
                result = aggregate(shared, updates, method=method, norm_bound=norm_bound)
            record["rejected"] = {str(k): v for k, v in {**undecodable, **result.rejected}.items()}
            if result.used:
                params = {**params, **optimizer.step(shared, result.parameters)}
                version = history.commit(
                    params, {"round": rnd, "used": list(result.used)}, optimizer_state=optimizer.state_dict()
                )
            record["new_version"] = version
        record["round_s"] = time.monotonic() - t0
        metrics.write(record)
    metrics.write({"event": "done", "version": version})


def _stats_round(
    grid: Grid,
    nodes: list[int],
    plan: TaskPlan,
    store: ScalerStore,
    timeout: float,
    metrics: _Metrics,
) -> Scaler:
    """A ``feature-stats`` query round: the devices' sums give the global scaler, stored as a new version."""
    t0 = time.monotonic()
    replies = _send(grid, nodes, MessageType.QUERY, plan.stats_query(), "stats", timeout)
    stats: list[FeatureStats] = []
    failures: dict[str, int] = {}
    for reply in replies:
        if reply.has_error() or "stats" not in reply.content.array_records:
            key = _failure_reason(reply) if reply.has_error() else "no stats record"
            failures[key] = failures.get(key, 0) + 1
            continue
        rec = reply.content.array_records["stats"]
        try:
            stats.append(
                FeatureStats(rec["sum"].numpy(), rec["sumsq"].numpy(), int(np.asarray(rec["count"].numpy()).sum()))
            )
        except (KeyError, ValueError) as exc:
            failures[f"bad stats: {exc}"] = failures.get(f"bad stats: {exc}", 0) + 1
    pin = plan.pins.feature_module
    scaler = federated_scaler(stats, version=store.next_version(), module_sha256=pin.sha256 if pin else "")
    store.save(scaler)
    metrics.write(
        {
            "event": "stats",
            "nodes": len(nodes),
            "replies": len(replies),
            "devices": len(stats),
            "failures": failures,
            "scaler_version": scaler.version,
            "count": scaler.count,
            "round_s": time.monotonic() - t0,
        }
    )
    return scaler


def _device_class(reply: Message) -> str:
    rec = reply.content.config_records.get("device")
    value = rec.get("device-class") if rec is not None else None
    return value if isinstance(value, str) and value else "unknown"


def _by_class(reply_metrics: list[tuple[int, dict[str, Any]]], classes: list[str]) -> dict[str, dict[str, Any]]:
    """Held-out metrics per device class, each weighted by the devices' evaluation examples."""
    out: dict[str, dict[str, Any]] = {}
    for cls in sorted(set(classes)):
        group = [rm for rm, c in zip(reply_metrics, classes, strict=True) if c == cls]
        out[cls] = {
            "devices": len(group),
            "examples": sum(n for n, m in group if "eval-acc" in m or "eval-loss" in m),
            "eval_acc": _weighted(group, "eval-acc"),
            "eval_loss": _weighted(group, "eval-loss"),
        }
    return out


def _dp_epsilon(dp: CentralDP, rates: list[float]) -> float:
    """Epsilon of the noised rounds so far (rounds at the highest sampling rate seen: an upper bound)."""
    return dp.epsilon(rounds=len(rates), sampling_rate=max(rates)) if rates else 0.0


def _secagg_round(
    grid: Grid,
    nodes: list[int],
    params: dict[str, np.ndarray],
    version: int,
    task_config: Mapping[str, Any],
    cfg: Mapping[str, Any],
    rnd: int,
    tag: str,
    history: ModelHistory,
    record: dict[str, Any],
    optimizer: ServerOptimizer | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """One SecAgg+ training round in place of plain aggregation; an aborted round keeps the model."""
    from ._secagg import SecAggRoundConfig, secagg_train_round

    sa_cfg = SecAggRoundConfig(
        clip=float(cfg.get("secagg-clip", 1.0)),
        bits=int(cfg.get("secagg-bits", 24)),
        timeout_s=float(cfg.get("round-timeout-s", 120)),
    )
    config = ConfigRecord({**task_config, "server-round": rnd, "model-version": version})
    try:
        outcome = secagg_train_round(grid, nodes, params, config, sa_cfg, round_tag=f"{tag}/{rnd}")
    except SecAggAborted as exc:
        record["secagg"] = {"aborted": str(exc)}
        return params, version
    result = outcome.result
    record["secagg"] = {
        "survivors": len(result.survivors),
        "dropped": len(result.dropped),
        "rejected": {str(k): str(v) for k, v in result.rejected.items()},
    }
    new_params = outcome.parameters if optimizer is None else optimizer.step(params, outcome.parameters)
    new_version = history.commit(
        new_params,
        {"round": rnd, "secagg": list(result.survivors)},
        optimizer_state=optimizer.state_dict() if optimizer is not None else None,
    )
    return new_params, new_version


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls with the run's grid and context."""
    run_federation(grid, dict(context.run_config))
