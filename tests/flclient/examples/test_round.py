"""A Client whose device.toml has a [data] table takes part in rounds (the in-memory SuperLink behind the
Transport protocol, a real feature module, the numpy backend) while a sensor thread appends to its store: each
round trains on a snapshot of at most max_examples, and the next round starts with the examples not used yet."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from flclient import Client, DeviceConfig, ExampleStore
from flclient.fleet import ArrayRecord, ConfigRecord, MemorySuperLink, MetricRecord, RecordDict

from ..features import wat

SPEC = json.dumps({"layers": [[1, 2, "none"]], "loss": "cross_entropy"})
PARAMS = {"dense0_weight": np.array([[0.1, -0.1]], np.float32), "dense0_bias": np.zeros(2, np.float32)}


def _task(sha: str, server_round: int) -> RecordDict:
    config = {
        "feature-module": "doubler@1.0.0",
        "feature-module-sha256": sha,
        "model-spec": SPEC,
        "server-round": server_round,
        "model-version": server_round,
        "epochs": 1,
        "eval-fraction": 0.0,
    }
    return {"config": ConfigRecord(config), "arrays": ArrayRecord(dict(PARAMS))}  # type: ignore[arg-type]


def _samples(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x = rng.uniform(-1.0, 1.0, n)
    return {"x": x}, (x > 0).astype(np.int64)


def test_a_client_with_a_data_table_trains_on_store_snapshots_while_a_sensor_appends(tmp_path: Path) -> None:
    module = tmp_path / "doubler-1.0.0.wasm"
    module.write_bytes(wat.doubler())
    sha = hashlib.sha256(module.read_bytes()).hexdigest()
    toml = tmp_path / "device.toml"
    toml.write_text(
        '[superlink]\nurl = "http://127.0.0.1:9093"\n'
        f'[device]\nstate_dir = "state"\nfeature_modules = ["{module.name}"]\n'
        '[data]\ncollection = "sensor"\nmax_examples = 64\nmax_rows = 100000\n'
    )
    link = MemorySuperLink()
    rng = np.random.default_rng(0)
    with Client(DeviceConfig.from_toml(toml), transport=link, log=lambda record: None) as client:
        store = client.examples
        assert isinstance(store, ExampleStore) and client.executor.data is store
        store.append("sensor", *_samples(rng, 200))
        node_id = client.node.connect()
        stop = threading.Event()
        appended = [0]

        def sensor() -> None:  # the daemon's own thread, appending while the rounds run
            local = np.random.default_rng(1)
            while not stop.is_set() and appended[0] < 5000:
                store.append("sensor", *_samples(local, 10))
                appended[0] += 10

        thread = threading.Thread(target=sensor)
        thread.start()
        try:
            sizes = []
            for rnd in (1, 2):
                ins = link.queue(node_id, _task(sha, rnd), message_type="train")
                assert client.run_once() == 1
                content = link.reply_content(ins.message_id)
                assert content is not None and isinstance(content["arrays"], ArrayRecord), content
                metrics = content["metrics"]
                assert isinstance(metrics, MetricRecord)
                sizes.append(metrics.values["num-examples"])
        finally:
            stop.set()
            thread.join()
        assert sizes == [64, 64]  # each round: one snapshot of at most max_examples (all valid rows)
        (stats,) = store.stats()
        assert stats.rows == 200 + appended[0]
        # Both uploaded rounds marked what they read, and the second read none of the first's: 128 used examples.
        assert stats.unused == stats.rows - 128
    assert store.closed  # the client closes the store it built
