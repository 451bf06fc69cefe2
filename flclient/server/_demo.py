"""``flclient demo``: a whole federation on loopback.

A local SuperLink, the flclient ServerApp and N device processes (``flclient run``), each with its own
non-IID partition of scikit-learn's digits (Dirichlet label skew, seeded) plus synthetic device context
(time, location, battery) that goes through the ``device_context`` WASM feature module on the device: the
model trains on 64 pixels + hour of day, weekend flag and battery bucket. Prints per-round accuracy and loss
with a progress bar, writes ``run.png`` and ``metrics.jsonl``, and stops every process it started (also on
Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol import RunConfig
from ._local import LocalSuperLink, write_flower_app

__all__ = ["make_partitions", "run_demo", "start_device", "write_device_config"]

MODEL_SPEC = json.dumps({"layers": [[67, 10, "none"]], "loss": "cross_entropy"})
"""A linear model: the small one the end-to-end tests train."""
DEMO_MODEL_SPEC = json.dumps({"layers": [[67, 64, "relu"], [64, 10, "none"]], "loss": "cross_entropy"})
"""The demo's model: one hidden layer, trained for a few epochs per round, closer to a real on-device round."""
DEMO_TRAINING = dict(model_spec=DEMO_MODEL_SPEC, lr=0.1, epochs=5, batch_size=16)
"""The demo's training settings (:class:`~flclient.protocol.RunConfig` fields)."""


def make_partitions(n_devices: int, out_dir: Path, *, seed: int = 0, alpha: float = 0.5) -> list[Path]:
    """Write one ``.npz`` per device: digits pixels (``x``), labels and raw context columns; non-IID by label."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet([alpha] * n_devices, size=10)  # per label: how it splits over devices
    owner = np.empty(len(y), dtype=np.int64)
    for label in range(10):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        cuts = (np.cumsum(shares[label])[:-1] * len(idx)).astype(int)
        for dev, part in enumerate(np.split(idx, cuts)):
            owner[part] = dev
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for dev in range(n_devices):
        idx = np.flatnonzero(owner == dev)
        if len(idx) < 20:  # every device gets at least a few examples
            idx = np.concatenate([idx, rng.choice(len(y), 20 - len(idx), replace=False)])
        n = len(idx)
        lat0, lon0 = rng.uniform(-60, 60), rng.uniform(-170, 170)
        lat = (lat0 + rng.normal(0, 0.05, n)).astype(np.float64)
        lat[rng.random(n) < 0.02] = 95.0  # a few bad GPS fixes: the module flags them, the device skips them
        path = out_dir / f"device{dev}.npz"
        np.savez(
            path,
            timestamp_ms=rng.integers(1_700_000_000_000, 1_702_600_000_000, n, dtype=np.uint64),
            location_lat=lat,
            location_lon=(lon0 + rng.normal(0, 0.05, n)).astype(np.float64),
            battery_level=rng.uniform(0.05, 1.0, n).astype(np.float32),
            x=x[idx],
            label=y[idx],
        )
        paths.append(path)
    return paths


def write_device_config(
    directory: Path,
    *,
    superlink_url: str,
    data: Path,
    modules: list[Path],
    heartbeat_s: float = 10.0,
    grace_s: float = 4.0,
) -> Path:
    """A ``device.toml`` for one demo device."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "device.toml"
    mods = ", ".join(json.dumps(str(m)) for m in modules)
    path.write_text(
        f'[superlink]\nurl = "{superlink_url}"\nheartbeat_interval_s = {heartbeat_s}\nmax_backoff_s = 2.0\n\n'
        f'[device]\nstate_dir = "state"\ndata = {json.dumps(str(data))}\nfeature_modules = [{mods}]\n'
        f"poll_interval_s = 0.2\nreply_grace_s = {grace_s}\n"
    )
    return path


def start_device(config: Path) -> subprocess.Popen[bytes]:
    """``flclient run --config CONFIG`` as a child process (log next to the config)."""
    log = (config.parent / "node.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "flclient", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_devices(procs: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM each device (graceful), SIGKILL those still running after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def build_feature_module(out_dir: Path) -> Path:
    """Build the reference crate ``device_context`` that featurec ships into ``out_dir`` (works from a wheel).

    The sources are copied to ``out_dir/crates`` first: cargo writes its build outputs beside the sources, and
    installed package data is no place for them."""
    from featurec import build_module, copy_reference_crates

    crates = copy_reference_crates(out_dir / "crates")
    return build_module(crates / "device_context", out_dir).path


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def plot_run(records: list[dict[str, Any]], path: Path) -> None:
    """Accuracy and loss per round as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from .._atomic import atomic_write_bytes

    rows = [r for r in records if r.get("event") in ("round", "evaluate") and r.get("eval_acc") is not None]
    versions = [r["version"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(versions, [r["eval_acc"] for r in rows], "o-", label="accuracy (held-out, federated)")
    ax.set_xlabel("global model version")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.plot(versions, [r["eval_loss"] for r in rows], "s--", color="tab:red", label="loss")
    ax2.set_ylabel("loss")
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    ax.set_title(f"flclient federation: {rows[0]['nodes'] if rows else 0} devices")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_demo(
    *, devices: int = 8, rounds: int = 3, out_dir: str | Path = "out/demo", seed: int = 0, module: Path | None = None
) -> int:
    """Run the local federation and print its progress; returns the exit status."""
    if devices < 1 or rounds < 1:
        raise ValueError("need at least one device and one round")
    out = Path(out_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t_start = time.monotonic()
    module = module or build_feature_module(out / "modules")
    from ..features import FeatureModule

    with FeatureModule.load(module) as fm:
        pin, sha = f"{fm.manifest.name}@{fm.manifest.version}", fm.sha256
    data = make_partitions(devices, out / "data", seed=seed)
    print(f"demo: {devices} devices, {rounds} rounds, feature module {pin} ({sha[:12]}…), non-IID digits partitions")
    link = LocalSuperLink(out / "flwr")
    procs: list[subprocess.Popen[bytes]] = []
    metrics_path = out / "metrics.jsonl"
    records: list[dict[str, Any]] = []
    try:
        link.start()
        print(f"demo: SuperLink up at {link.url}")
        for i, path in enumerate(data):
            cfg = write_device_config(out / f"device{i}", superlink_url=link.url, data=path, modules=[module])
            procs.append(start_device(cfg))
        run_config = RunConfig(
            rounds=rounds,
            min_nodes=devices,
            node_wait_s=60,
            round_timeout_s=120,
            feature_module=pin,
            feature_module_sha256=sha,
            feature_scale=(23.0, 1.0, 10.0),
            **DEMO_TRAINING,  # type: ignore[arg-type]
            seed=seed,
            init_seed=seed,
            metrics_path=metrics_path,
            history_dir=out / "models",
        )
        app_dir = write_flower_app(out / "app", run_config.to_run_config())
        run_id = link.submit(app_dir)
        print(f"demo: run {run_id} submitted")
        seen = 0
        deadline = time.monotonic() + 120 + 60 * rounds
        while time.monotonic() < deadline:
            if metrics_path.exists():
                lines = metrics_path.read_text().splitlines()
                for line in lines[seen:]:
                    rec = json.loads(line)
                    records.append(rec)
                    _print_record(rec, rounds)
                seen = len(lines)
                if records and records[-1].get("event") == "done":
                    break
            if (
                int(time.monotonic() * 5) % 10 == 0
                and link.status(run_id).startswith("finished")
                and not (records and records[-1].get("event") == "done")
            ):
                time.sleep(0.5)
                if not metrics_path.exists() or '"done"' not in metrics_path.read_text():
                    raise RuntimeError("the ServerApp ended early:\n" + link.logs(run_id)[-3000:])
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a device process exited; see its node.log under " + str(out))
            time.sleep(0.2)
        else:
            raise TimeoutError("the run did not finish in time")
        plot_run(records, out / "run.png")
        final: dict[str, Any] = next((r for r in reversed(records) if r.get("event") == "evaluate"), {})
        first = next((r for r in records if r.get("event") == "round"), {})
        print(
            f"demo: accuracy {first.get('eval_acc', 0):.3f} -> {final.get('eval_acc', 0):.3f} "
            f"in {time.monotonic() - t_start:.1f} s; plot {out / 'run.png'}"
        )
        return 0
    except KeyboardInterrupt:
        print("\ndemo: interrupted, shutting down", file=sys.stderr)
        return 130
    finally:
        stop_devices(procs)
        with contextlib.suppress(Exception):
            link.stop()


def _print_record(rec: dict[str, Any], rounds: int) -> None:
    event = rec.get("event")
    if event == "start":
        print(f"demo: ServerApp started with {rec['nodes']} nodes")
    elif event in ("round", "evaluate"):
        acc, loss = rec.get("eval_acc"), rec.get("eval_loss")
        label = f"round {rec['round']}" if event == "round" else "final  "
        done = rec["round"] if event == "round" else rounds
        extra = f" failures={rec['failures']}" if rec.get("failures") else ""
        print(
            f"{_bar(done, rounds)} {label}: model v{rec['version']} accuracy {acc if acc is None else f'{acc:.3f}'} "
            f"loss {loss if loss is None else f'{loss:.3f}'}  replies {rec['replies']}/{rec['nodes']}  "
            f"{rec['round_s']:.1f} s{extra}",
            flush=True,
        )
