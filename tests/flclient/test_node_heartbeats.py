"""Heartbeats keep going while a task runs, so that a long training round does not make SuperLink count the
node offline (after twice its interval) and drop its reply."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flclient._node import BackgroundHeartbeats


def test_heartbeats_are_sent_while_the_task_runs_and_stop_after_it() -> None:
    three = threading.Event()
    calls: list[int] = []

    def beat() -> bool:
        calls.append(1)
        if len(calls) >= 3:
            three.set()
        return True

    with BackgroundHeartbeats(beat, 0.005, lambda r: None) as hb:
        assert three.wait(10), "no heartbeats while the task was running"  # the "task": waits for three beats
    hb._thread.join(10)
    assert not hb._thread.is_alive()
    after = len(calls)
    assert after >= 3 and hb.beats == after
    threading.Event().wait(0.05)
    assert len(calls) == after  # stopped with the task


def test_a_failing_heartbeat_is_logged_and_the_next_one_still_goes() -> None:
    logged: list[dict[str, Any]] = []
    recovered = threading.Event()
    calls: list[int] = []

    def beat() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("link down")
        recovered.set()
        return True

    with BackgroundHeartbeats(beat, 0.005, logged.append):
        assert recovered.wait(10)
    assert logged[0]["event"] == "heartbeat-error" and logged[0]["reason"] == "link down"


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_s"):
        BackgroundHeartbeats(lambda: True, 0.0, lambda r: None)


def test_one_heartbeat_per_period_on_an_injected_stop_signal() -> None:
    from .stepped import SteppedStop

    stop = SteppedStop()
    calls: list[int] = []
    with BackgroundHeartbeats(lambda: calls.append(1), 7.5, lambda r: None, stop=stop) as hb:
        stop.tick()
        stop.tick()
        assert calls == [1, 1]  # one beat per period that passed, none without
    hb._thread.join(10)
    assert not hb._thread.is_alive() and hb.beats == 2 and calls == [1, 1]
    assert stop.timeouts == [7.5, 7.5, 7.5]  # waited a period each time, the last wait ended by the task's end
