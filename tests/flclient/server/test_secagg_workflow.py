"""The Flower-side SecAgg round over an in-process Grid double that runs flclient devices (no SuperLink)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

flwr_app = pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from flclient.secagg import InMemorySecAggStore, SecAggDevice, SecAggTaskHandler, flatten_update  # noqa: E402
from flclient.server._secagg import SecAggRoundConfig, secagg_train_round  # noqa: E402


class DeviceGrid:
    """Delivers each message to an flclient device's SecAgg handler and returns Flower replies."""

    def __init__(self, n: int, offline_at_collect: set[int]) -> None:
        self.handlers = {
            nid: SecAggTaskHandler(
                device=SecAggDevice(
                    node_id=nid,
                    identity=Ed25519PrivateKey.generate(),
                    store=InMemorySecAggStore(),
                    rng=np.random.default_rng(nid),
                ),
                clip_norm=1.0,
            )
            for nid in range(10, 10 + n)
        }
        self.offline = offline_at_collect
        self.received: list[Any] = []

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        out = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            request = msg.content.config_records["secagg"]["request"]
            update = None
            if "arrays" in msg.content.array_records:
                if nid in self.offline:
                    continue
                old = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
                names = sorted(old)

                def update(old: dict[str, Any] = old, names: list[str] = names, nid: int = nid) -> Any:
                    new = {k: v + 0.01 * (nid % 3) for k, v in old.items()}  # what local training returned
                    return flatten_update(new, names)[0] - flatten_update(old, names)[0]

            reply = self.handlers[nid].answer(request, update=update)
            rd = flwr_app.RecordDict({"secagg": flwr_app.ConfigRecord({"reply": reply})})
            self.received.append(rd)
            out.append(flwr_app.Message(rd, reply_to=msg))
        return out


@pytest.mark.usefixtures("flower_run")
def test_secagg_round_through_flower_records() -> None:
    grid = DeviceGrid(10, offline_at_collect={12, 15})
    params = {"w": np.zeros((3, 4), np.float32), "b": np.ones(4, np.float32)}
    outcome = secagg_train_round(
        grid,  # type: ignore[arg-type]
        list(grid.handlers),
        params,
        flwr_app.ConfigRecord({"lr": 0.1}),
        SecAggRoundConfig(bits=24, clip=1.0, dropout=0.3),
        round_tag="run1/round1",
    )
    survivors = [nid for nid in grid.handlers if nid not in {12, 15}]
    assert outcome.result.survivors == tuple(survivors)
    expected = np.mean([0.01 * (nid % 3) for nid in survivors])
    np.testing.assert_allclose(outcome.parameters["w"], expected, atol=1e-4)
    np.testing.assert_allclose(outcome.parameters["b"], 1 + expected, atol=1e-4)
