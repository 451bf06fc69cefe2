"""End-to-end fixtures: a real flower-superlink on loopback, real device processes (``flclient run``).

These tests need ``flwr`` (the ``[server]`` extra) and the Rust wasm toolchain; without them they fail loudly
rather than skip, because CI installs both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flclient.server import LocalSuperLink, write_flower_app
from flclient.server._demo import MODEL_SPEC, make_partitions, write_device_config

ROOT = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real Flower SuperLink and device processes on loopback")


@pytest.fixture(scope="session")
def feature_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    from featurec import build_module

    built = build_module(ROOT / "wasm" / "rust-features" / "device_context", tmp_path_factory.mktemp("modules"))
    return built.path, "device_context@1.0.0", built.sha256


@pytest.fixture
def superlink(tmp_path: Path) -> Iterator[LocalSuperLink]:
    try:
        import flwr  # noqa: F401
    except ImportError:
        pytest.fail("flwr is not installed: these tests need the [server] extra (pip install 'flclient[server]')")
    link = LocalSuperLink(tmp_path / "flwr", database=tmp_path / "flwr" / "state.db")
    link.start()
    yield link
    link.stop()


class Devices:
    """Device processes started by a test; all are stopped at teardown."""

    def __init__(self, tmp: Path, module: Path) -> None:
        self.tmp = tmp
        self.module = module
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.configs: dict[int, Path] = {}

    def configure(self, n: int, url: str | list[str]) -> None:
        data = make_partitions(n, self.tmp / "data", seed=1)
        for i in range(n):
            u = url if isinstance(url, str) else url[i]
            self.configs[i] = write_device_config(
                self.tmp / f"device{i}", superlink_url=u, data=data[i], modules=[self.module], grace_s=2.0
            )

    def add_tables(self, i: int, toml: str) -> None:
        """Append TOML tables (``[privacy]``, ``[tls]``...) to device ``i``'s ``device.toml`` before it starts."""
        with self.configs[i].open("a") as f:
            f.write("\n" + toml)

    def start(self, i: int) -> None:
        log = (self.configs[i].parent / "node.log").open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "flclient", "run", "--config", str(self.configs[i])],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    def kill9(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def alive(self, i: int) -> bool:
        return self.procs[i].poll() is None

    def telemetry(self, i: int) -> list[dict[str, Any]]:
        path = self.configs[i].parent / "state" / "telemetry.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log(self, i: int) -> str:
        return (self.configs[i].parent / "node.log").read_text()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def devices(tmp_path: Path, feature_module: tuple[Path, str, str]) -> Iterator[Devices]:
    d = Devices(tmp_path, feature_module[0])
    yield d
    d.stop_all()


def run_config(feature_module: tuple[Path, str, str], tmp: Path, **overrides: Any) -> dict[str, Any]:
    _, pin, sha = feature_module
    cfg: dict[str, Any] = {
        "num-server-rounds": 2,
        "min-nodes": 2,
        "node-wait-s": 30,
        "round-timeout-s": 60,
        "feature-module": pin,
        "feature-module-sha256": sha,
        "feature-scale": "23,1,10",
        "model-spec": MODEL_SPEC,
        "lr": 0.5,
        "epochs": 2,
        "metrics-path": str(tmp / "metrics.jsonl"),
        "history-dir": str(tmp / "models"),
    }
    cfg.update(overrides)
    return cfg


def submit_and_wait(
    link: LocalSuperLink, tmp: Path, cfg: dict[str, Any], *, timeout_s: float = 150
) -> list[dict[str, Any]]:
    """Run the ServerApp to the end; returns its per-round metrics records."""
    app = write_flower_app(tmp / f"app{time.monotonic_ns()}", cfg)
    run_id = link.submit(app)
    status = link.wait(run_id, timeout_s=timeout_s)
    path = Path(cfg["metrics-path"])
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert status == "finished:completed", f"run ended {status}; ServerApp log:\n{link.logs(run_id)[-3000:]}"
    assert records and records[-1]["event"] == "done", link.logs(run_id)[-3000:]
    return records
