"""The Fleet client against a MockTransport: signing, retries with injected sleep, honest errors."""

from __future__ import annotations

import base64
import datetime
import random
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flclient import FleetAuthError, FleetProtocolError, FleetRunNotRunning, FleetUnavailable, ObjectIntegrityError
from flclient.fleet import FleetClient, MockTransport, NodeKey, RetryPolicy, TransportError, TransportResponse
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
    assert len(sleeps) == 2


def test_push_repushes_an_object_superlink_did_not_store() -> None:
    import numpy as np

    from flclient.fleet import ArrayRecord, encode_message

    enc = encode_message(pb.Metadata(run_id=1, message_type="train"), {"a": ArrayRecord({"x": np.ones(2)})})
    stored_once: set[str] = set()
    calls: list[str] = []

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        calls.append(path.rsplit("/", 1)[1])
        if path.endswith("push-messages"):
            return TransportResponse(
                200, pb.PushMessagesResponse(objects_to_push=list(enc.objects), session_id="s").SerializeToString(), PB
            )
        req = pb.PushObjectRequest.FromString(content)
        assert req.session_id == "s" and req.object_content == enc.objects[req.object_id]
        first = req.object_id not in stored_once
        stored_once.add(req.object_id)
        return TransportResponse(200, pb.PushObjectResponse(stored=not first).SerializeToString(), PB)

    _client(handler).push_message(5, enc)
    assert calls.count("push-object") == 2 * len(enc.objects)
