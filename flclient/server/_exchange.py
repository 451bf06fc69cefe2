"""Push messages to the SuperLink and pull their replies, polling every ``poll_s`` instead of flwr's fixed 3 s.

``flwr``'s ``Grid.send_and_receive`` sleeps 3 s between pulls, so a round whose devices answer in 50 ms still
takes 3 s; over the tens of rounds of an experiment (and the four stages of a SecAgg round) that sleeping is most
of the wall time. This is the same push-then-pull loop with a short, injectable poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message

__all__ = ["send_and_receive"]

POLL_S = 0.1


def send_and_receive(
    grid: Any,
    messages: Iterable[Message],
    *,
    timeout: float,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Message]:
    """The replies to ``messages`` that arrive within ``timeout`` seconds (those that do not are left out).

    A grid without ``push_messages``/``pull_messages`` (an in-process test double) answers through its own
    ``send_and_receive``.
    """
    if not (hasattr(grid, "push_messages") and hasattr(grid, "pull_messages")):
        return list(grid.send_and_receive(messages, timeout=timeout))
    pending = set(grid.push_messages(messages))
    deadline = clock() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or clock() >= deadline:
            break
        sleep(poll_s)
    return replies
