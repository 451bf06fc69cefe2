"""Round rules of the ServerApp: over-selection, a round deadline and partial aggregation.

Production FL asks more devices than it needs (some drop out), closes the round when enough replies arrived or
at a deadline, and aggregates what arrived in time if that is enough; replies arriving after the round closed are
discarded and counted (Bonawitz et al., "Towards Federated Learning at Scale", 2019). The run-config keys
``target``, ``over-selection``, ``round-deadline-s``, ``min-replies``, ``selection-seed``, ``round-poll-s`` and
``eval-target`` set the rules (see ``docs/run-config.md``).

:class:`RoundCollector` uses the Grid's ``push_messages`` / ``pull_messages`` so that a round closes as soon as
``target`` replies arrived, not at the next fixed poll of ``send_and_receive``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..protocol import RunConfig

__all__ = ["RoundCollection", "RoundCollector", "RoundRules", "RoundsGrid"]

_MAX_OUTSTANDING = 100_000  # instruction ids of closed rounds still watched for late replies


class _Metadata(Protocol):
    @property
    def reply_to_message_id(self) -> str: ...

    @property
    def src_node_id(self) -> int: ...


class _Reply(Protocol):
    @property
    def metadata(self) -> _Metadata: ...

    def has_error(self) -> bool: ...


class RoundsGrid(Protocol):
    """The part of Flower's ``Grid`` the collector needs (``flwr.serverapp.Grid`` has it)."""

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        """Push instructions; returns their ids (``None`` for one that could not be pushed)."""
        ...

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
        """The replies available now for these instruction ids."""
        ...


@dataclass(frozen=True, kw_only=True)
class RoundRules:
    """How a round selects devices, when it closes and whether it aggregates (see the module docstring)."""

    target: int = 0
    over_selection: float = 0.0
    deadline_s: float = 120.0
    min_replies: int = 1
    poll_s: float = 0.5
    seed: int = 0
    eval_target: int = 0
    reissue_after: float = 0.5  # fraction of the deadline after which an unanswered task is sent again (0: never)

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ValueError(f"target must be >= 0 (0: every available node), got {self.target}")
        if not (self.over_selection >= 0 and math.isfinite(self.over_selection)):
            raise ValueError(f"over-selection must be a finite number >= 0, got {self.over_selection}")
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"round-deadline-s must be positive, got {self.deadline_s}")
        if self.min_replies < 0:
            raise ValueError(f"min-replies must be >= 0, got {self.min_replies}")
        if self.target and self.min_replies > self.target:
            raise ValueError(f"min-replies ({self.min_replies}) must not exceed target ({self.target})")
        if self.eval_target < 0:
            raise ValueError(f"eval-target must be >= 0 (0: every available node), got {self.eval_target}")
        if not self.poll_s > 0:
            raise ValueError(f"round-poll-s must be positive, got {self.poll_s}")
        if not 0 <= self.reissue_after < 1:
            raise ValueError(f"reissue_after must be a fraction of the deadline in [0, 1), got {self.reissue_after}")

    @classmethod
    def from_config(cls, run: RunConfig) -> RoundRules:
        """The rules of a run (its run config was checked when it was parsed)."""
        return cls(
            target=run.target,
            over_selection=run.over_selection,
            deadline_s=run.deadline_s,
            min_replies=run.min_replies,
            poll_s=run.round_poll_s,
            seed=run.selection_rng_seed,
            eval_target=run.eval_target,
            reissue_after=run.reissue_after,
        )

    def selection_size(self, available: int) -> int:
        """How many of ``available`` nodes a training round asks."""
        if not self.target:
            return available
        return min(available, math.ceil(self.target * (1.0 + self.over_selection) - 1e-9))


@dataclass
class RoundCollection:
    """What one round collected: the replies that arrived in time (successes and error replies), the nodes
    asked, how the round closed, and the late replies of earlier rounds discarded meanwhile."""

    selected: list[int]
    replies: list[Any]
    late: int = 0
    closed: str = "all-replied"  # "target" | "all-replied" | "deadline"
    elapsed_s: float = 0.0
    reply_s: list[float] = field(default_factory=list)
    min_replies: int = 1
    started_at: float = 0.0  # wall clock (time.time) when the round's messages were pushed
    push_s: float = 0.0  # how long pushing them took
    pull_s: float = 0.0  # time spent pulling replies
    node_of: dict[str, int] = field(default_factory=dict)  # instruction id -> the node it was sent to
    reissued: int = 0  # tasks sent again to a node still online that had not answered (a lost pull answer)
    duplicates: int = 0  # answers from a node that had answered this round already (a re-issued copy's)

    @property
    def errors(self) -> int:
        """Error replies (declines included), counted once per node asked."""
        return sum(r.has_error() for r in self.replies)

    @property
    def successes(self) -> int:
        """Replies without an error."""
        return sum(not r.has_error() for r in self.replies)

    @property
    def aggregate(self) -> bool:
        """Whether enough updates arrived in time to aggregate (partial aggregation)."""
        return self.successes >= self.min_replies and self.successes > 0

    def to_record(self) -> dict[str, Any]:
        """Fields for the round's metrics record."""
        times = sorted(self.reply_s)
        return {
            "selected": len(self.selected),
            "started_at": self.started_at,
            "push_s": self.push_s,
            "close_s": self.push_s + self.elapsed_s,
            "pull_s": self.pull_s,
            "late": self.late,
            "closed": self.closed,
            "aggregated": self.aggregate,
            "successes": self.successes,
            "errors": self.errors,
            "reissued": self.reissued,
            "reply_s_p50": _percentile(times, 50),
            "reply_s_p99": _percentile(times, 99),
        }


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


class RoundCollector:
    """Runs rounds on a Grid by the :class:`RoundRules`; remembers closed rounds' instructions to count late
    replies (swept once per round, after it closed, so that a round's own polls stay cheap). The clock and the
    sleep are injected (tests pass a manual clock).

    Replies are counted by the node the instruction was sent to (SuperLink's own "Node Unavailable" errors carry
    its id as source, not the node's). A task still unanswered after ``reissue_after`` of the deadline, whose
    node is still online (``grid.get_node_ids``), is sent once more (``copy`` builds the fresh message): the
    pull-messages answer that handed it out may have been lost, or the device killed before it stored it, and
    SuperLink never hands a message out twice. The first answer of a node is taken; a second one is a duplicate.
    """

    def __init__(
        self,
        grid: RoundsGrid,
        rules: RoundRules,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        copy: Callable[[Any], Any] | None = None,
    ) -> None:
        self.grid = grid
        self._copy = copy if copy is not None else _fresh_copy
        self.rules = rules
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = random.Random(rules.seed)
        self._outstanding: dict[str, bool] = {}  # closed rounds' instruction ids -> whether the node answered
        self.late_total = 0

    def select(self, nodes: Sequence[int], *, training: bool) -> list[int]:
        """The nodes a round asks: a random ``selection_size`` subset for training, ``eval_target`` (0: every
        node) for evaluation."""
        ordered = sorted(nodes)
        if training:
            k = self.rules.selection_size(len(ordered))
        else:
            k = min(len(ordered), self.rules.eval_target or len(ordered))
        return sorted(self._rng.sample(ordered, k)) if k < len(ordered) else ordered

    def collect(self, messages: Sequence[Any], *, training: bool = True) -> RoundCollection:
        """Push ``messages`` (one per selected node, see :meth:`select`) and collect replies until ``target``
        successes (training rounds), every node answered, or the deadline."""
        selected = [int(m.metadata.dst_node_id) for m in messages]
        started_at = self._wall()
        before = self._clock()
        pushed = list(self.grid.push_messages(messages))
        ids = [i for i in pushed if i]
        start = self._clock()
        pending = set(ids)
        out = RoundCollection(
            selected=selected,
            replies=[],
            min_replies=self.rules.min_replies if training else 0,
            started_at=started_at,
            push_s=start - before,
        )
        if len(pushed) == len(messages):
            out.node_of = {mid: node for mid, node in zip(pushed, selected, strict=True) if mid}
        by_node = {node: m for m, node in zip(messages, selected, strict=True)}
        answered: set[int] = set()
        reissue_at = self.rules.reissue_after * self.rules.deadline_s if self.rules.reissue_after else math.inf
        want = self.rules.target if training and self.rules.target else len(ids)
        while True:
            if pending:  # only this round's messages: pulling (and inflating) late replies waits for the close
                t = self._clock()
                for reply in self.grid.pull_messages(list(pending)):
                    self._take(reply, pending, out, self._clock() - start, answered)
                out.pull_s += self._clock() - t
            elapsed = self._clock() - start
            if out.successes >= want and training and self.rules.target:
                out.closed = "target"
                break
            if not pending:
                out.closed = "all-replied"
                break
            if elapsed >= self.rules.deadline_s:
                out.closed = "deadline"
                break
            if elapsed >= reissue_at:
                reissue_at = math.inf
                self._reissue(pending, answered, by_node, out)
            self._sleep(min(self.rules.poll_s, max(0.0, self.rules.deadline_s - elapsed)))
        out.elapsed_s = self._clock() - start
        if self._outstanding:  # earlier rounds' stragglers that answered meanwhile: discarded, counted
            for reply in self.grid.pull_messages(list(self._outstanding)):
                self._take(reply, pending, out, out.elapsed_s, answered)
        for mid in pending:  # still out: a reply from now on is late (or a duplicate, when its node answered)
            self._outstanding[mid] = out.node_of.get(mid) in answered
        while len(self._outstanding) > _MAX_OUTSTANDING:
            del self._outstanding[next(iter(self._outstanding))]
        return out

    def _reissue(self, pending: set[str], answered: set[int], by_node: dict[int, Any], out: RoundCollection) -> None:
        """Send the unanswered tasks of nodes still online once more."""
        get_nodes = getattr(self.grid, "get_node_ids", None)
        if get_nodes is None or not out.node_of:
            return
        online = set(get_nodes())
        silent = sorted({out.node_of[mid] for mid in pending if mid in out.node_of} - answered)
        again = [self._copy(by_node[n]) for n in silent if n in online and n in by_node]
        if not again:
            return
        new_ids = list(self.grid.push_messages(again))
        for mid, msg in zip(new_ids, again, strict=False):
            if mid:
                pending.add(mid)
                out.node_of[mid] = int(msg.metadata.dst_node_id)
                out.reissued += 1

    def _take(self, reply: _Reply, pending: set[str], out: RoundCollection, at_s: float, answered: set[int]) -> None:
        rid = reply.metadata.reply_to_message_id
        if rid in pending:
            pending.discard(rid)
            node = out.node_of.get(rid)
            if node is not None and node in answered:  # the other copy of a re-issued task answered first
                out.duplicates += 1
                return
            if node is not None:
                answered.add(node)
                # the node's other copy, if any, no longer counts as missing
                pending.difference_update([m for m in pending if out.node_of.get(m) == node])
                for m in [m for m, n in out.node_of.items() if n == node and m != rid]:
                    self._outstanding[m] = True
            out.replies.append(reply)
            if not reply.has_error():
                out.reply_s.append(at_s)
        elif rid in self._outstanding:
            node_answered = self._outstanding.pop(rid)
            if node_answered:  # a re-issued copy answered after its node's first answer
                out.duplicates += 1
            elif not reply.has_error():  # an update after its round closed; errors (node gone) are not late work
                out.late += 1
                self.late_total += 1


def _fresh_copy(message: Any) -> Any:
    """A new Flower message with the same content, type, group and destination (a new id when pushed)."""
    from flwr.app import Message

    meta = message.metadata
    return Message(
        content=message.content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
        ttl=meta.ttl,
    )
