"""The ServerApp's push/pull exchange: replies are pulled every poll until all arrived or the deadline passed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")

from flclient.server._exchange import send_and_receive


@dataclass
class _Meta:
    reply_to_message_id: str


@dataclass
class _Reply:
    metadata: _Meta


@dataclass
class _ScriptedGrid:
    """Push returns ids; each pull returns the replies scheduled for that pull (by pull count)."""

    schedule: dict[int, list[str]]
    pulls: list[list[str]] = field(default_factory=list)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        return [f"id{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> list[_Reply]:
        self.pulls.append(sorted(message_ids))
        return [_Reply(_Meta(m)) for m in self.schedule.get(len(self.pulls), [])]


def _msgs(n: int) -> list[Any]:
    return list(range(n))  # the exchange never looks into a message


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_replies_are_pulled_every_poll_until_all_arrived() -> None:
    grid = _ScriptedGrid({1: ["id1"], 3: ["id0", "id2"]})
    clock = _Clock()
    replies = send_and_receive(grid, _msgs(3), timeout=60, poll_s=0.1, sleep=clock.sleep, clock=clock)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["id0", "id1", "id2"]
    assert grid.pulls == [["id0", "id1", "id2"], ["id0", "id2"], ["id0", "id2"]]  # only the missing ones
    assert clock.sleeps == [0.1, 0.1]  # not flwr's fixed 3 s


def test_the_deadline_leaves_missing_replies_out() -> None:
    grid = _ScriptedGrid({1: ["id0"]})
    clock = _Clock()
    replies = send_and_receive(grid, _msgs(2), timeout=1.0, poll_s=0.25, sleep=clock.sleep, clock=clock)
    assert [r.metadata.reply_to_message_id for r in replies] == ["id0"]
    assert len(grid.pulls) == 5 and clock.now == pytest.approx(1.0)


def test_a_grid_without_push_and_pull_answers_itself() -> None:
    class _Plain:
        def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[str]:
            return [f"reply to {m}" for m in messages]

    replies: list[Any] = send_and_receive(_Plain(), _msgs(1), timeout=1)
    assert replies == ["reply to 0"]
