"""FL operator: check a run config the way the ServerApp will, then write the Flower app that runs it.

Run it with ``python docs/examples/operator.py DIR``; the tests run it too. ``flwr run DIR`` (with a SuperLink
running, see the demo) would then start the federation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flclient.server import RunConfig, write_flower_app

RUN_CONFIG: dict[str, object] = {
    "num-server-rounds": 5,
    "min-nodes": 4,
    "target": 8,
    "over-selection": 0.25,  # ask 10 nodes for 8 updates
    "round-deadline-s": 90.0,
    "lr": 0.05,
    "epochs": 2,
}


def main(workdir: Path) -> RunConfig:
    """Validate ``RUN_CONFIG`` (a typo or a bad value raises RunConfigError) and write the app into ``workdir``."""
    config = RunConfig.from_run_config(RUN_CONFIG)
    write_flower_app(workdir / "app", RUN_CONFIG)
    return config


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
