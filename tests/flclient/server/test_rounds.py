"""Over-selection, the round deadline and partial aggregation (flclient.server._rounds), on Grid doubles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from flclient.server import RunConfig
from flclient.server._rounds import RoundCollector, RoundRules


@dataclass
class _Meta:
    dst_node_id: int = 0
    reply_to_message_id: str = ""
    src_node_id: int = 0


@dataclass
class _Msg:
    metadata: _Meta
    error: bool = False

    def has_error(self) -> bool:
        return self.error


class TimedGrid:
    """Each node replies ``reply_at[node]`` seconds after its message was pushed (None: never; negative: an
    error reply such as SuperLink's ``node_unavail``); time is the test's manual clock."""

    def __init__(self, reply_at: dict[int, float | None], clock: list[float]) -> None:
        self.reply_at = reply_at
        self.clock = clock
        self.pushed: dict[str, tuple[int, float]] = {}

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        ids = []
        for m in messages:
            mid = f"m{len(self.pushed)}"
            self.pushed[mid] = (m.metadata.dst_node_id, self.clock[0])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[_Msg]:
        out = []
        for mid in message_ids:
            node, at = self.pushed[mid]
            t = self.reply_at.get(node)
            if t is not None and self.clock[0] - at >= abs(t):
                out.append(_Msg(_Meta(reply_to_message_id=mid, src_node_id=node), error=t < 0))
                self.reply_at = {**self.reply_at, node: None}  # one reply per message
        return out


def _collector(grid: TimedGrid, clock: list[float], **rules: Any) -> RoundCollector:
    def sleep(s: float) -> None:
        clock[0] += s

    return RoundCollector(grid, RoundRules(**rules), clock=lambda: clock[0], sleep=sleep)


def _messages(nodes: list[int]) -> list[_Msg]:
    return [_Msg(_Meta(dst_node_id=n)) for n in nodes]


def test_over_selection_asks_ceil_target_times_one_plus_over() -> None:
    rules = RoundRules(target=4, over_selection=0.3)
    assert rules.selection_size(100) == 6 and rules.selection_size(5) == 5
    assert RoundRules(target=10, over_selection=0.3).selection_size(100) == 13
    assert RoundRules().selection_size(7) == 7  # target 0: every available node
    c = RoundCollector(TimedGrid({}, [0.0]), RoundRules(target=4, over_selection=0.5, seed=1))
    picked = c.select(list(range(1, 21)), training=True)
    assert len(picked) == 6 and len(set(picked)) == 6 and set(picked) <= set(range(1, 21))
    assert c.select([3, 1, 2], training=False) == [1, 2, 3]  # evaluation asks everyone


def test_round_closes_as_soon_as_target_updates_arrived() -> None:
    clock = [0.0]
    grid = TimedGrid({1: 1.0, 2: 2.0, 3: 3.0, 4: 50.0, 5: None, 6: -0.5}, clock)
    c = _collector(grid, clock, target=3, over_selection=1.0, deadline_s=10.0, min_replies=2, poll_s=0.5)
    out = c.collect(_messages([1, 2, 3, 4, 5, 6]))
    assert out.closed == "target" and out.successes == 3 and out.aggregate
    assert 3.0 <= out.elapsed_s < 10.0
    assert len(out.replies) == 4  # the three updates and node 6's error reply
    assert out.reply_s == sorted(out.reply_s) and len(out.reply_s) == 3
    # node 4 is still out: its reply in a later round is late and discarded; node 5 never answers
    clock[0] += 60.0
    grid.reply_at = {**grid.reply_at, 7: 0.0}
    nxt = c.collect(_messages([7]))
    assert nxt.late == 1 and c.late_total == 1
    assert [r.metadata.src_node_id for r in nxt.replies] == [7]


def test_deadline_with_enough_replies_aggregates_partially() -> None:
    clock = [0.0]
    grid = TimedGrid({1: 1.0, 2: 2.0, 3: 30.0, 4: None}, clock)
    out = _collector(grid, clock, target=4, deadline_s=10.0, min_replies=2).collect(_messages([1, 2, 3, 4]))
    assert out.closed == "deadline" and out.successes == 2 and out.aggregate
    assert out.to_record()["selected"] == 4 and out.to_record()["aggregated"] is True


def test_deadline_with_too_few_replies_skips_the_round() -> None:
    clock = [0.0]
    grid = TimedGrid({1: 1.0, 2: 30.0, 3: None}, clock)
    out = _collector(grid, clock, target=3, deadline_s=10.0, min_replies=2).collect(_messages([1, 2, 3]))
    assert out.closed == "deadline" and out.successes == 1 and not out.aggregate


def test_every_node_answered_closes_before_the_deadline() -> None:
    clock = [0.0]
    grid = TimedGrid({1: 1.0, 2: -1.0}, clock)
    out = _collector(grid, clock, deadline_s=100.0).collect(_messages([1, 2]))
    assert out.closed == "all-replied" and out.elapsed_s < 100.0 and out.successes == 1


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"target": -1}, "target"),
        ({"over-selection": -0.1}, "over-selection"),
        ({"round-deadline-s": 0}, "round-deadline-s"),
        ({"target": 2, "min-replies": 3}, "min-replies"),
        ({"target": "x"}, "run config"),
    ],
)
def test_bad_rules_are_refused_with_the_key(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RoundRules.from_config(RunConfig.from_run_config(cfg))
