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

Targets (issue 4): install <= 0.5x flwr's, import <= 0.33x, idle RSS <= 0.33x, round overhead <= 10 %.
Needs PyPI (or pip's cache) for the two venvs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.server._demo import run_demo, write_device_config  # noqa: E402
from flclient.server._local import LocalSuperLink  # noqa: E402

FLWR = "flwr==1.41.0"


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
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
