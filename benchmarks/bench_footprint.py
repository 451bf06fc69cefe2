"""Device footprint against Flower's own node, in one run. Prints one JSON object on its last line.

    .venv/bin/python benchmarks/bench_footprint.py

- ``core_install_mb``: site-packages of a fresh venv with only the device's core install (`pip install .`),
  minus an empty venv's; ``flwr_install_mb``: the same for `pip install flwr==1.41.0`.
- ``import_ms``: `import flclient` in fresh processes of the core venv (median); ``flwr_import_ms``:
  `import flwr.client` in the flwr venv.
- ``idle_rss_mb``: RSS of an idle `flclient run` daemon (core venv) connected to a local SuperLink, children
  included; ``supernode_rss_mb``: an idle `flower-supernode` (flwr venv) against the same SuperLink.
- ``round_overhead_pct``: device-side time in a demo round that is not training, as % of training time
  (from the devices' telemetry of a 2-device, 2-round `flclient demo`), with its breakdown per train round in
  ``round_ms`` and ``round_overhead_local_pct``, the same without the wait for SuperLink's answers.
- ``core_packages_mb``: the largest packages of the core install (what a move to an extra could save).
- ``idle_requests_per_min`` / ``supernode_idle_requests_per_min``: Fleet API requests a minute of the idle daemon
  and of the idle SuperNode (both with a 30 s heartbeat interval), each counted by its own HTTP proxy in front of
  the same SuperLink over ``IDLE_WINDOW_S``, after both settled (the device's polling backed off).
- ``round_requests`` / ``round_bytes`` and the ``supernode_`` pair: what one 1-round run cost each of them on the
  wire (requests, and request plus answer bodies), polling excluded: every call but ``send-node-heartbeat`` and
  ``pull-messages`` with nothing to hand out. Both are in the same run; the SuperNode runs the generated app's
  ClientApp, so its "round" is whatever that ClientApp answers.

Targets (issue 4): install <= 0.5x flwr's, import <= 0.33x, idle RSS <= 0.33x, round overhead <= 10 %;
(issue 17) idle requests and a round's requests and bytes <= the SuperNode's.
Needs PyPI (or pip's cache) for the two venvs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.features import FeatureModule  # noqa: E402
from flclient.protocol import RunConfig  # noqa: E402
from flclient.server._demo import DEMO_TRAINING, run_demo, write_device_config  # noqa: E402
from flclient.server._local import LocalSuperLink, write_flower_app  # noqa: E402

FLWR = "flwr==1.41.0"
# The device's polling backs off to its heartbeat interval within about a minute; both can be shortened
# (BENCH_IDLE_SETTLE_S, BENCH_IDLE_WINDOW_S) for a quick look, at the price of a noisier rate.
IDLE_SETTLE_S = float(os.environ.get("BENCH_IDLE_SETTLE_S", "75"))
IDLE_WINDOW_S = float(os.environ.get("BENCH_IDLE_WINDOW_S", "120"))


class CountingProxy:
    """A loopback HTTP proxy in front of SuperLink's Fleet API that counts every call: name, time, body bytes."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[float, str, int, int]] = []  # (monotonic time, call, request bytes, answer bytes)
        client = httpx.Client(base_url=upstream, timeout=60, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                skip = {"host", "content-length", "connection", "transfer-encoding"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                r = client.post(self.path, content=body, headers=headers)
                proxy.calls.append((time.monotonic(), self.path.rsplit("/", 1)[-1], len(body), len(r.content)))
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in skip | {"content-encoding"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def between(self, start: float, end: float) -> list[tuple[float, str, int, int]]:
        return [c for c in self.calls if start <= c[0] < end]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def round_work(calls: list[tuple[float, str, int, int]]) -> list[tuple[float, str, int, int]]:
    """The calls of a round, polling excluded (heartbeats and pull-messages that handed out nothing)."""
    return [c for c in calls if c[1] != "send-node-heartbeat" and not (c[1] == "pull-messages" and c[3] == 0)]


def round_cost(calls: list[tuple[float, str, int, int]]) -> tuple[int, int]:
    """Requests and bytes (request plus answer bodies) of a round, polling excluded."""
    work = round_work(calls)
    return len(work), sum(c[2] + c[3] for c in work)


def fleet_traffic(core: Path, flwr: Path, demo: Path, tmp: Path) -> dict[str, object]:
    """An idle daemon and an idle SuperNode, each behind a counting proxy, then one 1-round run with both."""
    out: dict[str, object] = {}
    with LocalSuperLink(tmp / "traffic-link") as link:
        device_proxy, node_proxy = CountingProxy(link.url), CountingProxy(link.url)
        work = tmp / "traffic"
        config = write_device_config(
            work,
            superlink_url=f"http://127.0.0.1:{device_proxy.port}",
            data=next((demo / "data").glob("*.npz")),
            modules=sorted((demo / "modules").glob("*.wasm")),
            heartbeat_s=30.0,  # a SuperNode's interval: the same footing
        )
        text = config.read_text().replace("poll_interval_s = 0.2", "poll_interval_s = 1.0")
        config.write_text(text)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        procs = [
            subprocess.Popen(
                [str(core / "bin" / "flclient"), "run", "--config", str(config)],
                env=env,
                cwd=work,
                stdout=(work / "device.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ),
            subprocess.Popen(
                [str(flwr / "bin" / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{node_proxy.port}"],
                env={**link.env, "PATH": f"{flwr / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
                cwd=work,
                stdout=(work / "supernode.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ),
        ]
        try:
            time.sleep(IDLE_SETTLE_S)
            start = time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            end = time.monotonic()
            per_min = 60.0 / (end - start)
            out["idle_requests_per_min"] = round(len(device_proxy.between(start, end)) * per_min, 1)
            out["supernode_idle_requests_per_min"] = round(len(node_proxy.between(start, end)) * per_min, 1)
            module = next((demo / "modules").glob("*.wasm"))
            with FeatureModule.load(module) as fm:
                pin, sha = f"{fm.manifest.name}@{fm.manifest.version}", fm.sha256
            cfg = RunConfig(
                rounds=1,
                min_nodes=2,
                node_wait_s=60,
                round_timeout_s=60,
                feature_module=pin,
                feature_module_sha256=sha,
                feature_scale=(23.0, 1.0, 10.0),
                **DEMO_TRAINING,  # type: ignore[arg-type]
                metrics_path=work / "metrics.jsonl",
                history_dir=work / "models",
            ).to_run_config()
            app = write_flower_app(work / "app", cfg)
            start = time.monotonic()
            run_id = link.submit(app)
            out["traffic_run_status"] = link.wait(run_id, timeout_s=240)
            end = time.monotonic()
            out["round_requests"], out["round_bytes"] = round_cost(device_proxy.between(start, end))
            out["supernode_round_requests"], out["supernode_round_bytes"] = round_cost(node_proxy.between(start, end))
            for key, proxy in (("round_calls", device_proxy), ("supernode_round_calls", node_proxy)):
                names = [c[1] for c in round_work(proxy.between(start, end))]
                out[key] = {n: names.count(n) for n in sorted(set(names))}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            device_proxy.close()
            node_proxy.close()
    return out


def venv(path: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    if packages:
        subprocess.run(
            [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            check=True,
        )
    return path


def site_mb(env: Path) -> float:
    (site,) = env.glob("lib/python*/site-packages")
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


def import_ms(env: Path, module: str, repeats: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    runs = []
    for _ in range(repeats):
        out = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.strip()))
    return statistics.median(runs)


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def idle_rss(cmd: list[str], env: dict[str, str], cwd: Path, settle_s: float = 8.0) -> float:
    log = (cwd / f"{Path(cmd[0]).name}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(settle_s)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early with {proc.returncode}; see {log.name}")
        return tree_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def round_overhead(demo_dir: Path) -> dict[str, object]:
    """Device-side non-training time of the demo's train rounds, as % of training time, and where it went.

    ``device_s`` runs from the moment the device starts on an instruction (pulling its objects) until the reply
    is computed; the breakdown splits it into ``fetch`` (pulling the objects from SuperLink and confirming),
    ``decode``, ``features`` (WASM), ``train``, and the rest of the task (model load, evaluation, reply); ``store``
    (encoding and storing the reply durably) comes after ``device_s`` and is shown on its own.
    """
    rows = []
    for path in demo_dir.glob("device*/state/telemetry.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "task" and rec.get("outcome") == "replied" and rec.get("train_s"):
                rows.append(rec)
    train = sum(float(r["train_s"]) for r in rows)
    if train <= 0:
        raise RuntimeError(f"no training telemetry under {demo_dir}")

    def total(key: str) -> float:
        return sum(float(r.get(key, 0.0)) for r in rows)

    other = total("device_s") - train
    local = other - total("fetch_s")
    breakdown = {
        "fetch": total("fetch_s"),
        "decode": total("decode_s"),
        "features": total("features_s"),
        "train": train,
        "task_rest": total("task_s") - total("features_s") - train,
        "store": total("store_s"),
    }
    return {
        "round_overhead_pct": round(100 * other / train, 2),
        # the same without the wait for SuperLink's answers (network round trips to a loaded local SuperLink)
        "round_overhead_local_pct": round(100 * local / train, 2),
        "round_ms": {k: round(1000 * v / len(rows), 1) for k, v in breakdown.items()},
        "train_rounds": len(rows),
    }


def packages_mb(env: Path, top: int = 10) -> dict[str, float]:
    """The largest top-level entries of a venv's site-packages (dist-info folded into its package)."""
    (site,) = env.glob("lib/python*/site-packages")
    sizes: dict[str, float] = {}
    for entry in site.iterdir():
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()]
        name = entry.name.split("-")[0].removesuffix(".libs").lower()
        sizes[name] = sizes.get(name, 0.0) + sum(p.stat().st_size for p in files) / 2**20
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        base = site_mb(venv(tmp / "empty"))
        core = venv(tmp / "core", str(ROOT))
        flwr = venv(tmp / "flwr", FLWR)
        report: dict[str, object] = {
            "core_install_mb": round(site_mb(core) - base, 1),
            "flwr_install_mb": round(site_mb(flwr) - base, 1),
            "import_ms": round(import_ms(core, "flclient"), 1),
            "flwr_import_ms": round(import_ms(flwr, "flwr.client"), 1),
            "core_packages_mb": packages_mb(core),
        }

        # A demo federation: its telemetry gives the round overhead, its data and module feed the idle daemon.
        demo = tmp / "demo"
        if run_demo(devices=2, rounds=2, out_dir=demo) != 0:
            raise RuntimeError("the demo federation failed")
        report.update(round_overhead(demo))

        with LocalSuperLink(tmp / "link") as link:
            idle_dir = tmp / "idle"
            config = write_device_config(
                idle_dir,
                superlink_url=link.url,
                data=next((demo / "data").glob("*.npz")),
                modules=sorted((demo / "modules").glob("*.wasm")),
            )
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            report["idle_rss_mb"] = round(
                idle_rss([str(core / "bin" / "flclient"), "run", "--config", str(config)], env, idle_dir), 1
            )
            report["supernode_rss_mb"] = round(
                idle_rss(
                    [str(flwr / "bin" / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link.port}"],
                    {**link.env, "PATH": f"{flwr / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
                    idle_dir,
                ),
                1,
            )
        report.update(fleet_traffic(core, flwr, demo, tmp))

    def le(a: str, b: str) -> bool:
        return float(report[a]) <= float(report[b])  # type: ignore[arg-type]

    def ratio(a: str, b: str) -> float:
        return round(float(report[a]) / float(report[b]), 3)  # type: ignore[arg-type]

    install, imp, rss = (
        ratio("core_install_mb", "flwr_install_mb"),
        ratio("import_ms", "flwr_import_ms"),
        ratio("idle_rss_mb", "supernode_rss_mb"),
    )
    report.update(install_ratio=install, import_ratio=imp, rss_ratio=rss)
    report["targets_met"] = {
        "install_le_0.5x_flwr": install <= 0.5,
        "import_le_0.33x_flwr": imp <= 0.33,
        "idle_rss_le_0.33x_supernode": rss <= 0.33,
        "round_overhead_le_10pct": float(report["round_overhead_pct"]) <= 10,  # type: ignore[arg-type]
        "idle_requests_le_supernode": le("idle_requests_per_min", "supernode_idle_requests_per_min"),
        "round_requests_le_supernode": le("round_requests", "supernode_round_requests"),
        "round_bytes_le_supernode": le("round_bytes", "supernode_round_bytes"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
