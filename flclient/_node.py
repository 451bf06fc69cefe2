"""The node: the round state machine between the Fleet client, the state store and the task executor.

One pass (:meth:`FleetNode.poll_once`) pushes stored replies, resumes stored instructions, heartbeats when due
and pulls new instructions. Each instruction goes pulled -> received -> replied in the state store before the
next network step, so a restart continues where the last one stopped (see :mod:`flclient._state`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from ._errors import (
    FLClientError,
    FleetAuthError,
    FleetError,
    FleetNodeNotRegistered,
    FleetRunNotRunning,
    FleetUnavailable,
    TaskDeclined,
)
from ._state import PendingInstruction, StateStore
from ._task import TaskExecutor
from .fleet._client import FleetClient, PulledMessage
from .fleet._objects import EncodedMessage, MetricRecord, RecordDict, decode_content, encode_message
from .fleet._proto import flclient_fleet_pb2 as pb
from .protocol import Code, ErrorReply, Metric, Record

__all__ = ["FleetNode", "TelemetryLog"]

_SUPERLINK_NODE_ID = 1
_ERROR_CODE_CLIENT_APP_RAISED = 2  # Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION

LogFn = Callable[[dict[str, Any]], None]


class TelemetryLog:
    """Per-round telemetry as JSON lines; each record is one ``write`` of a whole line (O_APPEND).

    Bounded: once the file reaches ``max_bytes`` it becomes ``<name>.1`` (replacing the older one) and a new file
    starts, so the log never holds much more than twice ``max_bytes``.
    """

    def __init__(self, path: Path, *, max_bytes: int = 1 << 20) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def rotated_path(self) -> Path:
        """Where the previous file goes when the current one is full."""
        return self.path.with_name(self.path.name + ".1")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (rotating first when the file is full)."""
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.rotated_path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every complete record kept, oldest first (a torn last line from a crash is skipped)."""
        out = []
        for path in (self.rotated_path, self.path):
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


class StopSignal(Protocol):
    """What :class:`BackgroundHeartbeats` waits on between beats (``threading.Event`` is one).

    ``wait(timeout)`` returns ``True`` once ``set`` was called, ``False`` when the period ran out.
    """

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; whether the signal is set."""
        ...

    def set(self) -> None:
        """Make every ``wait`` return ``True``."""
        ...


class BackgroundHeartbeats:
    """Heartbeats from a thread while a task runs (a context manager).

    SuperLink counts a node offline after twice its heartbeat interval; a device that trains for minutes must
    keep heartbeating meanwhile, or the ServerApp sees it unavailable and its reply is lost. A failed heartbeat
    is logged, not raised: the node loop deals with the connection after the task. Leaving does not wait for a
    heartbeat still in flight (the Fleet client is safe to share between threads). ``stop`` is what the thread
    waits on between beats (a fresh ``threading.Event`` unless given; tests pass one they step by hand).
    """

    def __init__(
        self, beat: Callable[[], object], period_s: float, log: LogFn, *, stop: StopSignal | None = None
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self._beat = beat
        self._period_s = period_s
        self._log = log
        self._stop: StopSignal = stop if stop is not None else threading.Event()
        self._thread = threading.Thread(target=self._run, name="flclient-heartbeat", daemon=True)
        self.beats = 0

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self._beat()
                self.beats += 1
            except Exception as exc:  # the node loop reconnects if the node really is gone
                self._log({"event": "heartbeat-error", "error": type(exc).__name__, "reason": str(exc)})

    def __enter__(self) -> BackgroundHeartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=0.1)


@dataclass(frozen=True, kw_only=True)
class NodeTiming:
    """Intervals of the node loop (seconds).

    ``poll_interval_s`` is the pause between ``pull-messages`` calls right after an instruction (a round in
    progress); each idle pass doubles it, up to ``idle_poll_max_s`` (``None``: the heartbeat interval), so an
    idle device costs SuperLink about what an idle SuperNode does. Heartbeats keep their own pace meanwhile.
    """

    heartbeat_interval_s: float = 30.0
    poll_interval_s: float = 1.0
    reply_grace_s: float = 10.0
    max_backoff_s: float = 20.0
    idle_poll_max_s: float | None = None
    keep_rows: int = 256  # answered instructions and sent replies remembered (older rows are pruned)
    task_attempts: int = 3  # tries of a task failing with an OSError (data missing, disk full) before answering

    def __post_init__(self) -> None:
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, got {self.poll_interval_s}")
        if self.idle_poll_max_s is not None and not self.idle_poll_max_s >= self.poll_interval_s:
            raise ValueError(
                f"idle_poll_max_s must be at least poll_interval_s ({self.poll_interval_s}), got {self.idle_poll_max_s}"
            )

    @property
    def idle_poll_cap_s(self) -> float:
        """The longest pause between two ``pull-messages`` calls of an idle node."""
        cap = self.heartbeat_interval_s if self.idle_poll_max_s is None else self.idle_poll_max_s
        return max(cap, self.poll_interval_s)


class FleetNode:
    """A device taking part in Flower runs. Not thread-safe: drive it from one thread.

    ``wait(seconds)`` pauses the loop and returns ``True`` when the node should stop (pass ``Event.wait``).
    Every clock is injected: ``monotonic`` paces heartbeats and the reply grace, ``wall`` stamps messages and
    telemetry, ``perf`` times each task, and ``heartbeat_stop`` builds the signal that the heartbeat thread of
    each running task waits on between beats.
    """

    def __init__(
        self,
        *,
        fleet: FleetClient,
        store: StateStore,
        executor: TaskExecutor,
        timing: NodeTiming,
        log: LogFn,
        telemetry: TelemetryLog | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        perf: Callable[[], float] = time.perf_counter,
        heartbeat_stop: Callable[[], StopSignal] = threading.Event,
        on_connect: Callable[[int], None] | None = None,
        on_pushed: Callable[[str], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.executor = executor
        self.timing = timing
        self._log = log
        self._telemetry = telemetry
        self._monotonic = monotonic
        self._wall = wall
        self._perf = perf
        self._heartbeat_stop = heartbeat_stop
        self._on_connect = on_connect
        self._on_pushed = on_pushed
        self.node_id: int | None = None
        self._last_heartbeat = -float("inf")
        self._last_push: float | None = None
        self._life_beats = False  # run() heartbeats from a thread for the node's whole active life
        self._liveness_lost = False  # that thread heard SuperLink say the node is no longer active
        self._retry_at: dict[str, float] = {}  # instruction -> when a task that failed transiently runs again

    # -- connection --------------------------------------------------------------------------------------------
    def connect(self) -> int:
        """Register (once per key) and activate; returns the node id."""
        if self.store.get_meta("node_key") is None:
            raise RuntimeError("the state store has no node key")
        if self.store.get_meta("registered") is None:
            self._register()
        known = self.store.get_meta("node_id")
        try:
            node_id = self.fleet.activate(
                self.timing.heartbeat_interval_s, known_node_id=None if known is None else int(known)
            )
        except FleetAuthError as exc:
            if self.fleet.operator_registers_keys:  # node authentication: only its operator can let us in
                raise self.fleet.not_registered() from exc
            # A SuperLink that lost its state (restarted in memory) no longer knows the key: register again.
            self._log({"event": "reregister", "reason": str(exc)})
            self._register()
            node_id = self.fleet.activate(self.timing.heartbeat_interval_s)
        self.node_id = node_id
        self.store.set_meta("node_id", str(node_id).encode())
        # An activation answered 412 (the node was still online from before) did not move SuperLink's offline
        # deadline: refresh it now rather than a third of an interval later.
        self.fleet.heartbeat(node_id, self.timing.heartbeat_interval_s)
        self._last_heartbeat = self._monotonic()
        self._liveness_lost = False
        if self._on_connect is not None:
            self._on_connect(node_id)
        self._log({"event": "connected", "node_id": node_id})
        return node_id

    def _register(self) -> None:
        self.fleet.ensure_registered()
        if not self.fleet.operator_registers_keys:  # with node authentication, ask again at each start
            self.store.set_meta("registered", b"1")

    def deactivate(self) -> None:
        """Mark the node offline (after :meth:`linger`)."""
        if self.node_id is not None:
            self.fleet.deactivate(self.node_id)
            self._log({"event": "deactivated", "node_id": self.node_id})
            self.node_id = None

    def linger(self, wait: Callable[[float], bool]) -> None:
        """Keep heartbeating until the last reply had ``reply_grace_s`` to be collected (the reply-loss hole)."""
        if self._last_push is None or self.node_id is None:
            return
        while (left := self.timing.reply_grace_s - (self._monotonic() - self._last_push)) > 0:
            self.fleet.heartbeat(self.node_id, self.timing.heartbeat_interval_s)
            if wait(min(left, self.timing.heartbeat_interval_s / 3)):
                break

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, wait: Callable[[float], bool]) -> None:
        """Take part in rounds until ``wait`` says stop; reconnect forever with capped backoff.

        Polling is fast while a round is in progress and backs off while idle (see :class:`NodeTiming`). One
        heartbeat thread runs for the whole loop, so that the node stays online while it fetches a task's objects,
        trains, pushes the reply and lingers, not only while it trains: SuperLink answers the ServerApp "Node
        Unavailable" for a node that missed two intervals, and refuses its reply after that.
        """
        interval = self.timing.heartbeat_interval_s
        with BackgroundHeartbeats(self._life_beat, interval / 3, self._log, stop=self._heartbeat_stop()):
            self._life_beats = True
            try:
                self._run(wait)
            finally:
                self._life_beats = False

    def _life_beat(self) -> None:
        node_id = self.node_id
        if node_id is None:  # between connections: the loop activates again, which makes it online
            return
        if self.fleet.heartbeat(node_id, self.timing.heartbeat_interval_s):
            self._last_heartbeat = self._monotonic()
        else:
            self._liveness_lost = True

    def _run(self, wait: Callable[[float], bool]) -> None:
        failures = 0
        idle_pause = self.timing.poll_interval_s
        next_pull = -float("inf")
        while True:
            try:
                if self.node_id is None:
                    self.connect()
                    next_pull = -float("inf")
                busy = False
                if self._monotonic() >= next_pull:
                    busy = self.poll_once() > 0
                    if busy:
                        idle_pause = self.timing.poll_interval_s
                        next_pull = -float("inf")
                    else:
                        next_pull = self._monotonic() + idle_pause
                        idle_pause = min(self.timing.idle_poll_cap_s, idle_pause * 2)
                else:
                    self._heartbeat_if_due()
                failures = 0
                if wait(0 if busy else self._pause_until(next_pull)):
                    return
            except FleetNodeNotRegistered:
                raise  # no retry helps: the SuperLink's operator has to register this device's key
            except Exception as exc:
                failures += 1
                self.node_id = None
                if isinstance(exc, FleetAuthError):
                    # SuperLink no longer knows this key (it restarted without its state): register it again.
                    with contextlib.suppress(FLClientError):
                        self._register()
                    if self.fleet.operator_registers_keys:  # ... unless only its operator registers keys
                        raise self.fleet.not_registered() from exc
                delay = min(self.timing.max_backoff_s, 0.5 * 2 ** min(failures, 10))
                delay *= 0.5 + 0.5 * self.fleet.rng.random()
                self._log(
                    {
                        "event": "disconnected",
                        "error": type(exc).__name__,
                        "reason": str(exc),
                        "retry_in_s": round(delay, 2),
                    }
                )
                if wait(delay):
                    return

    def _pause_until(self, next_pull: float) -> float:
        """Seconds until the next pull or the next heartbeat, whichever is first."""
        beat_due = self._last_heartbeat + self.timing.heartbeat_interval_s / 3
        return max(0.0, min(next_pull, beat_due) - self._monotonic())

    def _heartbeat_if_due(self) -> None:
        assert self.node_id is not None
        if self._monotonic() - self._last_heartbeat >= self.timing.heartbeat_interval_s / 3:
            if not self.fleet.heartbeat(self.node_id, self.timing.heartbeat_interval_s):
                self.node_id = None
                raise FleetUnavailable("SuperLink no longer considers this node active")
            self._last_heartbeat = self._monotonic()

    def poll_once(self) -> int:
        """One pass; returns how many instructions were handled (0 = idle)."""
        if self.node_id is None:
            self.connect()
        assert self.node_id is not None
        if self._liveness_lost:
            self.node_id = None
            raise FleetUnavailable("SuperLink no longer considers this node active (a heartbeat was refused)")
        self._flush_replies()
        handled = 0
        for pending in self.store.pending_instructions():
            if self._retry_at.get(pending.message_id, -float("inf")) > self._monotonic():
                continue  # a transient failure: its backoff has not passed yet
            self._retry_at.pop(pending.message_id, None)
            self._process(pending)
            handled += 1
        self._heartbeat_if_due()
        for pulled in self.fleet.pull_messages(self.node_id):
            if not self.store.add_instruction(
                pulled.message_id,
                pulled.metadata.run_id,
                pulled.metadata.SerializeToString(),
                pulled.tree.SerializeToString(),
            ):
                continue
            handled += 1
            self.store.bump("instructions")
            pending = PendingInstruction(pulled.message_id, pulled.metadata.run_id, b"", b"", "pulled", {})
            self._process(pending, pulled)
        if handled:
            self.store.prune(keep=self.timing.keep_rows)
        return handled

    # -- one instruction ---------------------------------------------------------------------------------------
    def _process(self, pending: PendingInstruction, pulled: PulledMessage | None = None) -> None:
        assert self.node_id is not None
        if pulled is None:
            try:
                pulled = PulledMessage(pb.Metadata.FromString(pending.metadata), pb.ObjectTree.FromString(pending.tree))
            except DecodeError as exc:  # a damaged row: nothing to answer to; never try it again
                self.store.drop_instruction(pending.message_id, "undecodable-stored")
                self.store.bump("dropped.undecodable-stored")
                self._log({"event": "dropped", "message_id": pending.message_id[:16], "detail": str(exc)})
                return
        meta = pulled.metadata
        started = self._perf()
        traffic_before = self.fleet.traffic.bytes_down
        objects = pending.objects
        content: RecordDict | None = None
        if pending.state == "pulled":
            try:
                objects = self.fleet.pull_objects(self.node_id, pulled, have=pending.objects)
                content = decode_content(pulled.message_id, objects, self.fleet.limits) or {}
            except FleetRunNotRunning as exc:
                self._drop(pulled, "run-not-running", str(exc))
                return
            except (FleetUnavailable, FleetAuthError):
                raise  # the connection, not the instruction: the loop reconnects and resumes it
            except Exception as exc:  # ObjectIntegrityError, FleetProtocolError, whatever hostile content provokes
                # Hostile or broken content: never run it; answer with an error so the ServerApp need not wait.
                self.store.mark_received(pulled.message_id, {})
                self._reply_error(pulled, ErrorReply(kind="rejected", code=Code.UNDECODABLE, detail=str(exc)), started)
                self._confirm(pulled)
                return
            self.store.mark_received(pulled.message_id, objects)
            self._confirm(pulled)
        bytes_down = self.fleet.traffic.bytes_down - traffic_before
        fetched = self._perf()
        if content is None:  # resumed after a restart: decode what was stored when it was received
            try:
                content = decode_content(pulled.message_id, objects, self.fleet.limits) or {}
            except Exception as exc:  # whatever it raises, it would raise again: answer it, never loop on it
                self._reply_error(pulled, ErrorReply(kind="rejected", code=Code.UNDECODABLE, detail=str(exc)), started)
                return
        decoded = self._perf()
        try:
            node_id, interval = self.node_id, self.timing.heartbeat_interval_s
            if self._life_beats:  # run()'s heartbeat thread covers the task
                outcome = self.executor.run(meta.message_type, content, message_id=pulled.message_id)
            else:
                with BackgroundHeartbeats(
                    lambda: self.fleet.heartbeat(node_id, interval),
                    interval / 3,
                    self._log,
                    stop=self._heartbeat_stop(),
                ):
                    outcome = self.executor.run(meta.message_type, content, message_id=pulled.message_id)
        except TaskDeclined as exc:
            declined = ErrorReply(kind="declined", code=exc.reason, detail=exc.detail, reasons=exc.reasons)
            self._reply_error(pulled, declined, started)
            return
        except (FLClientError, ValueError, ArithmeticError) as exc:
            self._reply_error(pulled, ErrorReply(kind="failed", code=type(exc).__name__, detail=str(exc)), started)
            return
        except Exception as exc:  # one task must never wedge the node: retry what may pass, answer the rest
            attempts = self.store.note_attempt(pulled.message_id)
            if isinstance(exc, OSError) and attempts < self.timing.task_attempts:
                # a data file missing for now, a full disk: try again after a backoff, a few times
                delay = min(self.timing.max_backoff_s, 2.0 ** (attempts - 1))
                self._retry_at[pulled.message_id] = self._monotonic() + delay
                self._log(
                    {
                        "event": "task-retry",
                        "message_id": pulled.message_id[:16],
                        "error": type(exc).__name__,
                        "reason": str(exc),
                        "attempt": attempts,
                        "retry_in_s": delay,
                    }
                )
                return
            detail = f"{exc} (attempt {attempts})" if isinstance(exc, OSError) else str(exc)
            self._reply_error(pulled, ErrorReply(kind="failed", code=type(exc).__name__, detail=detail), started)
            return
        ran = self._perf()
        device_s = ran - started
        metrics = outcome.content.get(Record.METRICS)
        if isinstance(metrics, MetricRecord):  # what the node measured around the task
            extra = {Metric.BYTES_DOWN: int(bytes_down), Metric.DEVICE_S: device_s}
            outcome.content[Record.METRICS] = MetricRecord({**metrics.values, **extra})
        encoded = encode_message(self._reply_metadata(meta), outcome.content)
        self._store_reply(pulled, encoded, device_s)
        self._telemetry_write(
            pulled,
            outcome="replied",
            train_s=outcome.train_s,
            features_s=outcome.features_s,
            device_s=device_s,
            # where device_s went besides training: pulling the instruction (network), decoding it, the task
            fetch_s=fetched - started,
            decode_s=decoded - fetched,
            task_s=ran - decoded,
            store_s=self._perf() - ran,  # encode + durable store of the reply (after device_s)
            bytes_down=bytes_down,
            reply_bytes=sum(len(c) for c in encoded.objects.values()),
            num_examples=outcome.num_examples,
        )
        self._flush_replies()

    def _confirm(self, pulled: PulledMessage) -> None:
        assert self.node_id is not None
        with contextlib.suppress(FleetRunNotRunning):
            self.fleet.confirm(self.node_id, pulled.metadata.run_id, pulled.message_id)

    def _drop(self, pulled: PulledMessage, reason: str, detail: str) -> None:
        self.store.drop_instruction(pulled.message_id, reason)
        self.store.bump(f"dropped.{reason}")
        self._log({"event": "dropped", "message_id": pulled.message_id[:16], "reason": reason, "detail": detail})
        self._telemetry_write(pulled, outcome="dropped", reason=reason)

    def _reply_metadata(self, ins: pb.Metadata) -> pb.Metadata:
        assert self.node_id is not None
        now = self._wall()
        ttl = ins.created_at + ins.ttl - now if ins.ttl > 0 else 3600.0
        meta = pb.Metadata(
            run_id=ins.run_id,
            src_node_id=self.node_id,
            dst_node_id=_SUPERLINK_NODE_ID,
            reply_to_message_id=ins.message_id,
            group_id=ins.group_id,
            message_type=ins.message_type,
            created_at=now,
            ttl=max(ttl, 1.0),
        )
        if ins.HasField("dst_task_id"):  # a reply swaps the task ids, as a SuperNode's reply does
            meta.src_task_id = ins.dst_task_id
        if ins.HasField("src_task_id"):
            meta.dst_task_id = ins.src_task_id
        return meta

    def _reply_error(self, pulled: PulledMessage, error: ErrorReply, started: float) -> None:
        """Answer with a Flower error whose reason is the protocol's error reply (kind, code, detail)."""
        meta = self._reply_metadata(pulled.metadata)
        meta.message_id = ""
        text = error.to_reason()
        outcome, reason = error.kind, error.code
        body = pb.Message(metadata=meta, error=pb.Error(code=_ERROR_CODE_CLIENT_APP_RAISED, reason=text))
        encoded = _encode_error(body)
        self._store_reply(pulled, encoded, self._perf() - started)
        self.store.bump(f"{outcome}")
        self._log({"event": outcome, "message_id": pulled.message_id[:16], "reason": reason, "detail": error.detail})
        self._telemetry_write(pulled, outcome=outcome, reason=reason, detail=error.detail)
        self._flush_replies()

    def _store_reply(self, pulled: PulledMessage, encoded: EncodedMessage, runtime_s: float) -> None:
        self.store.store_reply(
            reply_to=pulled.message_id,
            message_id=encoded.message_id,
            message=encoded.message.SerializeToString(),
            tree=encoded.tree.SerializeToString(),
            objects=encoded.objects,
            runtime_s=runtime_s,
        )

    def _flush_replies(self) -> None:
        assert self.node_id is not None
        for reply in self.store.unsent_replies():
            encoded = EncodedMessage(
                reply.message_id,
                pb.Message.FromString(reply.message),
                pb.ObjectTree.FromString(reply.tree),
                reply.objects,
            )
            before = self.fleet.traffic.bytes_up
            repeat = self.store.note_push_attempt(reply.reply_to)
            try:
                accepted = self.fleet.push_message(self.node_id, encoded, runtime_s=reply.runtime_s)
            except FleetRunNotRunning as exc:
                self.store.mark_reply(reply.reply_to, "dropped")
                self.store.bump("dropped.run-not-running")
                self._log({"event": "reply-dropped", "reply_to": reply.reply_to[:16], "reason": str(exc)})
                continue
            if not accepted and not repeat:
                # SuperLink stored nothing of a reply announced for the first time: it refused it (the node was
                # declared offline and its instruction answered for, or the instruction expired). Sending it again
                # cannot succeed; report it instead of recording it as pushed.
                self.store.mark_reply(reply.reply_to, "dropped")
                self.store.bump("dropped.refused")
                self._log({"event": "reply-refused", "reply_to": reply.reply_to[:16]})
                if self._telemetry is not None:
                    self._telemetry.write({"ts": self._wall(), "event": "reply-refused", "reply_to": reply.reply_to})
                continue
            self.store.mark_reply(reply.reply_to, "pushed")
            self.store.bump("replies")
            if self._on_pushed is not None:
                self._on_pushed(reply.reply_to)
            self._last_push = self._monotonic()
            self._log(
                {"event": "pushed", "reply_to": reply.reply_to[:16], "bytes_up": self.fleet.traffic.bytes_up - before}
            )
            if self._telemetry is not None:
                self._telemetry.write(
                    {
                        "ts": self._wall(),
                        "event": "pushed",
                        "reply_to": reply.reply_to,
                        "bytes_up": self.fleet.traffic.bytes_up - before,
                    }
                )

    def _telemetry_write(self, pulled: PulledMessage, *, outcome: str, **fields: Any) -> None:
        if self._telemetry is None:
            return
        m = pulled.metadata
        self._telemetry.write(
            {
                "ts": self._wall(),
                "event": "task",
                "run_id": m.run_id,
                "round": m.group_id,
                "message_type": m.message_type,
                "message_id": pulled.message_id,
                "outcome": outcome,
                **fields,
            }
        )


def _encode_error(message: pb.Message) -> EncodedMessage:
    from .fleet._objects import _with_header, object_id

    content = _with_header("Message", [], message.SerializeToString(deterministic=True))
    oid = object_id(content)
    meta = pb.Metadata()
    meta.CopyFrom(message.metadata)
    meta.message_id = oid
    return EncodedMessage(
        oid, pb.Message(metadata=meta, error=message.error), pb.ObjectTree(object_id=oid), {oid: content}
    )


def new_stop_event() -> threading.Event:
    """An event whose ``wait`` fits :meth:`FleetNode.run`."""
    return threading.Event()


_ = FleetError  # re-exported family root for type checkers reading this module
