"""The node loop in process: a FleetNode with a real SQLite state store, a fake task executor and the in-memory
SuperLink, every clock injected. Assertions are on what SuperLink received, not on logs."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flclient import FleetUnavailable, TaskDeclined
from flclient._node import FleetNode, NodeTiming, StopSignal
from flclient._state import StateStore
from flclient._task import TaskOutcome
from flclient.fleet import (
    ConfigRecord,
    EncodedMessage,
    FleetClient,
    MemorySuperLink,
    MetricRecord,
    NodeKey,
    RecordDict,
    RetryPolicy,
)
from flclient.fleet._objects import _with_header, iter_tree_ids, object_id
from flclient.fleet._proto import flclient_fleet_pb2 as pb
from flclient.protocol import ErrorReply

from .stepped import SteppedStop

NOW = 1_800_000_000.0
TIMING = NodeTiming(heartbeat_interval_s=30.0, poll_interval_s=1.0, reply_grace_s=10.0, max_backoff_s=20.0)


class Crash(BaseException):
    """The process dies here (nothing in the node catches a BaseException)."""


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HeldStop:
    """A heartbeat stop signal on which no period ever passes: no background heartbeat during a task."""

    def __init__(self) -> None:
        self._stopped = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait()  # whatever the period: only the end of the task ends the wait

    def set(self) -> None:
        self._stopped.set()


@dataclass
class FakeExecutor:
    """Answers every task with ``answer(message_type, content)`` (or the default metrics), recording each run."""

    answer: Callable[[str, RecordDict], TaskOutcome] | None = None
    runs: list[str] = field(default_factory=list)

    def run(self, message_type: str, content: RecordDict, *, message_id: str) -> TaskOutcome:
        self.runs.append(message_id)
        if self.answer is not None:
            return self.answer(message_type, content)
        config = content["config"]
        assert isinstance(config, ConfigRecord)
        lr = config.values["lr"]
        assert isinstance(lr, float)
        return TaskOutcome({"metrics": MetricRecord({"num-examples": 3, "lr-seen": lr})}, num_examples=3)


def _declining(reason: str, detail: str) -> Callable[[str, RecordDict], TaskOutcome]:
    def answer(message_type: str, content: RecordDict) -> TaskOutcome:
        raise TaskDeclined(reason, detail)

    return answer


def _crashing(message_type: str, content: RecordDict) -> TaskOutcome:
    raise Crash


def _never(message_type: str, content: RecordDict) -> TaskOutcome:
    raise AssertionError("the task ran again")


@dataclass
class Device:
    node: FleetNode
    store: StateStore
    executor: FakeExecutor
    perf: ManualClock
    sleeps: list[float]


def _device(
    state_dir: Path,
    link: MemorySuperLink,
    executor: FakeExecutor | None = None,
    *,
    heartbeat_stop: Callable[[], StopSignal] = HeldStop,
) -> Device:
    """A device as flclient.Client builds one (key in the state store), on ``state_dir``, at ``link``."""
    store = StateStore(state_dir / "state.db", clock=lambda: NOW)
    pem = store.get_meta("node_key")
    if pem is None:
        key = NodeKey.generate()
        store.set_meta("node_key", key.to_pem())
    else:
        key = NodeKey.from_pem(pem)
    sleeps: list[float] = []
    fleet = FleetClient(
        link,
        key,
        retry=RetryPolicy(max_attempts=3),
        clock=lambda: NOW,
        sleep=sleeps.append,
        rng=random.Random(0),
    )
    executor = executor or FakeExecutor()
    perf = ManualClock(100.0)
    node = FleetNode(
        fleet=fleet,
        store=store,
        executor=executor,  # type: ignore[arg-type]  # duck-typed: the node only calls run()
        timing=TIMING,
        log=lambda record: None,
        monotonic=ManualClock(5000.0),
        wall=lambda: NOW,
        perf=perf,
        heartbeat_stop=heartbeat_stop,
    )
    return Device(node, store, executor, perf, sleeps)


def _restart(state_dir: Path, link: MemorySuperLink, executor: FakeExecutor, old: Device) -> Device:
    """The process died: a new node on the same state directory (the old store's connection is closed)."""
    old.store.close()
    return _device(state_dir, link, executor)


def _train(link: MemorySuperLink, node_id: int, lr: float = 0.1) -> EncodedMessage:
    return link.queue(node_id, {"config": ConfigRecord({"lr": lr})}, message_type="train")


def _connected(tmp_path: Path, executor: FakeExecutor | None = None) -> tuple[MemorySuperLink, Device, int]:
    link = MemorySuperLink(clock=lambda: NOW)
    dev = _device(tmp_path, link, executor)
    return link, dev, dev.node.connect()


def _metrics(link: MemorySuperLink, instruction_id: str) -> dict[str, Any]:
    content = link.reply_content(instruction_id)
    assert content is not None
    metrics = content["metrics"]
    assert isinstance(metrics, MetricRecord)
    return dict(metrics.values)


def test_a_round_reaches_superlink_as_one_reply_from_this_node(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path)
    ins = _train(link, node_id, lr=0.25)
    assert dev.node.poll_once() == 1
    assert dev.executor.runs == [ins.message_id]
    (reply,) = link.delivered().values()
    meta = reply.message.metadata
    assert (meta.reply_to_message_id, meta.src_node_id, meta.dst_node_id) == (ins.message_id, node_id, 1)
    assert _metrics(link, ins.message_id)["lr-seen"] == 0.25
    assert link.refused == [] and link.announced == [reply.message_id]
    assert "confirm-message-received" in link.requests
    assert dev.store.reply_states() == {ins.message_id: "pushed"}
    assert dev.node.poll_once() == 0 and dev.executor.runs == [ins.message_id]  # nothing more to do


def test_the_task_time_comes_from_the_injected_perf_clock(tmp_path: Path) -> None:
    dev_holder: list[Device] = []

    def slow(message_type: str, content: RecordDict) -> TaskOutcome:
        dev_holder[0].perf.advance(42.0)  # the task "takes" 42 s on the injected clock
        return TaskOutcome({"metrics": MetricRecord({"num-examples": 1})})

    link, dev, node_id = _connected(tmp_path, FakeExecutor(slow))
    dev_holder.append(dev)
    ins = _train(link, node_id)
    dev.node.poll_once()
    assert link.replies[ins.message_id].runtime_s == 42.0  # the clientapp runtime SuperLink was told
    assert _metrics(link, ins.message_id)["device-s"] == 42.0


# -- (a) resume after a crash -----------------------------------------------------------------------------------------
def test_an_instruction_received_before_a_crash_runs_once_after_restart_and_is_replied_once(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path, FakeExecutor(_crashing))
    ins = _train(link, node_id)
    with pytest.raises(Crash):
        dev.node.poll_once()
    assert [p.state for p in dev.store.pending_instructions()] == ["received"]
    assert link.replies == {}

    after = FakeExecutor()
    dev = _restart(tmp_path, link, after, dev)
    dev.node.poll_once()
    dev.node.poll_once()
    assert after.runs == [ins.message_id]  # run once, from the stored objects (SuperLink freed them on confirm)
    assert list(link.delivered()) == [ins.message_id]
    assert link.announced == [link.replies[ins.message_id].message_id]  # pushed exactly once
    assert link.refused == []
    assert link.requests.count("confirm-message-received") == 1
    assert _metrics(link, ins.message_id)["lr-seen"] == 0.1


@pytest.mark.parametrize("acknowledged", [False, True], ids=["not-pushed", "stored-but-unacknowledged"])
def test_a_reply_stored_before_a_crash_is_pushed_after_restart_without_running_again(
    tmp_path: Path, acknowledged: bool
) -> None:
    link, dev, node_id = _connected(tmp_path)
    ins = _train(link, node_id)
    if acknowledged:
        # SuperLink stores the last object, the answer is lost and the retries get none: the node never learns
        # that the reply arrived (its three objects are pushed one by one after the announcement).
        link.lose_answer("push-object", nth=3)
        link.fail("push-object", nth=4)
        link.fail("push-object", nth=5)
    else:
        first = link.calls["push-messages"] + 1
        for nth in range(first, first + 3):  # every attempt of the announcement goes unanswered
            link.fail("push-messages", nth=nth)
    with pytest.raises(FleetUnavailable, match="gave up after 3 attempts"):
        dev.node.poll_once()
    assert dev.executor.runs == [ins.message_id]
    assert [r.reply_to for r in dev.store.unsent_replies()] == [ins.message_id]
    assert bool(link.delivered()) == acknowledged

    dev = _restart(tmp_path, link, FakeExecutor(_never), dev)
    dev.node.poll_once()
    assert list(link.delivered()) == [ins.message_id]
    assert _metrics(link, ins.message_id)["lr-seen"] == 0.1
    assert link.refused == [] and link.pending_objects() == set()
    assert set(link.announced) == {link.replies[ins.message_id].message_id}  # the same reply, never a second one
    assert dev.store.reply_states() == {ins.message_id: "pushed"}


# -- (b) declined -----------------------------------------------------------------------------------------------------
def test_a_declined_task_is_answered_with_an_error_reply_that_names_the_reason(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path, FakeExecutor(_declining("not-eligible", "battery below 20%")))
    ins = _train(link, node_id)
    dev.node.poll_once()
    assert dev.executor.runs == [ins.message_id]
    error = link.reply_error(ins.message_id)
    assert error is not None and error.code == 2  # CLIENT_APP_RAISED_EXCEPTION
    assert ErrorReply.from_reason(error.reason) == ErrorReply(
        kind="declined", code="not-eligible", detail="battery below 20%"
    )
    assert link.reply_content(ins.message_id) is None
    meta = link.replies[ins.message_id].message.metadata
    assert (meta.src_node_id, meta.reply_to_message_id) == (node_id, ins.message_id)
    assert link.refused == [] and dev.store.counters()["declined"] == 1


# -- (c) content that must never run ----------------------------------------------------------------------------------
def _bad_hash(link: MemorySuperLink, node_id: int) -> EncodedMessage:
    ins = _train(link, node_id)
    victim = next(oid for oid in iter_tree_ids(ins.tree) if link.objects[oid].startswith(b"ConfigRecord"))
    link.objects[victim] = link.objects[victim] + b"tampered"  # no longer hashes to its id
    return ins


def _bad_record(link: MemorySuperLink, node_id: int) -> EncodedMessage:
    """Every object hashes to its id, but the config record is not a valid protobuf."""
    config = _with_header("ConfigRecord", [], b"\xff\xff\xff")
    cid = object_id(config)
    rd = _with_header("RecordDict", [cid], json.dumps({"config": cid}).encode())
    rid = object_id(rd)
    meta = pb.Metadata(
        run_id=1, src_node_id=1, dst_node_id=node_id, group_id="1", ttl=3600, message_type="train", created_at=NOW
    )
    message = _with_header("Message", [rid], pb.Message(metadata=meta).SerializeToString(deterministic=True))
    mid = object_id(message)
    meta.message_id = mid
    tree = pb.ObjectTree(
        object_id=mid, children=[pb.ObjectTree(object_id=rid, children=[pb.ObjectTree(object_id=cid)])]
    )
    return link.queue_message(
        EncodedMessage(mid, pb.Message(metadata=meta), tree, {mid: message, rid: rd, cid: config})
    )


@pytest.mark.parametrize(
    ("corrupt", "why"),
    [(_bad_hash, "does not hash to its id"), (_bad_record, "not a valid protobuf")],
    ids=["bad-object-bytes", "bad-record"],
)
def test_corrupt_content_is_answered_with_an_error_never_run_and_the_next_instruction_runs(
    tmp_path: Path, corrupt: Callable[[MemorySuperLink, int], EncodedMessage], why: str
) -> None:
    link, dev, node_id = _connected(tmp_path)
    bad = corrupt(link, node_id)
    good = _train(link, node_id, lr=0.5)
    dev.node.poll_once()  # SuperLink hands out one instruction per pull
    dev.node.poll_once()
    assert dev.executor.runs == [good.message_id]
    error = link.reply_error(bad.message_id)
    assert error is not None
    rejected = ErrorReply.from_reason(error.reason)
    assert (rejected.kind, rejected.code) == ("rejected", "undecodable") and why in rejected.detail
    assert _metrics(link, good.message_id)["lr-seen"] == 0.5
    assert set(link.delivered()) == {bad.message_id, good.message_id} and link.refused == []
    assert dev.store.pending_instructions() == []


# -- (d) lost answers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["push-messages", "push-object"])
def test_a_lost_push_answer_still_delivers_the_reply_exactly_once(tmp_path: Path, call: str) -> None:
    link, dev, node_id = _connected(tmp_path)
    ins = _train(link, node_id)
    link.lose_answer(call)
    dev.node.poll_once()
    dev.node.poll_once()
    assert dev.executor.runs == [ins.message_id]
    assert list(link.delivered()) == [ins.message_id]
    reply_id = link.replies[ins.message_id].message_id
    assert link.announced == [reply_id] * (2 if call == "push-messages" else 1)  # the same reply, repeated
    assert link.refused == [] and link.pending_objects() == set()
    assert dev.store.reply_states() == {ins.message_id: "pushed"}


def test_a_push_that_fails_for_a_whole_pass_is_delivered_once_after_the_loop_reconnects(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path)
    ins = _train(link, node_id)
    link.lose_answer("push-messages")  # taken, answer lost; then two retries without any answer: the pass fails
    link.fail("push-messages", nth=2)
    link.fail("push-messages", nth=3)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return bool(link.delivered()) or len(waits) > 5

    dev.node.run(wait)
    assert dev.executor.runs == [ins.message_id]
    assert list(link.delivered()) == [ins.message_id]
    assert link.announced == [link.replies[ins.message_id].message_id] * 2
    assert link.refused == [] and len(waits) == 2 and waits[0] > 0  # one backoff, then stopped once delivered


def test_a_lost_pull_answer_loses_the_instruction_as_with_superlink(tmp_path: Path) -> None:
    link, dev, node_id = _connected(tmp_path)
    lost = _train(link, node_id)
    kept = _train(link, node_id, lr=0.3)
    link.lose_answer("pull-messages")
    dev.node.poll_once()  # the lost answer is retried: SuperLink hands out the next instruction
    assert dev.executor.runs == [kept.message_id]
    assert list(link.delivered()) == [kept.message_id] and lost.message_id not in link.replies


# -- heartbeats while a task runs -------------------------------------------------------------------------------------
def test_a_long_task_heartbeats_once_per_period_on_the_injected_signal(tmp_path: Path) -> None:
    stops: list[SteppedStop] = []

    def stop() -> SteppedStop:
        stops.append(SteppedStop())
        return stops[-1]

    def long_task(message_type: str, content: RecordDict) -> TaskOutcome:
        stops[-1].tick()  # two heartbeat periods pass while the task runs
        stops[-1].tick()
        return TaskOutcome({"metrics": MetricRecord({"num-examples": 1})})

    link = MemorySuperLink(clock=lambda: NOW)
    dev = _device(tmp_path, link, FakeExecutor(long_task), heartbeat_stop=stop)
    node_id = dev.node.connect()
    ins = _train(link, node_id)
    dev.node.poll_once()
    confirmed = link.requests.index("confirm-message-received")
    during = link.requests[confirmed + 1 : link.requests.index("push-messages")]
    assert during == ["send-node-heartbeat", "send-node-heartbeat"]
    assert len(stops) == 1 and stops[0].timeouts == [10.0] * 3  # a third of the 30 s interval, until the end
    assert list(link.delivered()) == [ins.message_id]


# -- SuperLink restarts ---------------------------------------------------------------------------------------------
def test_a_node_registers_again_with_a_superlink_that_lost_its_state(tmp_path: Path) -> None:
    link, dev, _ = _connected(tmp_path)
    link.forget_nodes()  # SuperLink restarted with in-memory state
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= 4

    dev.node.run(wait)
    node_id = dev.store.get_meta("node_id")
    assert link.requests.count("register-node") == 2
    assert node_id is not None and link.node_online(int(node_id))
