"""The Fleet client against a MockTransport (and, for pushes, MemorySuperLink): signing, retries with injected sleep,
honest errors, pushes that survive lost answers."""

from __future__ import annotations

import base64
import datetime
import random
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flclient import FleetAuthError, FleetProtocolError, FleetRunNotRunning, FleetUnavailable, ObjectIntegrityError
from flclient.fleet import (
    FleetClient,
    MemorySuperLink,
    MockTransport,
    NodeKey,
    RetryPolicy,
    TransportError,
    TransportResponse,
)
from flclient.fleet._objects import EncodedMessage
from flclient.fleet._proto import flclient_fleet_pb2 as pb

PB = {"content-type": "application/protobuf"}
NOW = 1_800_000_000.0


def _client(handler: object, sleeps: list[float] | None = None, **kw: object) -> FleetClient:
    sleeps = sleeps if sleeps is not None else []
    return FleetClient(
        MockTransport(handler),  # type: ignore[arg-type]
        NodeKey.generate(),
        clock=lambda: NOW,
        sleep=sleeps.append,
        rng=random.Random(0),
        **kw,  # type: ignore[arg-type]
    )


def test_requests_are_signed_as_superlink_checks() -> None:
    seen: dict[str, str] = {}

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        seen.update(headers, path=path)
        assert pb.RegisterNodeFleetRequest.FromString(content).public_key == base64.b64decode(
            headers["flwr-public-key"]
        )
        return TransportResponse(200, pb.RegisterNodeFleetResponse(node_id=42).SerializeToString(), PB)

    assert _client(handler).register() == 42
    assert seen["path"] == "/v1/fleet/register-node"
    assert seen["Content-Type"] == "application/protobuf"
    ts = seen["flwr-timestamp"]
    assert datetime.datetime.fromisoformat(ts).timestamp() == NOW
    key = serialization.load_pem_public_key(base64.b64decode(seen["flwr-public-key"]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(base64.b64decode(seen["flwr-signature"]), ts.encode(), ec.ECDSA(hashes.SHA256()))


def test_transient_failures_are_retried_with_capped_jittered_backoff() -> None:
    answers: list[object] = [
        TransportError("reset"),
        TransportResponse(503),
        TransportResponse(429),
        TransportResponse(502),
    ]

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        a = (
            answers.pop(0)
            if answers
            else TransportResponse(200, pb.SendNodeHeartbeatResponse(success=True).SerializeToString(), PB)
        )
        if isinstance(a, Exception):
            raise a
        return a  # type: ignore[return-value]

    sleeps: list[float] = []
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=3, max_attempts=6)
    client = _client(handler, sleeps, retry=policy)
    assert client.heartbeat(1, 30) is True
    assert len(sleeps) == 4 and all(0 <= s <= min(3, 2**n) for n, s in enumerate(sleeps))
    assert client.traffic.retries == 4


def test_retries_run_out_with_fleet_unavailable() -> None:
    client = _client(lambda *a: TransportResponse(500, b'{"detail":"x"}'), retry=RetryPolicy(max_attempts=3))
    with pytest.raises(FleetUnavailable, match="gave up after 3 attempts; last: HTTP 500"):
        client.pull_messages(1)


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (TransportResponse(401, b'{"detail":"Invalid SuperNode authentication"}'), FleetAuthError, "401"),
        (TransportResponse(403, b'{"code":2007}'), FleetRunNotRunning, "not running"),
        (TransportResponse(415), FleetProtocolError, "HTTP 415"),
        (TransportResponse(200, b"{}", {"content-type": "application/json"}), FleetProtocolError, "content type"),
        (TransportResponse(200, b"\x0a\xff\xff", PB), FleetProtocolError, "not a valid"),
    ],
)
def test_non_transient_answers_raise_at_once(response: TransportResponse, error: type[Exception], match: str) -> None:
    sleeps: list[float] = []
    with pytest.raises(error, match=match):
        _client(lambda *a: response, sleeps).pull_messages(1)
    assert sleeps == []


def test_pulled_object_is_checked_against_its_id_and_size() -> None:
    good = b"ArrayChunk  3\x00abc"
    from flclient.fleet import object_id

    def answer(content: bytes) -> object:
        return lambda *a: TransportResponse(
            200,
            pb.PullObjectResponse(object_found=True, object_available=True, object_content=content).SerializeToString(),
            PB,
        )

    assert _client(answer(good)).pull_object(1, 2, object_id(good)) == good
    with pytest.raises(ObjectIntegrityError, match="does not hash"):
        _client(answer(good + b"x")).pull_object(1, 2, object_id(good))
    from flclient.fleet import DecodeLimits

    with pytest.raises(ObjectIntegrityError, match="over 10"):
        _client(answer(good), limits=DecodeLimits(max_object_bytes=10)).pull_object(1, 2, object_id(good))


def test_object_not_yet_available_is_awaited() -> None:
    good = b"ArrayChunk  1\x00a"
    from flclient.fleet import object_id

    answers = [pb.PullObjectResponse(object_found=True, object_available=False)] * 2 + [
        pb.PullObjectResponse(object_found=True, object_available=True, object_content=good)
    ]
    sleeps: list[float] = []
    client = _client(lambda *a: TransportResponse(200, answers.pop(0).SerializeToString(), PB), sleeps)
    assert client.pull_object(1, 2, object_id(good)) == good
    assert len(sleeps) == 2 and sleeps[0] <= 0.02 < sleeps[1] * 4  # polled soon, then less often


def test_object_that_never_becomes_available_gives_up_after_the_timeout() -> None:
    sleeps: list[float] = []
    never = pb.PullObjectResponse(object_found=True, object_available=False).SerializeToString()
    client = _client(lambda *a: TransportResponse(200, never, PB), sleeps, retry=RetryPolicy(timeout_s=5))
    with pytest.raises(FleetUnavailable, match="did not become available"):
        client.pull_object(1, 2, "ab" * 32)
    assert 5 <= sum(sleeps) < 5 + 20 and len(sleeps) < 20


def test_pull_objects_fetches_the_missing_objects_and_checks_each() -> None:
    from flclient.fleet import PulledMessage

    enc = _reply()
    served: list[str] = []
    corrupt: set[str] = set()

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        oid = pb.PullObjectRequest.FromString(content).object_id
        served.append(oid)
        body = enc.objects[oid] + (b"x" if oid in corrupt else b"")
        answer = pb.PullObjectResponse(object_found=True, object_available=True, object_content=body)
        return TransportResponse(200, answer.SerializeToString(), PB)

    client = _client(handler)
    message = PulledMessage(enc.message.metadata, enc.tree)
    first = next(iter(enc.objects))
    assert client.pull_objects(1, message, have={first: enc.objects[first]}) == enc.objects
    assert sorted(served) == sorted(set(enc.objects) - {first})  # each missing object once, none it had
    corrupt.add(sorted(enc.objects)[1])
    with pytest.raises(ObjectIntegrityError, match="does not hash"):
        client.pull_objects(1, message)


def _reply() -> EncodedMessage:
    import numpy as np

    from flclient.fleet import ArrayRecord, encode_message

    return encode_message(
        pb.Metadata(run_id=1, message_type="train"), {"a": ArrayRecord({"x": np.ones(2), "y": np.zeros(3)})}
    )


def _pushing_node(link: MemorySuperLink) -> tuple[FleetClient, EncodedMessage]:
    """A node registered and active at ``link`` with a reply ready to push to an instruction it pulled."""
    import numpy as np

    from flclient.fleet import ArrayRecord, encode_message

    client = FleetClient(link, NodeKey.generate(), clock=lambda: NOW, sleep=lambda s: None, rng=random.Random(0))
    client.ensure_registered()
    node_id = client.activate(30)
    ins = link.queue(node_id, {})
    assert [m.message_id for m in client.pull_messages(node_id)] == [ins.message_id]
    meta = pb.Metadata(
        run_id=1,
        src_node_id=node_id,
        dst_node_id=1,
        reply_to_message_id=ins.message_id,
        message_type="train",
        created_at=NOW,
        ttl=60,
    )
    return client, encode_message(meta, {"a": ArrayRecord({"x": np.ones(2), "y": np.zeros(3)})})


@pytest.mark.parametrize(
    "lose",
    [
        set(),
        {("push-object", 1)},  # an object stored, its answer lost: the retry is told "not stored"
        {("push-object", 1), ("push-object", 3)},
        {("push-messages", 1)},  # the announcement took effect, its answer lost: the repeat opens a new session
        {("push-messages", 1), ("push-object", 2)},
        {("push-object", 7)},  # the last object's answer lost: the reply is complete, the retry is "not stored"
    ],
)
def test_push_survives_lost_answers_and_stores_every_object(lose: set[tuple[str, int]]) -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, enc = _pushing_node(link)
    assert len(enc.objects) == 7
    for call, nth in lose:
        link.lose_answer(call, nth=nth)
    client.push_message(enc.message.metadata.src_node_id, enc)
    assert {oid: link.objects[oid] for oid in enc.objects} == enc.objects
    assert link.pending_objects() == set()  # nothing left pending anywhere
    assert list(link.delivered()) == [enc.message.metadata.reply_to_message_id] and link.refused == []


def test_a_reply_pushed_again_after_it_was_stored_is_complete_and_pushes_nothing_new() -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    client, enc = _pushing_node(link)
    node_id = enc.message.metadata.src_node_id
    client.push_message(node_id, enc)
    stored = dict(link.objects)
    client.push_message(node_id, enc)  # a restart before the node recorded the push: announced again
    assert link.objects == stored and link.pending_objects() == set() and link.refused == []
    assert link.announced == [enc.message_id, enc.message_id]


def test_push_retries_an_object_not_stored_in_its_session_without_one() -> None:
    enc = _reply()
    sessions: list[str] = []

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        if path.endswith("push-messages"):
            return TransportResponse(
                200, pb.PushMessagesResponse(objects_to_push=list(enc.objects), session_id="s").SerializeToString(), PB
            )
        req = pb.PushObjectRequest.FromString(content)
        assert req.object_content == enc.objects[req.object_id]
        sessions.append(req.session_id)
        return TransportResponse(200, pb.PushObjectResponse(stored=req.session_id == "").SerializeToString(), PB)

    _client(handler).push_message(5, enc)
    assert sessions == ["s", ""] * len(enc.objects)


def test_http_412_means_registered_or_active_already_where_that_is_what_the_node_wants() -> None:
    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        return TransportResponse(412, b"already", {"content-type": "text/plain"})

    client = _client(handler)
    client.ensure_registered()  # the key is known to SuperLink: done
    with pytest.raises(FleetProtocolError, match="412"):
        client.register()
    assert client.activate(30, known_node_id=7) == 7  # still active from before: carry on with that id
    with pytest.raises(FleetProtocolError, match="412"):
        client.activate(30)  # no id known: a 412 cannot be resolved here


def test_other_client_errors_are_not_taken_for_412() -> None:
    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        return TransportResponse(409, b"", {})

    client = _client(handler)
    with pytest.raises(FleetProtocolError, match="409"):
        client.ensure_registered()
    with pytest.raises(FleetProtocolError, match="409"):
        client.activate(30, known_node_id=7)
