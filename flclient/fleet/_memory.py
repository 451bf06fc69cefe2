"""An in-memory SuperLink behind the :class:`~flclient.fleet.Transport` seam, for tests of devices.

:class:`MemorySuperLink` answers the Fleet API calls a device makes (flwr 1.41, read from its sources) from plain
dictionaries, so that a :class:`~flclient.fleet.FleetClient` and the node loop above it run unchanged in one
process, without sockets or threads:

- every request must carry a valid signed timestamp, and a node may only name its own node id (HTTP 401
  otherwise, as SuperLink's authentication middleware answers);
- ``register-node`` of a known key and ``activate-node`` of an unknown key or of a node online already are
  HTTP 412; a node is online until it deactivates or misses heartbeats for twice its interval;
- ``pull-messages`` hands out one queued instruction per call and marks it delivered as it answers, so a lost
  answer loses the instruction, as it does with SuperLink;
- objects are content-addressed; an announced reply preregisters its objects in a push session and
  ``push-object`` stores only objects pending in a session (or, without a session id, in any session);
  announcing the same reply again opens a new session for what is still missing; a second, different reply to
  one instruction, or a reply that SuperLink would reject (wrong node, expired, no content...), is refused
  silently with nothing to push, and listed in :attr:`MemorySuperLink.refused`;
- calls in a finished run (:meth:`MemorySuperLink.finish_run`) are HTTP 403.

Faults are scheduled per call: :meth:`MemorySuperLink.lose_answer` (the request takes effect, the answer never
arrives) and :meth:`MemorySuperLink.fail` (the request is not handled: no answer, or an HTTP error status).

With ``supernode_auth=True`` (SuperLink's ``--enable-supernode-auth``) keys are registered only by the operator
(:meth:`MemorySuperLink.register_key`, what ``flwr supernode register`` does): ``register-node`` is HTTP 412 with
Flower's error code 2001, and ``activate-node`` of a key nobody registered is HTTP 412 with code 2004.

Not modelled: TLS, push-session expiry, the ServerApp side
(replies stay until the test reads them), ``get-run``/``get-fab``.

Example::

    link = MemorySuperLink(clock=lambda: now)
    client = FleetClient(link, NodeKey.generate(), clock=lambda: now)
    client.ensure_registered()
    node_id = client.activate(30)
    ins = link.queue(node_id, {"config": ConfigRecord({"lr": 0.1})})
    ...  # the device pulls, runs and pushes its reply
    assert link.reply_content(ins.message_id) is not None
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from ._objects import EncodedMessage, RecordDict, decode_content, decode_message_body, encode_message, iter_tree_ids
from ._objects import object_id as content_id
from ._proto import flclient_fleet_pb2 as pb
from ._transport import TransportError, TransportResponse

__all__ = ["SUPERLINK_NODE_ID", "MemorySuperLink", "StoredReply"]

SUPERLINK_NODE_ID = 1
"""The node id SuperLink itself sends instructions from (Flower's ``SUPERLINK_NODE_ID``)."""

_PROTOBUF = {"content-type": "application/protobuf"}
_TIMESTAMP_TOLERANCE_S = 300.0  # SuperLink: a signed timestamp is accepted for 300 s ...
_CLOCK_SKEW_S = 5.0  # ... plus 5 s of clock drift either way
_HEARTBEAT_RANGE_S = (10.0, 1800.0)
_HEARTBEAT_PATIENCE = 2  # offline after missing heartbeats for twice the interval
_TTL_TOLERANCE_S = 0.1
_MIN_CREATED_AT = 1740700800.0  # SuperLink rejects messages stamped before 2025-02-28


_CODE_REGISTRATION_DISABLED = 2001  # Flower's ApiErrorCode.FLEET_SUPERNODE_REGISTRATION_DISABLED
_CODE_ACTIVATION_FAILED = 2004  # Flower's ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED


class _HttpError(Exception):
    def __init__(self, status: int, detail: str, *, code: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code


@dataclass
class _Node:
    node_id: int
    public_key: bytes
    online_until: float | None = None  # None: registered or deactivated, not online


@dataclass
class _Instruction:
    message: pb.Message
    tree: pb.ObjectTree
    delivered: bool = False
    confirmed: bool = False


@dataclass
class _Session:
    run_id: int
    pending: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class StoredReply:
    """A reply SuperLink accepted: its message (metadata, and the error of an error reply), object tree and the
    runtime the node reported."""

    message: pb.Message
    tree: pb.ObjectTree
    runtime_s: float | None

    @property
    def message_id(self) -> str:
        """The reply's id (its root object's id)."""
        return self.message.metadata.message_id


class MemorySuperLink:
    """A :class:`~flclient.fleet.Transport` that is a SuperLink: the Fleet API over in-memory state.

    ``clock`` is the SuperLink's wall clock (request timestamps, message expiry, heartbeat deadlines): give it
    the clock the device uses. Safe to call from several threads (a node heartbeats from one while it trains).
    State is public for assertions: :attr:`objects` (object id -> content; ``b""`` for an object announced
    but not pushed yet), :attr:`replies` (instruction id -> :class:`StoredReply`), :attr:`requests` (the name
    of every call, in order), :attr:`announced` (the message id of every ``push-messages``) and :attr:`refused`
    (``(message id, why)`` of every reply refused).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, first_node_id: int = 1001, supernode_auth: bool = False
    ) -> None:
        self._clock = clock
        self._supernode_auth = supernode_auth
        self._lock = threading.RLock()
        self._node_ids = itertools.count(first_node_id)
        self._session_ids = itertools.count(1)
        self._nodes: dict[int, _Node] = {}
        self._instructions: dict[str, _Instruction] = {}
        self._sessions: dict[str, _Session] = {}
        self._session_by_root: dict[str, str] = {}
        self._finished_runs: set[int] = set()
        self._lost: set[tuple[str, int]] = set()
        self._failing: dict[tuple[str, int], int | None] = {}
        self._closed = False
        self.objects: dict[str, bytes] = {}
        self.replies: dict[str, StoredReply] = {}
        self.requests: list[str] = []
        self.calls: Counter[str] = Counter()
        self.announced: list[str] = []
        self.refused: list[tuple[str, str]] = []

    # -- what the ServerApp side does ------------------------------------------------------------------------
    def queue(
        self,
        node_id: int,
        content: RecordDict,
        *,
        message_type: str = "train",
        run_id: int = 1,
        group_id: str = "1",
        ttl_s: float = 12 * 3600.0,
    ) -> EncodedMessage:
        """Queue an instruction with ``content`` for ``node_id``; returns it (``.message_id`` names it)."""
        meta = pb.Metadata(
            run_id=run_id,
            src_node_id=SUPERLINK_NODE_ID,
            dst_node_id=node_id,
            group_id=group_id,
            ttl=ttl_s,
            message_type=message_type,
            created_at=self._clock(),
        )
        return self.queue_message(encode_message(meta, content))

    def queue_message(self, message: EncodedMessage) -> EncodedMessage:
        """Queue an encoded instruction (its objects become available at once, as if the ServerApp pushed them)."""
        with self._lock:
            self.objects.update(message.objects)
            metadata = message.message.metadata
            self._instructions[message.message_id] = _Instruction(pb.Message(metadata=metadata), message.tree)
        return message

    def register_key(self, public_pem: bytes) -> int:
        """Register a node's public key as the operator does (``flwr supernode register``); returns its node id."""
        with self._lock:
            known = self._node_by_key(public_pem)
            if known is not None:
                return known
            node = _Node(next(self._node_ids), public_pem)
            self._nodes[node.node_id] = node
            return node.node_id

    def finish_run(self, run_id: int) -> None:
        """End run ``run_id``: its pulls, confirmations and pushes are answered HTTP 403 from now on."""
        with self._lock:
            self._finished_runs.add(run_id)

    def forget_nodes(self) -> None:
        """Lose every node (a SuperLink restarted with in-memory state): keys must be registered again."""
        with self._lock:
            self._nodes.clear()

    def node_online(self, node_id: int) -> bool:
        """Whether ``node_id`` is online (activated, not deactivated, heartbeats not overdue)."""
        with self._lock:
            node = self._nodes.get(node_id)
            return node is not None and self._online(node)

    def delivered(self) -> dict[str, StoredReply]:
        """The replies whose every object is stored (what a ServerApp can collect), by instruction id."""
        with self._lock:
            return {mid: r for mid, r in self.replies.items() if self._complete(r.tree)}

    def reply_content(self, instruction_id: str) -> RecordDict | None:
        """The decoded content of the delivered reply to ``instruction_id`` (``None`` for an error reply).

        Raises ``LookupError`` if that reply is not (completely) stored."""
        reply = self.delivered().get(instruction_id)
        if reply is None:
            raise LookupError(f"no complete reply to instruction {instruction_id[:12]} was stored")
        return decode_content(reply.message_id, {oid: self.objects[oid] for oid in iter_tree_ids(reply.tree)})

    def reply_error(self, instruction_id: str) -> pb.Error | None:
        """The error of the delivered reply to ``instruction_id`` (``None`` for a reply with content).

        Raises ``LookupError`` if that reply is not (completely) stored."""
        reply = self.delivered().get(instruction_id)
        if reply is None:
            raise LookupError(f"no complete reply to instruction {instruction_id[:12]} was stored")
        body = decode_message_body(self.objects[reply.message_id])
        return body.error if body.HasField("error") else None

    def pending_objects(self) -> set[str]:
        """Objects announced in a push session and not pushed yet."""
        with self._lock:
            return {oid for s in self._sessions.values() for oid in s.pending}

    # -- faults ------------------------------------------------------------------------------------------------
    def lose_answer(self, call: str, *, nth: int | None = None) -> None:
        """Handle the next ``call`` (e.g. ``"push-messages"``), or its ``nth`` since the start (1-based), as
        usual, then lose the answer: the client gets a :class:`~flclient.fleet.TransportError`."""
        with self._lock:
            self._lost.add((call, self._nth(call, nth)))

    def fail(self, call: str, *, status: int | None = None, nth: int | None = None) -> None:
        """Do not handle the next ``call`` (or its ``nth``): answer HTTP ``status``, or nothing at all
        (a :class:`~flclient.fleet.TransportError`) when ``status`` is ``None``."""
        with self._lock:
            self._failing[(call, self._nth(call, nth))] = status

    def _nth(self, call: str, nth: int | None) -> int:
        if call not in _CALLS:
            raise ValueError(f"unknown Fleet call {call!r}; one of {sorted(_CALLS)}")
        if nth is not None and nth < 1:
            raise ValueError(f"nth counts calls from 1, got {nth}")
        return self.calls[call] + 1 if nth is None else nth

    # -- Transport -----------------------------------------------------------------------------------------------
    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        """Answer one Fleet API request as SuperLink would (after any scheduled fault)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("MemorySuperLink used after close()")
            name = path.removeprefix("/v1/fleet/")
            if not path.startswith("/v1/fleet/") or name not in _CALLS:
                return _error(404, f"no Fleet API call at {path}")
            self.calls[name] += 1
            self.requests.append(name)
            fault = (name, self.calls[name])
            if fault in self._failing:
                status = self._failing.pop(fault)
                if status is None:
                    raise TransportError(f"{name}: no answer (MemorySuperLink.fail)")
                return _error(status, f"{name}: failed on purpose (MemorySuperLink.fail)")
            request_type, handler = _CALLS[name]
            try:
                try:
                    request = request_type.FromString(content)
                except DecodeError as exc:
                    raise _HttpError(400, f"the body is not a {request_type.__name__}: {exc}") from exc
                self._authenticate(request, headers)
                answer = TransportResponse(200, handler(self, request).SerializeToString(), _PROTOBUF)
            except _HttpError as exc:
                answer = _error(exc.status, exc.detail, exc.code)
            if fault in self._lost:
                self._lost.discard(fault)
                raise TransportError(f"{name}: connection closed after the request was handled (lose_answer)")
            return answer

    def close(self) -> None:
        """Refuse further requests; idempotent."""
        self._closed = True

    # -- authentication ----------------------------------------------------------------------------------------
    def _authenticate(self, request: ProtoMessage, headers: Mapping[str, str]) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            public_pem = base64.b64decode(lower["flwr-public-key"], validate=True)
            signature = base64.b64decode(lower["flwr-signature"], validate=True)
            stamp = lower["flwr-timestamp"]
            age = self._clock() - datetime.datetime.fromisoformat(stamp).timestamp()
            if not -_CLOCK_SKEW_S < age < _TIMESTAMP_TOLERANCE_S + _CLOCK_SKEW_S:
                raise ValueError(f"timestamp {stamp} is {age:.0f} s old")
            key = serialization.load_pem_public_key(public_pem)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an elliptic-curve key")
            key.verify(signature, stamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
            if isinstance(request, (pb.RegisterNodeFleetRequest, pb.ActivateNodeRequest)):
                if request.public_key != public_pem:
                    raise ValueError("the public key in the body is not the signing key")
            else:
                named = getattr(request, "node", None)  # most calls name a Node; deactivate-node a bare id
                node_id = named.node_id if named is not None else getattr(request, "node_id", None)
                if self._node_by_key(public_pem) != node_id:
                    raise ValueError(f"node {node_id} does not belong to the signing key")
        except (KeyError, ValueError, TypeError, UnicodeError, binascii.Error, InvalidSignature) as exc:
            raise _HttpError(401, "Invalid SuperNode authentication") from exc

    def _node_by_key(self, public_pem: bytes) -> int | None:
        return next((n.node_id for n in self._nodes.values() if n.public_key == public_pem), None)

    # -- node lifecycle ------------------------------------------------------------------------------------------
    def _online(self, node: _Node) -> bool:
        return node.online_until is not None and self._clock() <= node.online_until

    def _register_node(self, req: pb.RegisterNodeFleetRequest) -> pb.RegisterNodeFleetResponse:
        if self._supernode_auth:
            detail = "SuperNode authentication is enabled. All SuperNodes must be registered via the CLI."
            raise _HttpError(412, detail, code=_CODE_REGISTRATION_DISABLED)
        if self._node_by_key(req.public_key) is not None:
            raise _HttpError(412, "Public key already in use.")
        node = _Node(next(self._node_ids), req.public_key)
        self._nodes[node.node_id] = node
        return pb.RegisterNodeFleetResponse(node_id=node.node_id)

    def _activate_node(self, req: pb.ActivateNodeRequest) -> pb.ActivateNodeResponse:
        node_id = self._node_by_key(req.public_key)
        if node_id is None:
            raise _HttpError(412, "Failed to activate SuperNode.", code=_CODE_ACTIVATION_FAILED)
        _check_interval(req.heartbeat_interval)
        node = self._nodes[node_id]
        if self._online(node):
            raise _HttpError(412, "Failed to activate SuperNode.", code=_CODE_ACTIVATION_FAILED)
        node.online_until = self._clock() + _HEARTBEAT_PATIENCE * req.heartbeat_interval
        return pb.ActivateNodeResponse(node_id=node_id)

    def _deactivate_node(self, req: pb.DeactivateNodeRequest) -> pb.DeactivateNodeResponse:
        node = self._nodes[req.node_id]
        if not self._online(node):
            raise _HttpError(412, f"Failed to deactivate SuperNode: node {req.node_id} is not online.")
        node.online_until = None
        return pb.DeactivateNodeResponse()

    def _heartbeat(self, req: pb.SendNodeHeartbeatRequest) -> pb.SendNodeHeartbeatResponse:
        _check_interval(req.heartbeat_interval)
        node = self._nodes.get(req.node.node_id)
        if node is None:
            return pb.SendNodeHeartbeatResponse(success=False)
        node.online_until = self._clock() + _HEARTBEAT_PATIENCE * req.heartbeat_interval  # also brings it back
        return pb.SendNodeHeartbeatResponse(success=True)

    # -- instructions --------------------------------------------------------------------------------------------
    def _pull_messages(self, req: pb.PullMessagesRequest) -> pb.PullMessagesResponse:
        now = self._clock()
        for ins in self._instructions.values():
            meta = ins.message.metadata
            if ins.delivered or meta.dst_node_id != req.node.node_id or meta.created_at + meta.ttl <= now:
                continue
            ins.delivered = True  # as it answers: a lost answer loses the instruction
            message = pb.Message(metadata=meta, content=pb.RecordDict())
            return pb.PullMessagesResponse(messages_list=[message], message_object_trees=[ins.tree])
        return pb.PullMessagesResponse()

    def _pull_object(self, req: pb.PullObjectRequest) -> pb.PullObjectResponse:
        self._check_running(req.run_id)
        content = self.objects.get(req.object_id)
        if content is None:
            return pb.PullObjectResponse(object_found=False, object_available=False)
        return pb.PullObjectResponse(object_found=True, object_available=content != b"", object_content=content)

    def _confirm(self, req: pb.ConfirmMessageReceivedRequest) -> pb.ConfirmMessageReceivedResponse:
        self._check_running(req.run_id)
        ins = self._instructions.get(req.message_object_id)
        if ins is not None and not ins.confirmed:
            ins.confirmed = True  # the node has the content: free what nothing else refers to
            live = {
                oid
                for tree in [i.tree for i in self._instructions.values() if not i.confirmed]
                + [r.tree for r in self.replies.values()]
                for oid in iter_tree_ids(tree)
            }
            for oid in iter_tree_ids(ins.tree):
                if oid not in live:
                    self.objects.pop(oid, None)
        return pb.ConfirmMessageReceivedResponse()

    # -- replies -------------------------------------------------------------------------------------------------
    def _push_messages(self, req: pb.PushMessagesRequest) -> pb.PushMessagesResponse:
        if len(req.messages_list) != 1 or len(req.message_object_trees) != 1:
            raise _HttpError(400, "push-messages carries one message and its object tree")
        message, tree = req.messages_list[0], req.message_object_trees[0]
        meta = message.metadata
        self.announced.append(meta.message_id)
        self._check_running(meta.run_id)
        session_id = f"session-{next(self._session_ids)}"
        why = self._reply_refusal(req.node.node_id, message, tree)
        if why:
            self.refused.append((meta.message_id, why))
            return pb.PushMessagesResponse(results={meta.message_id: 0}, session_id=session_id)
        if meta.reply_to_message_id not in self.replies:
            kept = pb.Message(metadata=meta)
            if message.HasField("error"):
                kept.error.CopyFrom(message.error)
            runtime = req.clientapp_runtime_list[0] if req.clientapp_runtime_list else None
            self.replies[meta.reply_to_message_id] = StoredReply(kept, tree, runtime)
        missing = []
        for oid in iter_tree_ids(tree):
            if self.objects.setdefault(oid, b"") == b"":
                missing.append(oid)
        old = self._session_by_root.pop(tree.object_id, None)
        if old is not None:
            self._sessions.pop(old, None)
        if missing:
            self._sessions[session_id] = _Session(meta.run_id, set(missing))
            self._session_by_root[tree.object_id] = session_id
        return pb.PushMessagesResponse(results={meta.message_id: 0}, objects_to_push=missing, session_id=session_id)

    def _reply_refusal(self, node_id: int, message: pb.Message, tree: pb.ObjectTree) -> str:
        """Why SuperLink would not store this reply ("" if it would)."""
        meta = message.metadata
        now = self._clock()
        if not meta.message_id or tree.object_id != meta.message_id:
            return "the object tree does not start at the message id"
        if meta.created_at < _MIN_CREATED_AT or meta.ttl <= 0 or meta.created_at + meta.ttl <= now:
            return "created_at / ttl invalid or expired"
        if meta.src_node_id != node_id or meta.src_node_id == SUPERLINK_NODE_ID or not meta.dst_node_id:
            return "src_node_id / dst_node_id invalid"
        if not meta.message_type:
            return "no message_type"
        if message.HasField("content") == message.HasField("error"):
            return "a reply carries content or an error, not both or neither"
        ins = self._instructions.get(meta.reply_to_message_id)
        if ins is None:
            return f"replies to unknown instruction {meta.reply_to_message_id[:12]!r}"
        ins_meta = ins.message.metadata
        if ins_meta.created_at + ins_meta.ttl <= now:
            return "the instruction expired"
        if ins_meta.dst_node_id != meta.src_node_id or ins_meta.run_id != meta.run_id:
            return "the instruction was for another node or run"
        if meta.ttl - (ins_meta.created_at + ins_meta.ttl - meta.created_at) > _TTL_TOLERANCE_S:
            return "the reply outlives its instruction"
        stored = self.replies.get(meta.reply_to_message_id)
        if stored is not None and stored.message_id != meta.message_id:
            return "duplicate reply: the instruction has another reply already"
        return ""

    def _push_object(self, req: pb.PushObjectRequest) -> pb.PushObjectResponse:
        self._check_running(req.run_id)
        session_id = req.session_id or next(
            (sid for sid, s in self._sessions.items() if req.object_id in s.pending), ""
        )
        session = self._sessions.get(session_id)
        if session is None or session.run_id != req.run_id or req.object_id not in session.pending:
            return pb.PushObjectResponse(stored=False)
        if content_id(req.object_content) != req.object_id:
            return pb.PushObjectResponse(stored=False)  # SuperLink logs the mismatch and stores nothing
        self.objects[req.object_id] = req.object_content
        session.pending.discard(req.object_id)
        if not session.pending:
            del self._sessions[session_id]
            self._session_by_root = {r: s for r, s in self._session_by_root.items() if s != session_id}
        return pb.PushObjectResponse(stored=True)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _check_running(self, run_id: int) -> None:
        if run_id in self._finished_runs:
            raise _HttpError(403, f"run {run_id} is finished: the run status does not allow this operation")

    def _complete(self, tree: pb.ObjectTree) -> bool:
        return all(self.objects.get(oid, b"") != b"" for oid in iter_tree_ids(tree))


def _check_interval(interval: float) -> None:
    low, high = _HEARTBEAT_RANGE_S
    if not low <= interval <= high:
        raise _HttpError(400, f"Heartbeat interval {interval} is out of bounds [{low}, {high}].")


def _error(status: int, detail: str, code: int | None = None) -> TransportResponse:
    body: dict[str, object] = {"detail": detail} if code is None else {"code": code, "detail": detail}
    return TransportResponse(status, json.dumps(body).encode(), {"content-type": "application/json"})


_Handler = Callable[[MemorySuperLink, Any], ProtoMessage]
_CALLS: dict[str, tuple[type[ProtoMessage], _Handler]] = {
    "register-node": (pb.RegisterNodeFleetRequest, MemorySuperLink._register_node),
    "activate-node": (pb.ActivateNodeRequest, MemorySuperLink._activate_node),
    "deactivate-node": (pb.DeactivateNodeRequest, MemorySuperLink._deactivate_node),
    "send-node-heartbeat": (pb.SendNodeHeartbeatRequest, MemorySuperLink._heartbeat),
    "pull-messages": (pb.PullMessagesRequest, MemorySuperLink._pull_messages),
    "pull-object": (pb.PullObjectRequest, MemorySuperLink._pull_object),
    "confirm-message-received": (pb.ConfirmMessageReceivedRequest, MemorySuperLink._confirm),
    "push-messages": (pb.PushMessagesRequest, MemorySuperLink._push_messages),
    "push-object": (pb.PushObjectRequest, MemorySuperLink._push_object),
}
