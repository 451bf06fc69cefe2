"""The Flower ServerApp for flclient devices (the only module, with its package, that imports ``flwr``).

Submit it as a Flower app whose ``serverapp`` component is ``flclient.server.app:app`` (see
:func:`flclient.server.write_flower_app`). Run config keys (all optional):

``num-server-rounds`` ``min-nodes`` ``node-wait-s`` ``round-timeout-s``     rounds and who takes part
``aggregation`` (fedavg | median | trimmed-mean) ``trim-fraction`` ``norm-bound`` (0 = off)
``feature-module`` ``feature-module-sha256`` ``feature-scale`` (comma-separated)   the pinned feature module
``model-spec`` (JSON) ``init-seed`` ``lr`` ``epochs`` ``batch-size`` ``seed`` ``eval-fraction``
``history-dir`` (model versions) ``metrics-path`` (JSON lines, one per round) ``start-version`` (resume/rollback)
``rollback-drop`` (roll back when accuracy falls this much below the best version; 0 = off)
``update-codec`` (fp32 | fp16 | bf16 | int8 | rotated1 | rotated2 | rotated4 | topk; unset = plain float32 arrays)
``clip-norm`` ``topk-fraction`` ``dp-noise-multiplier`` ``dp-mode`` (local)   the devices' update pipeline
``secagg`` (true: SecAgg+ training rounds) ``secagg-clip`` ``secagg-bits``   secure aggregation
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from .._errors import SecAggAborted, UpdateCodecError
from ._aggregate import DeviceUpdate, aggregate, apply_encoded_update
from ._history import ModelHistory

__all__ = ["app", "run_federation"]

app = ServerApp()

_DEFAULT_SPEC = json.dumps({"layers": [[67, 10, "none"]], "loss": "cross_entropy"})


def _init_params(spec_json: str, seed: int) -> dict[str, np.ndarray]:
    spec = json.loads(spec_json)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, (n_in, n_out, _) in enumerate(spec["layers"]):
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
    return list(grid.send_and_receive(msgs, timeout=timeout_s))


def _failure_reason(reply: Message) -> str:
    reason = reply.error.reason or ""
    return reason.split(":", 2)[1].strip() if reason.startswith(("declined:", "rejected:", "failed:")) else reason[:80]


def run_federation(grid: Grid, cfg: Mapping[str, Any]) -> None:
    """The server loop: send train tasks, decode and aggregate replies, version the model, evaluate."""
    rounds = int(cfg.get("num-server-rounds", 3))
    spec = str(cfg.get("model-spec", _DEFAULT_SPEC))
    history = ModelHistory(Path(str(cfg.get("history-dir", "flclient-models"))))
    metrics = _Metrics(str(cfg.get("metrics-path", "")))
    start = int(cfg.get("start-version", 0))
    if start:
        params = history.load(start)
        version = history.rollback(start, "start-version")
    else:
        params = _init_params(spec, int(cfg.get("init-seed", 0)))
        version = history.commit(params, {"round": 0, "init": True})
    task_config: dict[str, Any] = {
        "model-spec": spec,
        "lr": float(cfg.get("lr", 0.1)),
        "epochs": int(cfg.get("epochs", 1)),
        "batch-size": int(cfg.get("batch-size", 32)),
        "seed": int(cfg.get("seed", 0)),
        "eval-fraction": float(cfg.get("eval-fraction", 0.2)),
    }
    if cfg.get("feature-module"):
        task_config["feature-module"] = str(cfg["feature-module"])
        task_config["feature-module-sha256"] = str(cfg.get("feature-module-sha256", ""))
    if cfg.get("feature-scale"):
        task_config["feature-scale"] = [float(s) for s in str(cfg["feature-scale"]).split(",")]
    for key in ("update-codec", "dp-mode"):
        if cfg.get(key):
            task_config[key] = str(cfg[key])
    for key in ("clip-norm", "topk-fraction", "dp-noise-multiplier"):
        if key in cfg:
            task_config[key] = float(cfg[key])
    if task_config.get("dp-mode", "local") != "local":
        raise ValueError("dp-mode must be 'local': this server adds no central noise")
    secagg = _truthy(cfg.get("secagg", False))
    if secagg and task_config.get("update-codec"):
        raise ValueError("secagg and update-codec exclude each other: SecAgg masks its own quantised update")
    tag = secrets.token_hex(8)  # SecAgg round ids must never repeat on a device, across runs too
    method = str(cfg.get("aggregation", "fedavg"))
    norm_bound = float(cfg.get("norm-bound", 0.0)) or None
    timeout = float(cfg.get("round-timeout-s", 120))
    rollback_drop = float(cfg.get("rollback-drop", 0.0))
    best: tuple[float, int] = (-1.0, version)
    nodes = _wait_for_nodes(grid, int(cfg.get("min-nodes", 1)), float(cfg.get("node-wait-s", 60)))
    metrics.write({"event": "start", "nodes": len(nodes), "version": version, "rounds": rounds})
    for rnd in range(1, rounds + 2):
        final = rnd == rounds + 1
        nodes = sorted(grid.get_node_ids())
        t0 = time.monotonic()
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in params.items()}),
                "config": ConfigRecord({**task_config, "server-round": rnd, "model-version": version}),
            }
        )
        kind = MessageType.EVALUATE if final else MessageType.TRAIN
        if secagg and not final:
            sa_record: dict[str, Any] = {"event": "round", "round": rnd, "version": version, "nodes": len(nodes)}
            params, version = _secagg_round(
                grid, nodes, params, version, task_config, cfg, rnd, tag, history, sa_record
            )
            sa_record["new_version"] = version
            sa_record["round_s"] = time.monotonic() - t0
            metrics.write(sa_record)
            continue
        replies = _send(grid, nodes, kind, content, str(rnd), timeout)
        updates: list[DeviceUpdate] = []
        undecodable: dict[int, str] = {}
        update_bytes = 0
        reply_metrics: list[tuple[int, dict[str, Any]]] = []
        failures: dict[str, int] = {}
        per_node: dict[int, int] = {}
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
            if not final and "arrays" in reply.content.array_records:
                arrays = {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}
                updates.append(DeviceUpdate(src, arrays, n))
            elif not final and "update" in reply.content.array_records:
                payload = reply.content.array_records["update"].get("payload")
                try:
                    if payload is None:
                        raise UpdateCodecError("the 'update' record has no 'payload'")
                    raw = payload.numpy().tobytes()
                    update_bytes += len(raw)
                    updates.append(DeviceUpdate(src, apply_encoded_update(params, raw), n))
                except (UpdateCodecError, ValueError) as exc:
                    undecodable[src] = f"undecodable update: {exc}"
        record: dict[str, Any] = {
            "event": "evaluate" if final else "round",
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
        }
        acc = record["eval_acc"]
        if acc is not None and acc > best[0]:
            best = (acc, version)
        if not final:
            if rollback_drop and acc is not None and acc < best[0] - rollback_drop:
                version = history.rollback(best[1], f"accuracy {acc:.3f} fell below best {best[0]:.3f}")
                params = history.load(version)
                record["rolled_back_to"] = best[1]
            result = aggregate(params, updates, method=method, norm_bound=norm_bound)
            record["rejected"] = {str(k): v for k, v in {**undecodable, **result.rejected}.items()}
            if result.used:
                params = result.parameters
                version = history.commit(params, {"round": rnd, "used": list(result.used)})
            record["new_version"] = version
        record["round_s"] = time.monotonic() - t0
        metrics.write(record)
    metrics.write({"event": "done", "version": version})


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
    new_version = history.commit(outcome.parameters, {"round": rnd, "secagg": list(result.survivors)})
    return outcome.parameters, new_version


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls with the run's grid and context."""
    run_federation(grid, dict(context.run_config))
