"""Gateway engineer: a device.toml with an example store, a Client built from it, a sensor appending to the store.

Run it with ``python docs/examples/gateway.py DIR`` (DIR: an empty working directory); the tests run it too. It
does not connect: ``Client.run(stop_event)`` would then take part in rounds of the SuperLink at ``superlink.url``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from flclient import Client, DeviceConfig

DEVICE_TOML = """\
[superlink]
url = "http://127.0.0.1:9093"

[device]
state_dir = "state"
device_class = "x86-ind-gateway"

[data]                      # the example store: state/examples.sqlite
collection = "vibration"
max_examples = 5000         # a task reads at most this many, least used first
max_age_s = 604800          # keep a week
max_rows = 100000
"""


def main(workdir: Path) -> dict[str, int]:
    """Write ``device.toml`` in ``workdir``, build a Client from it and append one block of samples."""
    path = workdir / "device.toml"
    path.write_text(DEVICE_TOML, encoding="utf-8")
    config = DeviceConfig.from_toml(path)
    rng = np.random.default_rng(0)
    with Client(config) as client:
        store = client.examples  # the ExampleStore of the [data] table
        assert store is not None
        # A sensor thread appends blocks: the feature module's input columns and a label per row (timestamps
        # default to now; retention drops what is older than max_age_s on each append).
        n = 1000
        store.append(
            "vibration",
            {"samples": rng.normal(size=(n, 256)).astype(np.float32), "sample_rate_hz": np.full(n, 3200.0, np.float32)},
            labels=rng.integers(0, 2, size=n),
        )
        return {s.name: s.rows for s in store.stats()}


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
