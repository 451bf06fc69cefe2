"""A Fleet API client: Flower's SuperLink <-> SuperNode protocol as protobuf over HTTP (flwr 1.41 and 1.42).

Every call is ``POST /v1/fleet/<name>`` with ``application/protobuf`` bodies and three headers that SuperLink
checks even without node authentication: the node's public key, an ISO-8601 UTC timestamp and an ECDSA-SHA256
signature over that timestamp. Like a SuperNode, the client also names its Flower runtime
(``flwr-package-name`` / ``flwr-package-version`` / ``flwr-component-name``); the release it declares is
``flower_version`` (set it to the SuperLink's release: SuperLink compares it with its own major.minor).
Transient failures (no answer, 429, 5xx) are retried with capped exponential backoff and full jitter; the clock,
the sleep and the random generator are injected.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from .._errors import (
    FleetAuthError,
    FleetNodeNotRegistered,
    FleetProtocolError,
    FleetRunNotRunning,
    FleetUnavailable,
    ObjectIntegrityError,
)
from .._lifetime import Resource
from ._objects import DecodeLimits, EncodedMessage, iter_tree_ids, object_id
from ._proto import flclient_fleet_pb2 as pb
from ._transport import Transport, TransportError, TransportResponse

__all__ = [
    "FLEET_PROTOCOL_VERSION",
    "FLOWER_RELEASES",
    "FleetClient",
    "NodeKey",
    "PulledMessage",
    "RetryPolicy",
    "TrafficCounter",
]

FLOWER_RELEASES = ("1.41", "1.42")
"""The Flower minor releases whose SuperLink this client is tested against (CI runs the oldest and the newest)."""

FLEET_PROTOCOL_VERSION = "flwr-1.41.0"
"""The Flower release of the default test environment, and the one a device declares unless told otherwise."""

_DEFAULT_FLOWER_VERSION = FLEET_PROTOCOL_VERSION.removeprefix("flwr-")
# Flower's ApiErrorCode values that change what the device does (flwr/supercore/error/base.py)
_CODE_RUNTIME_VERSION_INCOMPATIBLE = 1001
_CODE_REGISTRATION_DISABLED = 2001  # --enable-supernode-auth: keys are registered by the operator only

_CONTENT_TYPE = "application/protobuf"
_R = TypeVar("_R", bound=ProtoMessage)


class NodeKey:
    """The node's ECDSA key (NIST P-384): it signs every request's timestamp and identifies the node."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._public_b64 = base64.b64encode(self.public_pem).decode("ascii")

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh key."""
        return cls(ec.generate_private_key(ec.SECP384R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> NodeKey:
        """Load a key written by :meth:`to_pem`."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the node key must be an elliptic-curve private key")
        return cls(key)

    def public_openssh(self) -> bytes:
        """The public key in OpenSSH format (``ecdsa-sha2-nistp384 AAAA...``), what ``flwr supernode register``
        reads to let this device in when SuperLink runs with ``--enable-supernode-auth``."""
        return self._key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (keep it in the device's private state)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def auth_headers(self, now: float) -> dict[str, str]:
        """The ``flwr-public-key`` / ``flwr-timestamp`` / ``flwr-signature`` headers for a request sent at ``now``."""
        ts = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
        sig = self._key.sign(ts.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        return {
            "flwr-public-key": self._public_b64,
            "flwr-timestamp": ts,
            "flwr-signature": base64.b64encode(sig).decode("ascii"),
        }


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter for transient failures.

    The n-th retry waits ``uniform(0, min(max_backoff_s, initial_backoff_s * multiplier**n))``; a call gives up
    after ``max_attempts`` tries with :class:`~flclient.FleetUnavailable`. ``timeout_s`` bounds each request
    and the wait for an object SuperLink announced but does not have yet, which is polled every
    ``availability_poll_s`` at first (doubling).
    """

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    multiplier: float = 2.0
    max_attempts: int = 6
    timeout_s: float = 30.0
    availability_poll_s: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"need 0 < initial_backoff_s <= max_backoff_s, got {self.initial_backoff_s}, {self.max_backoff_s}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if not 0 < self.availability_poll_s <= self.max_backoff_s:
            raise ValueError(f"availability_poll_s must be in (0, max_backoff_s], got {self.availability_poll_s}")

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The waits between attempts (one fewer than ``max_attempts``)."""
        for n in range(self.max_attempts - 1):
            yield rng.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**n))


@dataclass
class TrafficCounter:
    """Bytes sent and received (HTTP bodies), and retries made, since the last :meth:`take`."""

    bytes_up: int = 0
    bytes_down: int = 0
    retries: int = 0

    def take(self) -> TrafficCounter:
        """Return the counts so far and reset them."""
        out = TrafficCounter(self.bytes_up, self.bytes_down, self.retries)
        self.bytes_up = self.bytes_down = self.retries = 0
        return out


@dataclass(frozen=True)
class PulledMessage:
    """An instruction as ``pull-messages`` announces it: its metadata and the tree of objects to pull."""

    metadata: pb.Metadata
    tree: pb.ObjectTree
    error: pb.Error | None = None

    @property
    def message_id(self) -> str:
        """The instruction's id (its root object's id)."""
        return self.metadata.message_id


class _PreconditionFailed(FleetProtocolError):
    """HTTP 412: register-node for a key SuperLink knows (or, with node authentication, for any key),
    activate-node for a node that is active already or whose key SuperLink does not know.
    ``code`` is Flower's error code from the JSON body, when there is one."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FleetClient(Resource):
    """The Fleet API, one method per call; raises the :class:`~flclient.FleetError` family.

    The client owns its transport: ``close()`` (or leaving a ``with`` block) closes it, and a call after that
    raises :class:`~flclient.ResourceClosedError`.

    Example::

        with FleetClient(HttpxTransport("http://127.0.0.1:9093"), NodeKey.generate()) as client:
            client.ensure_registered()
            node_id = client.activate(heartbeat_interval_s=30)
            for msg in client.pull_messages(node_id):
                objects = client.pull_objects(node_id, msg)
    """

    transport: Transport
    key: NodeKey
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    traffic: TrafficCounter = field(default_factory=TrafficCounter)
    flower_version: str = _DEFAULT_FLOWER_VERSION
    operator_registers_keys: bool = field(default=False, init=False)
    """Set once SuperLink said it runs with node authentication (keys registered by its operator only)."""

    def __post_init__(self) -> None:
        problem = flower_version_problem(self.flower_version)
        if problem is not None:
            raise ValueError(problem)
        self._runtime_headers = {
            "flwr-package-name": "flwr",
            "flwr-package-version": self.flower_version,
            "flwr-component-name": "SuperNode",
        }

    # -- node lifecycle -------------------------------------------------------------------------------------
    def register(self) -> int:
        """Register the node's public key; returns its node id."""
        r = self._call(
            "register-node", pb.RegisterNodeFleetRequest(public_key=self.key.public_pem), pb.RegisterNodeFleetResponse
        )
        return int(r.node_id)

    def ensure_registered(self) -> None:
        """Register the node's public key; a key SuperLink knows already (HTTP 412: a restart, or an earlier
        answer that was lost) is what we want, not an error. A SuperLink with node authentication registers no
        key itself (HTTP 412, code 2001): :attr:`operator_registers_keys` is set and activation tells whether
        its operator registered this one."""
        try:
            self.register()
        except _PreconditionFailed as exc:
            if exc.code == _CODE_REGISTRATION_DISABLED:
                self.operator_registers_keys = True

    def activate(self, heartbeat_interval_s: float, *, known_node_id: int | None = None) -> int:
        """Mark the node online (heartbeat interval within SuperLink's [10, 1800] s); returns its node id.

        With ``known_node_id`` (the id an earlier activation returned), an HTTP 412, the node still active from
        before (a restart, a lost answer), returns that id instead of raising. Without one, an HTTP 412 from a
        SuperLink whose operator registers the keys (:attr:`operator_registers_keys`) means this key is not
        among them: :class:`~flclient.FleetNodeNotRegistered`.
        """
        req = pb.ActivateNodeRequest(public_key=self.key.public_pem, heartbeat_interval=heartbeat_interval_s)
        try:
            return int(self._call("activate-node", req, pb.ActivateNodeResponse).node_id)
        except _PreconditionFailed as exc:
            if known_node_id is not None:
                return known_node_id
            if self.operator_registers_keys:
                raise self.not_registered() from exc
            raise

    def not_registered(self) -> FleetNodeNotRegistered:
        """The error for a key that a SuperLink with node authentication does not know."""
        return FleetNodeNotRegistered(
            "this device is not registered with the SuperLink (it runs with --enable-supernode-auth): export the "
            "key with `flclient node-key export --config device.toml` and register it with `flwr supernode register`"
        )

    def heartbeat(self, node_id: int, heartbeat_interval_s: float) -> bool:
        """Tell SuperLink the node is alive; ``False`` means SuperLink no longer considers it active."""
        req = pb.SendNodeHeartbeatRequest(node=pb.Node(node_id=node_id), heartbeat_interval=heartbeat_interval_s)
        return bool(self._call("send-node-heartbeat", req, pb.SendNodeHeartbeatResponse).success)

    def deactivate(self, node_id: int) -> None:
        """Mark the node offline. Only after its last reply was collected (see the node loop)."""
        self._call("deactivate-node", pb.DeactivateNodeRequest(node_id=node_id), pb.DeactivateNodeResponse)

    # -- instructions ----------------------------------------------------------------------------------------
    def pull_messages(self, node_id: int) -> list[PulledMessage]:
        """Instructions waiting for this node (metadata and object trees; content is pulled separately)."""
        r = self._call("pull-messages", pb.PullMessagesRequest(node=pb.Node(node_id=node_id)), pb.PullMessagesResponse)
        if len(r.messages_list) != len(r.message_object_trees):
            raise FleetProtocolError(
                f"pull-messages returned {len(r.messages_list)} messages but {len(r.message_object_trees)} trees"
            )
        out = []
        for msg, tree in zip(r.messages_list, r.message_object_trees, strict=True):
            if tree.object_id != msg.metadata.message_id:
                raise FleetProtocolError("pull-messages: a message's object tree does not start at the message id")
            out.append(PulledMessage(msg.metadata, tree, msg.error if msg.HasField("error") else None))
        return out

    def pull_objects(
        self, node_id: int, message: PulledMessage, *, have: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]:
        """Pull every object of ``message``'s tree not in ``have``; each is checked against its id and size."""
        objects = dict(have or {})
        ids = [oid for oid in iter_tree_ids(message.tree) if oid not in objects]
        if len(ids) + len(objects) > self.limits.max_objects:
            raise ObjectIntegrityError(f"the message names {len(ids)} objects, over {self.limits.max_objects}")
        total = sum(len(c) for c in objects.values())
        for oid in ids:
            content = self.pull_object(node_id, message.metadata.run_id, oid)
            total += len(content)
            if total > self.limits.max_message_bytes:
                raise ObjectIntegrityError(f"the message exceeds {self.limits.max_message_bytes} bytes")
            objects[oid] = content
        return objects

    def pull_object(self, node_id: int, run_id: int, oid: str) -> bytes:
        """One object, waiting while SuperLink has registered but not yet received it.

        The ServerApp is usually pushing it right now, so the wait polls soon (``retry.availability_poll_s``,
        doubling, with jitter, capped at ``retry.max_backoff_s``) and gives up after ``retry.timeout_s`` of waiting.
        """
        waited, n = 0.0, 0
        while True:
            req = pb.PullObjectRequest(node=pb.Node(node_id=node_id), run_id=run_id, object_id=oid)
            r = self._call("pull-object", req, pb.PullObjectResponse)
            if not r.object_found:
                raise ObjectIntegrityError(f"object {oid[:12]} is not known to the SuperLink")
            if r.object_available:
                content = bytes(r.object_content)
                if len(content) > self.limits.max_object_bytes:
                    raise ObjectIntegrityError(
                        f"object {oid[:12]} is {len(content)} bytes, over {self.limits.max_object_bytes}"
                    )
                if object_id(content) != oid:
                    raise ObjectIntegrityError(f"object {oid[:12]}: content does not hash to its id")
                return content
            if waited >= self.retry.timeout_s:
                raise FleetUnavailable(f"object {oid[:12]} did not become available in {waited:.1f} s")
            delay = min(self.retry.max_backoff_s, self.retry.availability_poll_s * 2**n)
            delay *= 0.5 + 0.5 * self.rng.random()
            self.sleep(delay)
            waited, n = waited + delay, min(n + 1, 30)

    def confirm(self, node_id: int, run_id: int, message_id: str) -> None:
        """Tell SuperLink the instruction's objects were all received (it may then free them)."""
        req = pb.ConfirmMessageReceivedRequest(
            node=pb.Node(node_id=node_id), run_id=run_id, message_object_id=message_id
        )
        self._call("confirm-message-received", req, pb.ConfirmMessageReceivedResponse)

    # -- replies ---------------------------------------------------------------------------------------------
    def push_message(self, node_id: int, message: EncodedMessage, *, runtime_s: float | None = None) -> bool:
        """Push a reply: announce it, then push the objects SuperLink asks for.

        Returns ``False`` when SuperLink asked for no object and stored none: it refused the reply (its node was
        declared offline and the instruction answered "Node Unavailable", or it expired), or this repeats a reply
        it holds completely already. Only the caller knows whether it announced this reply before.

        Answers get lost after SuperLink acted on a request, so both steps are written to be repeated:

        - ``stored=False`` for an object means it is not pending in this push session, typically because an
          earlier attempt whose answer was lost stored it. It is tried once more without a session id (SuperLink
          then finds whichever session still waits for it) and otherwise taken as already stored; the remaining
          objects are still pushed.
        - A fresh reply always has objects to push (its ``Message`` object is unique), so an announcement that
          asks for none is a repeat whose first answer was lost, or SuperLink refusing a repeat of a reply it
          already has. Either way every object of the reply is pushed without a session id: those still pending
          in the first session are stored, the others are answered ``stored=False`` and skipped.
        """
        req = pb.PushMessagesRequest(
            node=pb.Node(node_id=node_id),
            messages_list=[message.message],
            message_object_trees=[message.tree],
            clientapp_runtime_list=[runtime_s] if runtime_s is not None else [],
        )
        r = self._call("push-messages", req, pb.PushMessagesResponse)
        run_id = message.message.metadata.run_id
        for oid in r.objects_to_push:
            if oid not in message.objects:
                raise FleetProtocolError(f"push-messages asked for object {oid[:12]} that is not in the reply")
        if r.objects_to_push:
            for oid in r.objects_to_push:
                if not self._push_object(node_id, run_id, oid, message.objects[oid], r.session_id):
                    self._push_object(node_id, run_id, oid, message.objects[oid], "")
            return True
        stored = False
        for oid in iter_tree_ids(message.tree):
            if oid in message.objects:
                stored = self._push_object(node_id, run_id, oid, message.objects[oid], "") or stored
        return stored

    def _push_object(self, node_id: int, run_id: int, oid: str, content: bytes, session_id: str) -> bool:
        pushed = pb.PushObjectRequest(
            node=pb.Node(node_id=node_id),
            run_id=run_id,
            object_id=oid,
            object_content=content,
            session_id=session_id,
        )
        return bool(self._call("push-object", pushed, pb.PushObjectResponse).stored)

    # -- lifetime ------------------------------------------------------------------------------------------------
    def _release(self) -> None:
        self.transport.close()

    # -- the one place that talks HTTP ---------------------------------------------------------------------
    def _call(self, name: str, request: ProtoMessage, response_type: type[_R]) -> _R:
        self._check_open()
        body = request.SerializeToString()
        delays = self.retry.delays(self.rng)
        while True:
            headers = {
                "Content-Type": _CONTENT_TYPE,
                "Accept": _CONTENT_TYPE,
                **self._runtime_headers,
                **self.key.auth_headers(self.clock()),
            }
            self.traffic.bytes_up += len(body)
            failure: str
            try:
                resp = self.transport.post(f"/v1/fleet/{name}", body, headers, self.retry.timeout_s)
            except TransportError as exc:
                failure = str(exc)
            else:
                self.traffic.bytes_down += len(resp.content)
                if resp.status == 200:
                    return _parse(name, resp, response_type)
                if resp.status == 401:
                    raise FleetAuthError(f"{name}: SuperLink refused the node's credentials (401{_detail(resp)})")
                if resp.status == 403:
                    raise FleetRunNotRunning(f"{name}: the run is not running (403{_detail(resp)})")
                code = _error_code(resp)
                if code == _CODE_RUNTIME_VERSION_INCOMPATIBLE:
                    raise FleetProtocolError(
                        f"{name}: the SuperLink refused this device's Flower release {self.flower_version} "
                        f"(tested: {FLOWER_RELEASES[0]}-{FLOWER_RELEASES[-1]}){_detail(resp)}"
                    )
                if resp.status == 412:
                    raise _PreconditionFailed(f"{name}: unexpected HTTP {resp.status}{_detail(resp)}", code)
                if resp.status != 429 and resp.status < 500:
                    raise FleetProtocolError(f"{name}: unexpected HTTP {resp.status}{_detail(resp)}")
                failure = f"HTTP {resp.status}{_detail(resp)}"
            delay = next(delays, None)
            if delay is None:
                raise FleetUnavailable(f"{name}: gave up after {self.retry.max_attempts} attempts; last: {failure}")
            self.traffic.retries += 1
            self.sleep(delay)


def flower_version_problem(version: str) -> str | None:
    """What is wrong with ``version`` as the Flower release a device declares, or ``None``."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return f"flower_version must be a release like 1.42.0, got {version!r}"
    if ".".join(parts[:2]) not in FLOWER_RELEASES:
        return (
            f"flower_version {version} is outside the tested Flower releases "
            f"{FLOWER_RELEASES[0]}-{FLOWER_RELEASES[-1]}: use a SuperLink in that range"
        )
    return None


def _parse(name: str, resp: TransportResponse, response_type: type[_R]) -> _R:
    ctype = {k.lower(): v for k, v in resp.headers.items()}.get("content-type", "")
    if ctype.split(";")[0].strip() != _CONTENT_TYPE:
        raise FleetProtocolError(f"{name}: expected {_CONTENT_TYPE}, got content type {ctype or 'none'!r}")
    try:
        msg = response_type.FromString(resp.content)
    except DecodeError as exc:
        raise FleetProtocolError(f"{name}: the answer is not a valid {response_type.__name__} ({exc})") from exc
    return msg


def _error_code(resp: TransportResponse) -> int | None:
    """Flower's error code from a JSON error body (``{"code": 2004, "detail": ...}``), if there is one."""
    if resp.status < 400 or not resp.content.startswith(b"{") or len(resp.content) > 4096:
        return None
    try:
        body = json.loads(resp.content)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _detail(resp: TransportResponse) -> str:
    text = resp.content[:200].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""
