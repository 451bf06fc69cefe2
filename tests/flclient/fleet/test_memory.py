"""MemorySuperLink answers the Fleet API as SuperLink does (flwr 1.41), so tests of devices built on it mean
something: authentication, 412s, one delivery per instruction, push sessions, one reply per instruction, faults."""

from __future__ import annotations

import random

import numpy as np
import pytest

from flclient import FleetAuthError, FleetProtocolError, FleetRunNotRunning, FleetUnavailable, ObjectIntegrityError
from flclient.fleet import (
    ArrayRecord,
    ConfigRecord,
    EncodedMessage,
    FleetClient,
    MemorySuperLink,
    MetricRecord,
    NodeKey,
    RetryPolicy,
    encode_message,
)
from flclient.fleet._proto import flclient_fleet_pb2 as pb

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _client(link: MemorySuperLink, clock: Clock | None = None, sleeps: list[float] | None = None) -> FleetClient:
    return FleetClient(
        link,
        NodeKey.generate(),
        retry=RetryPolicy(max_attempts=3),
        clock=clock or (lambda: NOW),
        sleep=(sleeps if sleeps is not None else []).append,
        rng=random.Random(0),
    )


def _online(link: MemorySuperLink, clock: Clock | None = None) -> tuple[FleetClient, int]:
    client = _client(link, clock)
    client.ensure_registered()
    return client, client.activate(30)


def _reply(ins: EncodedMessage, node_id: int, *, created_at: float = NOW, value: float = 1.0) -> EncodedMessage:
    meta = pb.Metadata(
        run_id=ins.message.metadata.run_id,
        src_node_id=node_id,
        dst_node_id=1,
        reply_to_message_id=ins.message_id,
        message_type="train",
        created_at=created_at,
        ttl=60,
    )
    return encode_message(meta, {"metrics": MetricRecord({"loss": value})})


def _announce(client: FleetClient, node_id: int, reply: EncodedMessage) -> pb.PushMessagesResponse:
    req = pb.PushMessagesRequest(
        node=pb.Node(node_id=node_id), messages_list=[reply.message], message_object_trees=[reply.tree]
    )
    return client._call("push-messages", req, pb.PushMessagesResponse)


def test_requests_must_be_signed_recently_by_the_key_that_owns_the_node() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    late = Clock()
    late.now -= 400  # a device clock 400 s behind: its signed timestamps are too old
    with pytest.raises(FleetAuthError, match="401"):
        _client(link, late).register()
    a, a_id = _online(link)
    b, b_id = _online(link)
    assert a_id != b_id
    with pytest.raises(FleetAuthError, match="401"):
        b.pull_messages(a_id)  # another node's id
    with pytest.raises(FleetAuthError, match="401"):
        _client(link).heartbeat(a_id, 30)  # a key SuperLink does not know
    good = a.key.auth_headers(NOW)
    forged = {**good, "flwr-signature": b.key.auth_headers(NOW)["flwr-signature"]}
    body = pb.PullMessagesRequest(node=pb.Node(node_id=a_id)).SerializeToString()
    assert link.post("/v1/fleet/pull-messages", body, good, 1).status == 200
    assert link.post("/v1/fleet/pull-messages", body, forged, 1).status == 401
    assert link.post("/v1/fleet/get-fab", body, good, 1).status == 404


def test_register_and_activate_answer_412_where_superlink_does() -> None:
    clock = Clock()
    link = MemorySuperLink(clock=clock)
    client = _client(link, clock)
    with pytest.raises(FleetProtocolError, match="412"):
        client.activate(30)  # no such key yet
    node_id = client.register()
    with pytest.raises(FleetProtocolError, match="412"):
        client.register()  # key in use
    client.ensure_registered()
    assert client.activate(30) == node_id and link.node_online(node_id)
    with pytest.raises(FleetProtocolError, match="412"):
        client.activate(30)  # online already
    assert client.activate(30, known_node_id=node_id) == node_id
    client.deactivate(node_id)
    assert not link.node_online(node_id)
    assert client.activate(30) == node_id
    clock.now += 61  # no heartbeat for more than twice the interval: offline
    assert not link.node_online(node_id)
    assert client.heartbeat(node_id, 30) and link.node_online(node_id)  # a heartbeat brings it back
    with pytest.raises(FleetProtocolError, match="400"):
        client.heartbeat(node_id, 5)  # below SuperLink's 10 s minimum
    link.forget_nodes()
    with pytest.raises(FleetAuthError):
        client.heartbeat(node_id, 30)


def test_pull_hands_out_one_instruction_per_call_each_once_and_only_to_its_node() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    _, other = _online(link)
    first = link.queue(node_id, {"config": ConfigRecord({"a": 1})})
    link.queue(other, {})
    expired = pb.Metadata(run_id=1, src_node_id=1, dst_node_id=node_id, created_at=NOW - 100, ttl=50)
    link.queue_message(encode_message(expired, {}))
    second = link.queue(node_id, {"config": ConfigRecord({"a": 2})})
    got = [client.pull_messages(node_id) for _ in range(3)]
    assert [[m.message_id for m in g] for g in got] == [[first.message_id], [second.message_id], []]


def test_pulled_objects_are_served_until_confirmed() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    ins = link.queue(node_id, {"arrays": ArrayRecord({"w": np.arange(4.0)})})
    (msg,) = client.pull_messages(node_id)
    assert client.pull_objects(node_id, msg) == ins.objects
    client.confirm(node_id, msg.metadata.run_id, msg.message_id)
    assert not set(ins.objects) & set(link.objects)
    with pytest.raises(ObjectIntegrityError, match="not known"):
        client.pull_objects(node_id, msg)


def test_a_finished_run_is_http_403() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    ins = link.queue(node_id, {}, run_id=7)
    (msg,) = client.pull_messages(node_id)
    link.finish_run(7)
    with pytest.raises(FleetRunNotRunning):
        client.pull_objects(node_id, msg)
    with pytest.raises(FleetRunNotRunning):
        client.push_message(node_id, _reply(ins, node_id))
    assert link.replies == {}


def test_one_reply_per_instruction_and_a_complete_reply_announced_again_asks_for_nothing() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    ins = link.queue(node_id, {})
    first = _reply(ins, node_id, value=1.0)
    client.push_message(node_id, first)
    assert _announce(client, node_id, first).objects_to_push == []  # stored whole already
    second = _reply(ins, node_id, created_at=NOW + 1, value=2.0)
    assert _announce(client, node_id, second).objects_to_push == []
    assert link.refused == [(second.message_id, "duplicate reply: the instruction has another reply already")]
    content = link.reply_content(ins.message_id)
    assert content is not None and content["metrics"] == MetricRecord({"loss": 1.0})
    assert link.reply_error(ins.message_id) is None


def test_a_reply_announced_before_its_objects_are_pushed_is_not_delivered_and_a_repeat_asks_again() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    ins = link.queue(node_id, {})
    reply = _reply(ins, node_id)
    asked = _announce(client, node_id, reply)
    assert sorted(asked.objects_to_push) == sorted(reply.objects) and link.delivered() == {}
    with pytest.raises(LookupError, match="no complete reply"):
        link.reply_content(ins.message_id)
    again = _announce(client, node_id, reply)
    assert sorted(again.objects_to_push) == sorted(reply.objects) and again.session_id != asked.session_id
    assert link.pending_objects() == set(reply.objects)  # one session waits for them, the first one is gone
    bad = pb.PushObjectRequest(
        node=pb.Node(node_id=node_id), run_id=1, object_id=asked.objects_to_push[0], object_content=b"x"
    )
    assert not client._call("push-object", bad, pb.PushObjectResponse).stored  # does not hash to its id


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"src_node_id": 999}, "src_node_id"),
        ({"reply_to_message_id": "ab" * 32}, "unknown instruction"),
        ({"ttl": 10_000_000.0}, "outlives"),
        ({"created_at": 1_000_000_000.0}, "created_at"),
        ({"message_type": ""}, "message_type"),
    ],
)
def test_replies_superlink_rejects_are_refused_silently(change: dict[str, object], why: str) -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, node_id = _online(link)
    ins = link.queue(node_id, {})
    reply = _reply(ins, node_id)
    meta = pb.Metadata()
    meta.CopyFrom(reply.message.metadata)
    for name, value in change.items():
        setattr(meta, name, value)
    bad = EncodedMessage(
        reply.message_id, pb.Message(metadata=meta, content=pb.RecordDict()), reply.tree, reply.objects
    )
    client.push_message(node_id, bad)
    assert link.replies == {} and len(link.refused) == 1 and why in link.refused[0][1]


def test_scheduled_faults_lose_answers_or_fail_requests() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    sleeps: list[float] = []
    client = _client(link, sleeps=sleeps)
    link.lose_answer("register-node")  # registered, answer lost: the retry is told "key in use"
    client.ensure_registered()
    assert link.requests == ["register-node", "register-node"] and len(sleeps) == 1
    link.fail("activate-node", status=503)
    link.fail("activate-node", nth=2)  # no answer at all
    node_id = client.activate(30)
    assert link.node_online(node_id) and link.calls["activate-node"] == 3 and len(sleeps) == 3
    for nth in range(1, 4):
        link.fail("send-node-heartbeat", nth=nth)
    with pytest.raises(FleetUnavailable, match="gave up after 3 attempts"):
        client.heartbeat(node_id, 30)
    with pytest.raises(ValueError, match="unknown Fleet call"):
        link.lose_answer("push-message")
    with pytest.raises(ValueError, match="from 1"):
        link.fail("push-messages", nth=0)
    link.close()
    link.close()
    with pytest.raises(RuntimeError, match="after close"):
        client.heartbeat(node_id, 30)
