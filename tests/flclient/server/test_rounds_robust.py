"""Lost tasks re-issued within the deadline, and replies counted by the node asked (flclient.server._rounds)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flclient.server._rounds import RoundCollector, RoundRules

from .test_rounds import _messages, _Meta, _Msg


class LossyGrid:
    """Node ``n`` answers ``reply_at[n]`` s after a message was pushed to it; the first message to each node in
    ``lose_first`` is lost (its device never saw it). ``unavailable`` nodes get SuperLink's error reply, whose
    source is SuperLink (id 1), at once. ``answers_twice`` nodes answer every copy they were sent."""

    def __init__(
        self,
        reply_at: dict[int, float],
        clock: list[float],
        *,
        lose_first: frozenset[int] = frozenset(),
        unavailable: frozenset[int] = frozenset(),
        online: frozenset[int] | None = None,
    ) -> None:
        self.reply_at, self.clock = reply_at, clock
        self.lose_first, self.unavailable = set(lose_first), unavailable
        self.online = online
        self.pushed: dict[str, tuple[int, float, bool]] = {}
        self.answered: set[str] = set()

    def get_node_ids(self) -> list[int]:
        return sorted(self.online if self.online is not None else self.reply_at)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        ids = []
        for m in messages:
            node = m.metadata.dst_node_id
            mid = f"m{len(self.pushed)}"
            lost = node in self.lose_first
            self.lose_first.discard(node)
            self.pushed[mid] = (node, self.clock[0], lost)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[_Msg]:
        out = []
        for mid in message_ids:
            node, at, lost = self.pushed[mid]
            if lost or mid in self.answered:
                continue
            if node in self.unavailable:
                self.answered.add(mid)
                out.append(_Msg(_Meta(reply_to_message_id=mid, src_node_id=1), error=True))
            elif self.clock[0] - at >= self.reply_at[node]:
                self.answered.add(mid)
                out.append(_Msg(_Meta(reply_to_message_id=mid, src_node_id=node)))
        return out


@dataclass
class _FlowerError:
    code: int = 1
    reason: str = "Node Unavailable"


@dataclass
class _Unavailable:
    """SuperLink's error reply as decode_replies reads it."""

    metadata: _Meta
    error: _FlowerError = field(default_factory=_FlowerError)

    def has_error(self) -> bool:
        return True


def _copy(m: _Msg) -> _Msg:
    return _Msg(_Meta(dst_node_id=m.metadata.dst_node_id))


def _collector(grid: LossyGrid, clock: list[float], **rules: Any) -> RoundCollector:
    def sleep(s: float) -> None:
        clock[0] += s

    return RoundCollector(grid, RoundRules(**rules), clock=lambda: clock[0], sleep=sleep, copy=_copy)


def test_a_task_whose_pull_answer_was_lost_is_sent_again_and_answered_before_the_deadline() -> None:
    clock = [0.0]
    grid = LossyGrid({1: 1.0, 2: 1.0, 3: 1.0}, clock, lose_first=frozenset({2}))
    out = _collector(grid, clock, deadline_s=10.0, poll_s=0.5).collect(_messages([1, 2, 3]))
    assert out.closed == "all-replied" and out.successes == 3 and out.reissued == 1
    assert out.elapsed_s < 10.0 and out.duplicates == 0
    assert [n for n, _, _ in grid.pushed.values()] == [1, 2, 3, 2]  # only the silent node was asked again


def test_a_slow_node_answering_both_copies_counts_once_and_one_duplicate() -> None:
    clock = [0.0]
    grid = LossyGrid({1: 1.0, 2: 6.0}, clock)
    collector = _collector(grid, clock, deadline_s=10.0, poll_s=0.5)
    out = collector.collect(_messages([1, 2]))
    assert out.successes == 2 and out.reissued == 1 and len(out.replies) == 2
    clock[0] += 10.0  # the second copy's answer arrives during the next round: a duplicate, not late work
    nxt = collector.collect(_messages([1]))
    assert nxt.duplicates == 1 and nxt.late == 0


def test_no_reissue_for_a_node_gone_offline_or_when_turned_off() -> None:
    clock = [0.0]
    grid = LossyGrid({1: 1.0, 2: 1.0}, clock, lose_first=frozenset({2}), online=frozenset({1}))
    out = _collector(grid, clock, deadline_s=4.0, poll_s=0.5).collect(_messages([1, 2]))
    assert out.reissued == 0 and out.closed == "deadline" and out.successes == 1
    clock = [0.0]
    grid = LossyGrid({1: 1.0, 2: 1.0}, clock, lose_first=frozenset({2}))
    out = _collector(grid, clock, deadline_s=4.0, poll_s=0.5, reissue_after=0).collect(_messages([1, 2]))
    assert out.reissued == 0 and out.closed == "deadline"


def test_superlink_error_replies_are_counted_for_the_node_asked_not_as_duplicates() -> None:
    from flclient.server._decode import decode_replies

    clock = [0.0]
    grid = LossyGrid({1: 1.0, 2: 1.0, 3: 1.0}, clock, unavailable=frozenset({2, 3}))
    out = _collector(grid, clock, deadline_s=4.0, poll_s=0.5).collect(_messages([1, 2, 3]))
    assert out.errors == 2 and out.successes == 1
    err = [_Unavailable(r.metadata) for r in out.replies if r.has_error()]
    assert {r.metadata.src_node_id for r in err} == {1}  # SuperLink's id on both
    decoded = decode_replies(
        err,  # type: ignore[arg-type]
        training=True,
        shared={},
        node_of=out.node_of,
    )
    assert decoded.duplicates == 0 and set(decoded.per_node) == {2, 3}
    assert decode_replies(err, training=True, shared={}).duplicates == 1  # what counting by source id said


def test_reissue_after_must_be_a_fraction() -> None:
    import pytest

    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="reissue_after"):
            RoundRules(reissue_after=bad)


def _train_replies(nodes: list[int]) -> list[Any]:
    import numpy as np
    from flwr import app as flwr_app

    out = []
    for n in nodes:
        ask = flwr_app.Message(flwr_app.RecordDict({}), dst_node_id=n, message_type="train")
        rd = flwr_app.RecordDict(
            {
                "arrays": flwr_app.ArrayRecord({"w": flwr_app.Array(np.full((2,), float(n)))}),
                "metrics": flwr_app.MetricRecord({"num-examples": 10}),
            }
        )
        out.append(flwr_app.Message(rd, reply_to=ask))
    return out


def test_a_reply_whose_verification_blows_up_fails_alone_and_the_others_decode(flower_run: None) -> None:
    import numpy as np

    from flclient.server._decode import decode_replies

    calls: list[Any] = []

    def refuse(reply: Any) -> str | None:
        calls.append(reply)
        if len(calls) == 1:
            raise RecursionError("maximum recursion depth exceeded")  # what a hostile nesting provoked
        return None

    decoded = decode_replies(_train_replies([7, 8]), training=True, shared={"w": np.zeros(2)}, refuse=refuse)
    assert len(calls) == 2 and len(decoded.updates) == 1
    np.testing.assert_array_equal(decoded.updates[0].parameters["w"], [8.0, 8.0])
    assert decoded.failures == {"bad-reply: RecursionError": 1}
