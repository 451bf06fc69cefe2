"""The participation gate: may this device start a round, may it go on, and how long it backs off after a stop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from .._errors import RoundAbandoned
from ._compat import DeviceCapabilities, TaskRequirements, check_compatibility
from ._policy import Decision, EligibilityPolicy, Reason
from ._signals import SignalSource

__all__ = ["Clock", "ManualClock", "ParticipationGate", "RoundMonitor", "RoundOutcome", "SystemClock"]

U = TypeVar("U")


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock in seconds; injected so tests and the simulator control time."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary fixed point; never goes backwards."""
        ...


class SystemClock:
    """The real monotonic clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def monotonic(self) -> float:
        """The current time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (>= 0)."""
        if not seconds >= 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds})")
        self._now += seconds


@dataclass(frozen=True, kw_only=True)
class RoundOutcome:
    """How a round went on this device: ``completed``, ``not_eligible`` (declined at start) or ``abandoned``.

    ``uploaded`` is True only for ``completed``; an abandoned round never sends a partial update.
    """

    status: str
    reasons: tuple[str, ...] = ()
    uploaded: bool = False
    checks_during_round: int = 0

    def to_reply(self) -> dict[str, object]:
        """What the coordinator is told; a decline or an abandon is "not eligible", not a failure."""
        if self.status == "completed":
            return {"status": "completed"}
        return {"status": "not_eligible", "reasons": list(self.reasons), "abandoned": self.status == "abandoned"}


class ParticipationGate:
    """Decides from device signals, the policy and the task whether this device takes part.

    Example::

        gate = ParticipationGate(policy=EligibilityPolicy(), signals=DeviceSignals(), clock=SystemClock())
        outcome = gate.run_round(train=lambda checkpoint: fit(on_step=checkpoint), upload=send)
    """

    def __init__(
        self,
        *,
        policy: EligibilityPolicy,
        signals: SignalSource,
        clock: Clock,
        capabilities: DeviceCapabilities | None = None,
    ) -> None:
        self.policy = policy
        self.signals = signals
        self.clock = clock
        self.capabilities = capabilities
        self._failures = 0
        self._backoff_until = float("-inf")

    @property
    def backoff_until(self) -> float:
        """Clock time before which :meth:`may_start` declines with ``backoff`` (-inf when not backing off)."""
        return self._backoff_until

    def may_start(self, task: TaskRequirements | None = None) -> Decision:
        """The may-start decision: backoff, then every signal, then the compatibility matrix for ``task``."""
        if self.clock.monotonic() < self._backoff_until:
            return Decision(eligible=False, phase="start", reasons=(Reason.BACKOFF,))
        decision = self.policy.evaluate(self.signals.read(), phase="start")
        if task is None:
            return decision
        if self.capabilities is None:
            raise ValueError("a task with requirements needs the gate's capabilities (pass capabilities=...)")
        extra = check_compatibility(task, self.capabilities)
        if not extra:
            return decision
        reasons = decision.reasons + tuple(r for r in extra if r not in decision.reasons)
        return Decision(eligible=False, phase="start", reasons=reasons, checks=decision.checks)

    def may_continue(self) -> Decision:
        """The may-continue decision (the looser rules: the hysteresis)."""
        return self.policy.evaluate(self.signals.read(), phase="continue")

    def record_abandoned(self) -> float:
        """Back off after an abandoned round: exponential from ``backoff_initial_s``; returns the delay."""
        p = self.policy
        delay = min(p.backoff_initial_s * p.backoff_multiplier**self._failures, p.backoff_max_s)
        self._failures += 1
        self._backoff_until = self.clock.monotonic() + delay
        return delay

    def record_completed(self) -> None:
        """A round completed: forget earlier backoffs."""
        self._failures = 0
        self._backoff_until = float("-inf")

    def monitor(self) -> RoundMonitor:
        """A :class:`RoundMonitor` for one round."""
        return RoundMonitor(self)

    def run_round(
        self,
        *,
        train: Callable[[Callable[[], None]], U],
        upload: Callable[[U], None],
        task: TaskRequirements | None = None,
    ) -> RoundOutcome:
        """Gate a whole round: decide, train with checkpoints, check once more, upload.

        ``train`` receives ``checkpoint``: call it between training steps; it raises :class:`RoundAbandoned` when
        a continue check fails (it re-checks at most every ``check_interval_s``). ``upload`` runs only when every
        check passed, so an abandoned round leaves nothing half-sent; the gate then backs off.
        """
        start = self.may_start(task)
        if not start.eligible:
            return RoundOutcome(status="not_eligible", reasons=tuple(r.value for r in start.reasons))
        monitor = RoundMonitor(self)
        try:
            update = train(monitor.checkpoint)
            monitor.check_now()
        except RoundAbandoned as exc:
            return RoundOutcome(status="abandoned", reasons=exc.reasons, checks_during_round=monitor.checks)
        upload(update)
        self.record_completed()
        return RoundOutcome(status="completed", uploaded=True, checks_during_round=monitor.checks)


class RoundMonitor:
    """Re-evaluates may-continue during a round: between steps (:meth:`checkpoint`) and on a timer (:meth:`watch`).

    The first failed check records the decision in ``abandoned``, makes the gate back off and raises
    :class:`RoundAbandoned`; every later checkpoint raises it again, so a training loop cannot miss it.
    """

    def __init__(self, gate: ParticipationGate, *, interval_s: float | None = None) -> None:
        self.gate = gate
        self.interval_s = gate.policy.check_interval_s if interval_s is None else interval_s
        if not self.interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, got {self.interval_s}")
        self.abandoned: Decision | None = None
        self.checks = 0
        self._last = gate.clock.monotonic()
        self._pending: Decision | None = None

    def _abandon(self, decision: Decision) -> RoundAbandoned:
        if self.abandoned is None:
            self.abandoned = decision
            self.gate.record_abandoned()
        return RoundAbandoned(tuple(r.value for r in self.abandoned.reasons))

    def check_now(self) -> None:
        """Check may-continue now; raise :class:`RoundAbandoned` if the round must stop."""
        if self.abandoned is not None:
            raise self._abandon(self.abandoned)
        if self._pending is not None:
            raise self._abandon(self._pending)
        self.checks += 1
        self._last = self.gate.clock.monotonic()
        decision = self.gate.may_continue()
        if not decision.eligible:
            raise self._abandon(decision)

    def checkpoint(self) -> None:
        """Call between training steps: checks when ``interval_s`` has passed (or a watcher found a problem)."""
        if (
            self.abandoned is not None
            or self._pending is not None
            or self.gate.clock.monotonic() - self._last >= self.interval_s
        ):
            self.check_now()

    async def watch(self, sleep: Callable[[float], Awaitable[None]]) -> Decision:
        """Check every ``interval_s`` until a check fails; return that decision (the next checkpoint raises).

        Run it as a task beside an async training loop and cancel it when the round ends.
        """
        while True:
            await sleep(self.interval_s)
            self.checks += 1
            decision = self.gate.may_continue()
            if not decision.eligible:
                self._pending = decision
                return decision
