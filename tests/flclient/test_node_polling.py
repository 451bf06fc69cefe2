"""Idle traffic of the node loop: an idle device backs its polling off to the heartbeat interval and polls fast again
once a round is in progress. One manual clock drives the node, the Fleet client and the in-memory SuperLink; the
loop's ``wait`` advances it, so an idle hour takes no time."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flclient._node import FleetNode, NodeTiming
from flclient._state import StateStore
from flclient.fleet import ConfigRecord, FleetClient, MemorySuperLink, NodeKey, RetryPolicy
from flclient.fleet._transport import TransportResponse

from .test_node import FakeExecutor, HeldStop, ManualClock

START = 1_800_000_000.0
TIMING = NodeTiming(heartbeat_interval_s=30.0, poll_interval_s=1.0, reply_grace_s=10.0, max_backoff_s=20.0)


@dataclass
class Recording:
    """A transport in front of the in-memory SuperLink that notes each call's name and time."""

    link: MemorySuperLink
    clock: ManualClock
    calls: list[tuple[float, str]] = field(default_factory=list)

    def post(self, path: str, content: bytes, headers: Mapping[str, str], timeout_s: float) -> TransportResponse:
        self.calls.append((self.clock.now, path.rsplit("/", 1)[-1]))
        return self.link.post(path, content, headers, timeout_s)

    def close(self) -> None:
        self.link.close()

    def between(self, start: float, end: float, name: str | None = None) -> list[float]:
        return [t for t, n in self.calls if start <= t < end and (name is None or n == name)]


def _device(tmp_path: Path, timing: NodeTiming = TIMING) -> tuple[FleetNode, Recording, ManualClock]:
    clock = ManualClock(START)
    link = MemorySuperLink(clock=clock)
    wire = Recording(link, clock)
    store = StateStore(tmp_path / "state.db", clock=clock)
    key = NodeKey.generate()
    store.set_meta("node_key", key.to_pem())
    fleet = FleetClient(wire, key, retry=RetryPolicy(max_attempts=3), clock=clock, rng=random.Random(0))
    node = FleetNode(
        fleet=fleet,
        store=store,
        executor=FakeExecutor(),  # type: ignore[arg-type]  # duck-typed: the node only calls run()
        timing=timing,
        log=lambda record: None,
        monotonic=clock,
        wall=clock,
        perf=clock,
        heartbeat_stop=HeldStop,
    )
    return node, wire, clock


def _until(clock: ManualClock, end: float, at: Callable[[float], None] | None = None) -> Callable[[float], bool]:
    """A ``wait`` that lets the injected time pass and stops the loop at ``end``; ``at(now)`` runs after each wait."""

    def wait(seconds: float) -> bool:
        assert seconds >= 0
        clock.advance(seconds)
        if at is not None:
            at(clock.now)
        return clock.now >= end

    return wait


def test_an_idle_node_sends_at_most_eight_requests_a_minute_at_a_30_s_heartbeat(tmp_path: Path) -> None:
    node, wire, clock = _device(tmp_path)
    node.run(_until(clock, START + 10 * 60))
    for minute in range(2, 10):  # once backed off (the first minute ramps up from 1 s)
        start = START + minute * 60
        pulls = wire.between(start, start + 60, "pull-messages")
        beats = wire.between(start, start + 60, "send-node-heartbeat")
        assert len(pulls) <= 2, (minute, pulls)
        assert len(beats) <= 6, (minute, beats)
        assert len(wire.between(start, start + 60)) <= 8
    assert len(wire.between(START, START + 60, "pull-messages")) >= 5  # it did start fast


def test_idle_backoff_keeps_the_heartbeat_pace_so_superlink_never_sees_the_node_offline(tmp_path: Path) -> None:
    node, wire, clock = _device(tmp_path)
    node.run(_until(clock, START + 15 * 60))
    beats = [START, *wire.between(START, START + 15 * 60, "send-node-heartbeat")]  # activation counts as one
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) <= TIMING.heartbeat_interval_s / 3 + 1e-9
    assert node.node_id is not None and wire.link.node_online(node.node_id)


def test_polling_is_fast_again_once_an_instruction_arrives(tmp_path: Path) -> None:
    node, wire, clock = _device(tmp_path)
    queued: list[float] = []

    def maybe_queue(now: float) -> None:
        if not queued and now >= START + 300 and node.node_id is not None:  # after five idle minutes
            queued.append(now)
            wire.link.queue(node.node_id, {"config": ConfigRecord({"lr": 0.1})}, message_type="train")

    node.run(_until(clock, START + 400, maybe_queue))
    assert list(wire.link.delivered())  # the round was answered
    served = next(t for t, n in wire.calls if n == "push-messages")
    assert served - queued[0] <= TIMING.idle_poll_cap_s  # picked up within one backed-off pause
    after = wire.between(served, served + 8, "pull-messages")
    assert len(after) >= 3  # polled at 0, 1, 2, 4 s after the reply: the backoff restarted from poll_interval_s
    assert after[1] - after[0] <= TIMING.poll_interval_s


@pytest.mark.parametrize("cap", [5.0, 60.0])
def test_idle_poll_max_s_caps_the_pause_between_idle_pulls(tmp_path: Path, cap: float) -> None:
    node, wire, clock = _device(
        tmp_path, NodeTiming(heartbeat_interval_s=30.0, poll_interval_s=1.0, idle_poll_max_s=cap)
    )
    node.run(_until(clock, START + 20 * 60))
    pulls = wire.between(START + 5 * 60, START + 20 * 60, "pull-messages")
    gaps = [b - a for a, b in itertools.pairwise(pulls)]
    assert max(gaps) <= cap + 1e-9 and min(gaps) >= cap - 1e-9


def test_idle_poll_max_s_below_the_poll_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_poll_max_s must be at least poll_interval_s"):
        NodeTiming(poll_interval_s=2.0, idle_poll_max_s=1.0)
