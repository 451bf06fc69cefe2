"""A heartbeat stop signal that a test steps by hand, so that "a period passed" is an event, not a sleep."""

from __future__ import annotations

import threading


class SteppedStop:
    """A :class:`flclient._node.StopSignal` whose ``wait`` returns only when the test calls :meth:`tick` (one
    period passed: ``False``) or the owner calls ``set`` (``True``). ``timeouts`` records what each wait asked."""

    def __init__(self) -> None:
        self._go = threading.Semaphore(0)
        self._cv = threading.Condition()
        self._stopped = False
        self.waits = 0
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        with self._cv:
            self.waits += 1
            self.timeouts.append(timeout)
            self._cv.notify_all()
        self._go.acquire()
        return self._stopped

    def set(self) -> None:
        self._stopped = True
        self._go.release()

    def tick(self) -> None:
        """Let one period pass and return once the waiter is waiting again (it has done its periodic work)."""
        with self._cv:
            assert self._cv.wait_for(lambda: self.waits >= 1, timeout=10), "nothing waits on this signal"
            seen = self.waits
        self._go.release()
        with self._cv:
            assert self._cv.wait_for(lambda: self.waits > seen, timeout=10), "the waiter did not come back"
