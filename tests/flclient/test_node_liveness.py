"""Liveness for the node's whole active life, and replies SuperLink refused: reported, never recorded as pushed."""

from __future__ import annotations

from pathlib import Path

from flclient._task import TaskOutcome
from flclient.fleet import MemorySuperLink, MetricRecord, RecordDict

from .stepped import SteppedStop
from .test_node import NOW, FakeExecutor, ManualClock, _device, _train


def test_one_heartbeat_thread_covers_the_whole_loop_and_beats_while_the_task_runs(tmp_path: Path) -> None:
    stops: list[SteppedStop] = []

    def stop() -> SteppedStop:
        stops.append(SteppedStop())
        return stops[-1]

    def long_task(message_type: str, content: RecordDict) -> TaskOutcome:
        stops[0].tick()  # two heartbeat periods pass while the task runs
        stops[0].tick()
        return TaskOutcome({"metrics": MetricRecord({"num-examples": 1})})

    link = MemorySuperLink(clock=lambda: NOW)
    dev = _device(tmp_path, link, FakeExecutor(long_task), heartbeat_stop=stop)
    node_id = dev.node.connect()
    ins = _train(link, node_id)
    dev.node.node_id = None  # run() connects again (412: still online) and refreshes liveness at once
    dev.node.run(lambda seconds: bool(link.delivered()))
    assert len(stops) == 1  # the loop's thread, no second one per task
    after_activate = link.requests[len(link.requests) - 1 - link.requests[::-1].index("activate-node") + 1]
    assert after_activate == "send-node-heartbeat"
    confirmed = link.requests.index("confirm-message-received")
    during = link.requests[confirmed + 1 : link.requests.index("push-messages")]
    assert during == ["send-node-heartbeat", "send-node-heartbeat"]
    assert list(link.delivered()) == [ins.message_id]


def test_a_reply_superlink_refused_is_reported_dropped_not_recorded_as_pushed(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    link = MemorySuperLink(clock=clock)

    def slow(message_type: str, content: RecordDict) -> TaskOutcome:
        clock.advance(120)  # meanwhile SuperLink gave up on the instruction (expired / answered for)
        return TaskOutcome({"metrics": MetricRecord({"num-examples": 1})})

    dev = _device(tmp_path, link, FakeExecutor(slow))
    node_id = dev.node.connect()
    ins = link.queue(node_id, {}, ttl_s=60)
    dev.node.poll_once()
    assert [mid for mid, _ in link.refused] == [link.announced[-1]]
    assert dev.store.reply_states() == {ins.message_id: "dropped"}
    assert dev.store.counters().get("dropped.refused") == 1 and "replies" not in dev.store.counters()
    dev.node.poll_once()  # reported once, never announced again
    assert len(link.announced) == 1


def test_a_complete_reply_announced_again_after_a_crash_counts_as_pushed(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    dev = _device(tmp_path, link)
    node_id = dev.node.connect()
    ins = _train(link, node_id)
    link.lose_answer("push-object")  # every object stored; the last answer lost, the retry answered stored=False
    dev.node.poll_once()
    assert dev.store.reply_states() == {ins.message_id: "pushed"}
    assert list(link.delivered()) == [ins.message_id] and link.refused == []
