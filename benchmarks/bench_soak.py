"""Fault-injection soak: a real SuperLink, the flclient ServerApp and device processes under a seeded schedule of
kills and network faults. The last line printed is one JSON object.

    python benchmarks/bench_soak.py [--devices 6] [--rounds 15] [--device-kills 17] [--superlink-kills 2] [--seed 0]

Everything is on loopback and every process is this script's own (stopped at the end). Half of the devices talk
through a flaky proxy that delays, drops, resets and loses answers (``tests/flclient/e2e/proxy.py``). Device
kills (SIGKILL, restart on the same state directory) are spread over the rounds at seeded offsets into a round,
so they land in every stage (fetch, train, push, linger, idle); SuperLink kills (SIGKILL of its process group,
restart on its database) end the ServerApp's run, which ``LocalSuperLink.run_to_completion`` resumes from its
last round without an operator.

Per round it prints what the server recorded (asked, replies, successes, errors, aggregated, late, duplicates,
re-issued) and what the devices pushed for that round. Totals: ``duplicates`` (server), ``late_replies``,
``lost_replies`` (devices that pushed a reply for a round, beyond the answers the server recorded for it: an
upper-bound estimate, since a reply pushed after the round closed is late, not lost), ``lost_tasks`` (tasks of
rounds that closed at the deadline without an answer from the node asked), ``finished``, ``acc_first``,
``acc_last`` and the fault counts. Bounded by ``--timeout-s`` (default 1200).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=6)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device-kills", type=int, default=17)
    p.add_argument("--superlink-kills", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline-s", type=float, default=30.0)
    p.add_argument("--timeout-s", type=float, default=1200.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="flclient-soak-") as tmp:
        print(json.dumps(soak(Path(tmp), args)), flush=True)


def soak(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    from featurec import build_module
    from flclient.server import LocalSuperLink, write_flower_app
    from flclient.server._demo import MODEL_SPEC, make_partitions, write_device_config
    from tests.flclient.e2e.proxy import FlakyProxy, Rule

    rng = random.Random(args.seed)
    built = build_module(ROOT / "wasm" / "rust-features" / "device_context", tmp / "modules")
    link = LocalSuperLink(tmp / "flwr", database=tmp / "flwr" / "state.db")
    link.start()
    rules = [
        Rule("delay", "pull-object", share=0.2, budget=40, delay_s=1.0),
        Rule("drop", "send-node-heartbeat", share=0.1, budget=10),
        Rule("lose-answer", "pull-messages", share=0.05, budget=4),
        Rule("lose-answer", "push-object", share=0.2, budget=8),
        Rule("drop", "push-messages", share=0.2, budget=8),
        Rule("lose-answer", "confirm-message-received", share=0.2, budget=6),
    ]
    proxy = FlakyProxy(link.url, rules=rules, seed=args.seed)
    data = make_partitions(args.devices, tmp / "data", seed=1)
    configs = [
        write_device_config(
            tmp / f"device{i}",
            superlink_url=proxy.url if i % 2 else link.url,
            data=data[i],
            modules=[built.path],
            grace_s=2.0,
        )
        for i in range(args.devices)
    ]
    procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(i: int) -> None:
        log = (configs[i].parent / "node.log").open("ab")
        procs[i] = subprocess.Popen(
            [sys.executable, "-m", "flclient", "run", "--config", str(configs[i])],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)),
        )
        log.close()

    for i in range(args.devices):
        start(i)
    metrics = tmp / "metrics.jsonl"
    cfg = {
        "num-server-rounds": args.rounds,
        "min-nodes": args.devices,
        "node-wait-s": 60,
        "round-timeout-s": args.deadline_s,
        "feature-module": "device_context@1.0.0",
        "feature-module-sha256": built.sha256,
        "feature-scale": "23,1,10",
        "model-spec": MODEL_SPEC,
        "lr": 0.5,
        "epochs": 2,
        "metrics-path": str(metrics),
        "history-dir": str(tmp / "models"),
    }
    # the seeded schedule: (after how many rounds, offset into the round in s, what)
    events: list[tuple[int, float, str]] = []
    for _ in range(args.device_kills):
        events.append((rng.randrange(args.rounds), rng.uniform(0.0, 3.0), f"device:{rng.randrange(args.devices)}"))
    for k in range(args.superlink_kills):
        events.append(((k + 1) * args.rounds // (args.superlink_kills + 1), rng.uniform(0.0, 2.0), "superlink"))
    events.sort()
    counts = {"device_kills": 0, "superlink_kills": 0}
    stop = threading.Event()

    def rounds_done() -> int:
        if not metrics.exists():
            return 0
        return sum('"event": "round"' in line for line in metrics.read_text().splitlines())

    def chaos() -> None:
        for after, offset, what in events:
            while rounds_done() < after and not stop.is_set():
                time.sleep(0.05)
            if stop.wait(offset):
                return
            if what == "superlink":
                link.kill()
                counts["superlink_kills"] += 1
                time.sleep(1.0)
                link.start()
            else:
                i = int(what.split(":")[1])
                procs[i].send_signal(signal.SIGKILL)
                procs[i].wait()
                counts["device_kills"] += 1
                start(i)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        run_ids, status = link.run_to_completion(
            write_flower_app(tmp / "app", cfg), timeout_s=args.timeout_s, max_resumes=args.superlink_kills + 2
        )
    except TimeoutError as exc:
        run_ids, status = [], f"timeout: {exc}"
    finally:
        stop.set()
        thread.join(timeout=30)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proxy.close()
        link.stop()
    wall_s = time.monotonic() - t0
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    pushed = _device_pushes(configs)
    totals = {"duplicates": 0, "late_replies": 0, "lost_replies": 0, "lost_tasks": 0, "reissued": 0}
    last: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("event") == "round":
            last[int(r["round"])] = r  # a round redone after a resume: its last record counts
    for n, r in sorted(last.items()):
        answered = int(r["replies"])
        dev = pushed.get(str(n), 0)
        lost_replies = max(0, dev - answered)
        lost_tasks = int(r["selected"]) - answered if r["closed"] == "deadline" else 0
        totals["duplicates"] += int(r["duplicates"])
        totals["late_replies"] += int(r["late"])
        totals["lost_replies"] += lost_replies
        totals["lost_tasks"] += max(0, lost_tasks)
        totals["reissued"] += int(r.get("reissued", 0))
        print(
            f"round {n:3d}  asked {r['selected']}  replies {answered}  ok {r.get('successes')}  "
            f"errors {r.get('errors')}  aggregated {r['aggregated']}  late {r['late']}  dup {r['duplicates']}  "
            f"reissued {r.get('reissued', 0)}  device-pushed {dev}  lost {lost_replies}",
            flush=True,
        )
    evals = [r for r in records if r.get("event") == "evaluate"]
    first_round = last.get(1)
    return {
        "bench": "soak",
        **totals,
        "finished": status == "finished:completed" and bool(records) and records[-1].get("event") == "done",
        "status": status,
        "runs": len(run_ids),
        "rounds": len(last),
        "acc_first": first_round.get("eval_acc") if first_round else None,
        "acc_last": evals[-1].get("eval_acc") if evals else None,
        **counts,
        "proxy_faults": {a: proxy.fired(a) for a in ("delay", "drop", "lose-answer")},
        "devices": args.devices,
        "seed": args.seed,
        "wall_s": round(wall_s, 1),
    }


def _device_pushes(configs: list[Path]) -> dict[str, int]:
    """Per round (its group id), how many devices pushed a reply to a training instruction of it."""
    out: dict[str, set[int]] = {}
    for i, cfg in enumerate(configs):
        path = cfg.parent / "state" / "telemetry.jsonl"
        rows = []
        for p in (path.with_name(path.name + ".1"), path):
            if p.exists():
                for line in p.read_text().splitlines():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        continue
        rounds = {
            t["message_id"]: str(t["round"])
            for t in rows
            if t.get("event") == "task" and t.get("message_type") == "train"
        }
        for t in rows:
            if t.get("event") == "pushed" and t.get("reply_to") in rounds:
                out.setdefault(rounds[t["reply_to"]], set()).add(i)
    return {k: len(v) for k, v in out.items()}


if __name__ == "__main__":
    main()
