"""The device's persisted state machine: restarts continue or drop out, never two inputs, never both shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flclient.secagg import (
    SecAggDevice,
    SecAggIncompatible,
    SecAggProtocolError,
    SecAggStateError,
    SecAggTaskHandler,
    SqliteSecAggStore,
    check_update_stages,
    choose_degree,
    neighbour_graph,
    require_linear_codec,
)
from flclient.secagg import _messages as m
from flclient.update import ClipConfig, ClipStage, EncodeStage, RotatedCodec

from ._sim import Federation


def _advance_to_collect(fed: Federation) -> dict[int, bytes]:
    c = fed.coordinator
    rep = {i: fed.devices[i].handle(r) for i, r in c.setup().items()}
    rep = {i: fed.devices[i].handle(r) for i, r in c.share_keys(rep).items()}
    return c.collect(rep)


def _restart(fed: Federation, i: int, path: Path) -> SecAggDevice:
    old = fed.devices[i]
    store = SqliteSecAggStore(path)
    fed.devices[i] = SecAggDevice(
        node_id=old.node_id, identity=old.identity, store=store, rng=np.random.default_rng(99)
    )
    return fed.devices[i]


def test_restart_resends_the_identical_masked_input_and_refuses_a_different_request(tmp_path: Path) -> None:
    fed = Federation(8, 64, seed=21, dropout=0.2)
    db = tmp_path / "secagg.sqlite"
    fed.devices[0] = SecAggDevice(
        node_id=1000, identity=Ed25519PrivateKey.generate(), store=SqliteSecAggStore(db), rng=np.random.default_rng(0)
    )
    collect = _advance_to_collect(fed)
    first = fed.devices[0].handle(collect[0], update=lambda: fed.inputs[0])
    device = _restart(fed, 0, db)  # a new process: fresh rng, same database
    assert device.handle(collect[0], update=lambda: fed.inputs[0] * 2) == first
    req = m.decode_request(collect[0])
    other = m.Request(req.stage, req.round_id, m.encode_relayed_shares({})).to_bytes()
    with pytest.raises(SecAggProtocolError, match="already answered"):
        device.handle(other, update=lambda: fed.inputs[0])
    # the round still completes with the one input it sent
    rep = {i: fed.devices[i].handle(r, update=lambda i=i: fed.inputs[i]) for i, r in collect.items() if i}
    rep[0] = first
    unmask = fed.coordinator.unmask(rep)
    result = fed.coordinator.finish({i: fed.devices[i].handle(r) for i, r in unmask.items()})
    assert len(result.survivors) == 8


def test_unmask_is_answered_once_and_secrets_are_erased(tmp_path: Path) -> None:
    fed = Federation(8, 64, seed=22, dropout=0.2)
    db = tmp_path / "s.sqlite"
    fed.devices[1] = SecAggDevice(
        node_id=1001, identity=Ed25519PrivateKey.generate(), store=SqliteSecAggStore(db), rng=np.random.default_rng(1)
    )
    collect = _advance_to_collect(fed)
    rep = {i: fed.devices[i].handle(r, update=lambda i=i: fed.inputs[i]) for i, r in collect.items()}
    unmask = fed.coordinator.unmask(rep)
    answer = fed.devices[1].handle(unmask[1])
    req = m.decode_request(unmask[1])
    ask = m.UnmaskRequest.from_bytes(req.body)
    # a second unmask request claiming everyone dropped would ask for mask-key shares of survivors: refused
    flipped = m.UnmaskRequest((), ask.survivors + ask.dropped)
    with pytest.raises(SecAggProtocolError, match="already answered"):
        fed.devices[1].handle(m.Request(req.stage, req.round_id, flipped.to_bytes()).to_bytes())
    assert fed.devices[1].handle(unmask[1]) == answer
    record = SqliteSecAggStore(db).load(fed.params.round_id)
    assert record is not None and record.stage == "done"
    assert not {"c_sk", "s_sk", "seed", "received"} & set(record.state)


def test_lost_state_drops_out_cleanly(tmp_path: Path) -> None:
    fed = Federation(8, 64, seed=23, dropout=0.2)
    collect = _advance_to_collect(fed)
    device = _restart(fed, 2, tmp_path / "empty.sqlite")
    with pytest.raises(SecAggStateError, match="dropping out"):
        device.handle(collect[2], update=lambda: fed.inputs[2])


def test_a_refused_stage_drops_the_round_and_erases_secrets() -> None:
    fed = Federation(8, 64, seed=24, dropout=0.2)
    collect = _advance_to_collect(fed)
    with pytest.raises(SecAggStateError, match="coordinates"):
        fed.devices[3].handle(collect[3], update=lambda: np.zeros(5))
    record = fed.devices[3].store.load(fed.params.round_id)
    assert record is not None and record.stage == "dropped" and "s_sk" not in record.state
    with pytest.raises(SecAggStateError, match="dropped out"):
        fed.devices[3].handle(collect[3], update=lambda: fed.inputs[3])


def test_out_of_order_and_replayed_setup_are_refused() -> None:
    fed = Federation(6, 16, seed=25, dropout=0.2)
    setup = fed.coordinator.setup()
    fed.devices[0].handle(setup[0])
    assert fed.devices[0].handle(setup[0]) == fed.devices[0].handle(setup[0])  # idempotent resend
    collect = m.Request(m.STAGE_COLLECT, fed.params.round_id, m.encode_relayed_shares({})).to_bytes()
    with pytest.raises(SecAggProtocolError, match="out of order"):
        fed.devices[0].handle(collect, update=lambda: fed.inputs[0])


def test_choose_degree_and_graph() -> None:
    k, t = choose_degree(1000, dropout=0.1)
    assert k < 999 and k % 2 == 0 and k // 2 < t <= k
    assert choose_degree(50, dropout=0.3) == (49, 25)
    graph = neighbour_graph(101, 20, b"s" * 32)
    assert all(len(g) == 20 and i not in g for i, g in enumerate(graph))
    assert all(i in graph[j] for i, g in enumerate(graph) for j in g)
    assert graph == neighbour_graph(101, 20, b"s" * 32) != neighbour_graph(101, 20, b"t" * 32)


def test_non_linear_codecs_are_refused() -> None:
    with pytest.raises(SecAggIncompatible, match="not linear"):
        require_linear_codec(RotatedCodec(bits=2))
    stages = [
        ClipStage(config=ClipConfig(max_norm=1.0)),
        EncodeStage(codec=RotatedCodec(bits=2), rng=np.random.default_rng()),
    ]
    with pytest.raises(SecAggIncompatible):
        check_update_stages(stages)
    check_update_stages(stages[:1])


def test_task_handler_masks_the_clipped_delta_and_sends_no_weights() -> None:
    from flclient._concerns import NodeBinding, RoundContext, SecAggConcern
    from flclient.protocol import DenseLayerSpec, DenseModelSpec, ReplyMetrics, SecAggReply, SecAggStage, TrainReply
    from flclient.protocol import TrainTask as Train

    fed = Federation(6, 12, seed=26, dropout=0.2)
    old = {"b": np.zeros(2, np.float32), "w": np.zeros((2, 5), np.float32)}
    model = DenseModelSpec(layers=(DenseLayerSpec(in_features=2, out_features=5),))
    collect = _advance_to_collect(fed)
    replies = {}
    for i, req in collect.items():
        handler = SecAggTaskHandler(device=fed.devices[i], clip_norm=1.0)
        concern = SecAggConcern(lambda _nid, h=handler: h, NodeBinding(node_id=i))
        stage = SecAggStage(request=req, task=Train(model=model, arrays=old))

        def train(task: object, _ctx: object, i: int = i) -> TrainReply:
            assert isinstance(task, Train)  # the plain train task, not the SecAgg stage
            new = {"b": np.full(2, 0.1 * i, np.float32), "w": np.full((2, 5), 3.0, np.float32)}
            return TrainReply(metrics=ReplyMetrics(num_examples=5), arrays=new)

        out = concern(stage, RoundContext(), train)  # type: ignore[arg-type]
        assert isinstance(out, SecAggReply) and set(out.to_records()) == {"secagg", "metrics"}
        replies[i] = out.reply
    unmask = fed.coordinator.unmask(replies)
    result = fed.coordinator.finish({i: fed.devices[i].handle(r) for i, r in unmask.items()})
    mean = result.mean()
    assert mean.shape == (12,)
    assert abs(float(np.linalg.norm(mean)) - 1.0) < 0.05  # every delta was clipped to norm 1
