"""One virtual device of the live fleet simulator: a thread that speaks the real Fleet API to a SuperLink.

Each device follows its profile (see :mod:`flclient.gate._profiles`): every virtual hour it draws whether it is on
power from ``on_power_by_hour``, runs its real :class:`~flclient.gate.ParticipationGate`, and checks in
(``activate-node``, then polls ``pull-messages``) only while eligible; otherwise it goes offline
(``deactivate-node``). A training instruction takes the modelled download, compute and upload times of the
device (profile bandwidths and speed, scaled by :class:`SimClock`: the device sleeps instead of training a large
model) and trains a tiny linear model for real with numpy. A dropout flips the device's signals mid-round (a
battery device is unplugged, a mains board overheats): the gate abandons the round at its next checkpoint,
nothing is uploaded, and the device goes offline, which SuperLink reports to the ServerApp as ``node_unavail``.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._errors import FLClientError, FleetError, FleetRunNotRunning
from ..fleet import (
    FleetClient,
    HttpxTransport,
    NodeKey,
    PulledMessage,
    RetryPolicy,
    decode_content,
    encode_message,
)
from ..fleet._proto import flclient_fleet_pb2 as pb
from ..protocol import DeviceInfo, EvaluateReply, EvaluateTask, ReplyMetrics, TrainReply, TrainTask, decode_task
from ._fleet import FleetConfig, _VirtualDevice

__all__ = ["DeviceEvent", "EventLog", "SimClock", "VirtualDevice"]

_SUPERLINK_NODE_ID = 1
_HOUR_S = 3600.0


class SimClock:
    """Virtual time: ``start_hour`` o'clock at creation, then ``time_scale`` virtual seconds per wall second."""

    def __init__(
        self, time_scale: float, *, start_hour: float = 0.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if not (time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.time_scale = time_scale
        self.start_s = start_hour * _HOUR_S
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._t0_wall = time.time()

    def now(self) -> float:
        """Virtual seconds since virtual midnight of day 0."""
        return self.start_s + (self._monotonic() - self._t0) * self.time_scale

    def at_wall(self, timestamp: float) -> float:
        """The virtual time at wall-clock ``timestamp`` (``time.time()``)."""
        return self.start_s + (timestamp - self._t0_wall) * self.time_scale

    def hour(self) -> float:
        """The virtual local hour, 0 <= h < 24."""
        return (self.now() / _HOUR_S) % 24.0

    def wall(self, virtual_s: float) -> float:
        """Wall seconds that ``virtual_s`` virtual seconds take."""
        return virtual_s / self.time_scale


@dataclass(frozen=True)
class DeviceEvent:
    """What a device did with one instruction (or with its availability).

    ``outcome``: ``replied`` (an update pushed), ``dropped`` (abandoned mid-round, nothing uploaded),
    ``evaluated``, ``error`` (a Fleet API failure). ``virtual_s``: from the instruction's creation on the server
    to the pushed reply (or the abandonment), in virtual seconds: the device's round time as the server sees it.
    """

    device: int
    device_class: str
    round: str
    outcome: str
    virtual_s: float
    reasons: tuple[str, ...] = ()


class EventLog:
    """Thread-safe list of :class:`DeviceEvent` (the devices write, the simulator reads after the run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[DeviceEvent] = []

    def add(self, event: DeviceEvent) -> None:
        """Record one event."""
        with self._lock:
            self._events.append(event)

    def events(self) -> list[DeviceEvent]:
        """A copy of every event so far."""
        with self._lock:
            return list(self._events)


class _Stopped(Exception):
    """The simulation is over: leave the round."""


class VirtualDevice:
    """A simulated device of one profile, driven by :meth:`run` in its own thread."""

    def __init__(
        self,
        state: _VirtualDevice,
        *,
        url: str,
        clock: SimClock,
        config: FleetConfig,
        true_w: npt.NDArray[np.float64],
        events: EventLog,
        poll_s: float,
        heartbeat_s: float,
        seed: int,
    ) -> None:
        self.state = state
        self.clock = clock
        self.config = config
        self.true_w = true_w
        self.events = events
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self.fleet = FleetClient(
            HttpxTransport(url),
            NodeKey.generate(),
            retry=RetryPolicy(initial_backoff_s=0.2, max_backoff_s=2.0, max_attempts=8, timeout_s=60.0),
            rng=random.Random(seed + 1),
        )
        self.node_id: int | None = None
        self._known_node_id: int | None = None
        self._registered = False
        self._last_heartbeat = 0.0
        self.target = state.x @ (true_w + state.shift)

    @property
    def device_class(self) -> str:
        """The profile id."""
        return self.state.profile.id

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Follow the availability model until ``stop`` is set; then go offline and close the connection."""
        try:
            while not stop.is_set():
                try:
                    self._one_hour(stop)
                except _Stopped:
                    break
                except FLClientError as exc:
                    self.events.add(DeviceEvent(self.state.index, self.device_class, "", "error", 0.0, (str(exc),)))
                    self.node_id = None
                    if stop.wait(1.0 + self.rng.random()):
                        break
        finally:
            self._go_offline()
            self.fleet.close()

    def _one_hour(self, stop: threading.Event) -> None:
        if not self._registered:
            self.fleet.ensure_registered()
            self._registered = True
        now = self.clock.now()
        hour_end = (math.floor(now / _HOUR_S) + 1) * _HOUR_S
        self._sync_gate_clock()
        p = self.state.profile.availability.on_power_by_hour[int(self.clock.hour()) % 24]
        self.state.signals.snapshot = self.state.snapshot(powered=self.rng.random() < p)
        if self.state.gate.may_start().eligible:
            self._serve_until(hour_end, stop)
        else:
            self._go_offline()
            self._wait_wall(self.clock.wall(hour_end - now), stop)

    def _serve_until(self, hour_end: float, stop: threading.Event) -> None:
        if self.node_id is None:
            self.node_id = self._activate()
            self._last_heartbeat = time.monotonic()
        while self.clock.now() < hour_end:
            if time.monotonic() - self._last_heartbeat >= self.heartbeat_s / 3:
                if not self.fleet.heartbeat(self.node_id, self.heartbeat_s):
                    self.node_id = self._activate()
                self._last_heartbeat = time.monotonic()
            pulled = self.fleet.pull_messages(self.node_id)
            for msg in pulled:
                if not self._handle(msg, stop):
                    self._go_offline()  # unplugged or overheated: offline until the next hour
                    self._wait_wall(self.clock.wall(max(0.0, hour_end - self.clock.now())), stop)
                    return
            if not pulled:
                self._wait_wall(min(self.poll_s * (0.5 + self.rng.random()), 1e9), stop)

    def _activate(self) -> int:
        node_id = self.fleet.activate(self.heartbeat_s, known_node_id=self._known_node_id)
        self._known_node_id = node_id
        return node_id

    def _go_offline(self) -> None:
        if self.node_id is not None:
            node_id, self.node_id = self.node_id, None
            with contextlib.suppress(FleetError):  # SuperLink gone (end of the simulation) or already offline
                self.fleet.deactivate(node_id)

    def _wait_wall(self, seconds: float, stop: threading.Event) -> None:
        if stop.wait(max(0.0, seconds)):
            raise _Stopped

    def _sleep_virtual(self, virtual_s: float, stop: threading.Event) -> None:
        self._wait_wall(self.clock.wall(virtual_s), stop)
        self._sync_gate_clock()

    def _sync_gate_clock(self) -> None:
        lag = self.clock.now() - self.state.clock.monotonic()
        if lag > 0:
            self.state.clock.advance(lag)

    # -- one instruction ---------------------------------------------------------------------------------------
    def _handle(self, msg: PulledMessage, stop: threading.Event) -> bool:
        """Handle one instruction; ``False`` when the device dropped out of the round."""
        assert self.node_id is not None
        objects = self.fleet.pull_objects(self.node_id, msg)
        content = decode_content(msg.message_id, objects, self.fleet.limits) or {}
        self.fleet.confirm(self.node_id, msg.metadata.run_id, msg.message_id)
        task = decode_task(msg.metadata.message_type, content)
        arrays = task.arrays if isinstance(task, (TrainTask, EvaluateTask)) else None
        params = dict(arrays) if arrays is not None else {}
        meta = msg.metadata
        if isinstance(task, TrainTask) and "dense0_weight" in params:
            return self._train(msg, params, stop)
        loss = self._loss(params) if "dense0_weight" in params else math.nan
        n = len(self.target)
        metrics = ReplyMetrics(num_examples=n, eval_examples=n, eval_loss=loss if math.isfinite(loss) else None)
        self._push(meta, EvaluateReply(metrics=metrics, device=self._device_info()).to_records())
        self.events.add(DeviceEvent(self.state.index, self.device_class, meta.group_id, "evaluated", 0.0))
        return True

    def _train(self, msg: PulledMessage, params: dict[str, np.ndarray], stop: threading.Event) -> bool:
        cfg, d, r = self.config, self.state, self._np_rng
        a = d.profile.availability
        down_s = cfg.model_bytes * 8 / (a.downlink_mbps_median * 1e6 * math.exp(r.normal(0, a.downlink_sigma)))
        up_s = cfg.update_bytes * 8 / (a.uplink_mbps_median * 1e6 * math.exp(r.normal(0, a.uplink_sigma)))
        compute_s = cfg.base_compute_s / d.speed * math.exp(r.normal(0, 0.1))
        drop_at = int(r.integers(0, cfg.steps)) if r.random() < a.dropout_probability else -1
        loss_before = self._loss(params)

        def train(checkpoint: Callable[[], None]) -> dict[str, np.ndarray]:
            self._sleep_virtual(down_s, stop)
            for step in range(cfg.steps):
                if step == drop_at:  # unplugged (battery devices) or overheating (mains boards)
                    d.signals.snapshot = d.snapshot(powered=d.mains_only, hot=d.mains_only)
                self._sleep_virtual(compute_s / cfg.steps, stop)
                checkpoint()
            return self._local_steps(params)

        def upload(update: dict[str, np.ndarray]) -> None:
            self._sleep_virtual(up_s, stop)
            n = len(self.target)
            metrics = ReplyMetrics(
                num_examples=n, eval_examples=n, eval_loss=loss_before, device_s=down_s + compute_s + up_s
            )
            self._push(
                msg.metadata, TrainReply(metrics=metrics, arrays=update, device=self._device_info()).to_records()
            )

        outcome = d.gate.run_round(train=train, upload=upload)
        elapsed = (time.time() - msg.metadata.created_at) * self.clock.time_scale
        ok = outcome.status == "completed"
        self.events.add(
            DeviceEvent(
                d.index,
                self.device_class,
                msg.metadata.group_id,
                "replied" if ok else "dropped",
                elapsed,
                tuple(outcome.reasons),
            )
        )
        return ok

    def _loss(self, params: dict[str, np.ndarray]) -> float:
        w = np.asarray(params["dense0_weight"], dtype=np.float64).reshape(-1)
        b = float(np.asarray(params.get("dense0_bias", np.zeros(1))).reshape(-1)[0])
        if w.shape != (self.state.x.shape[1],):
            return math.nan
        return float(np.mean((self.state.x @ w + b - self.target) ** 2))

    def _local_steps(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        w0 = np.asarray(params["dense0_weight"])
        b0 = np.asarray(params.get("dense0_bias", np.zeros(1, dtype=np.float32)))
        w = w0.astype(np.float64).reshape(-1)
        b = float(b0.reshape(-1)[0])
        x = self.state.x
        for _ in range(self.config.steps):
            err = x @ w + b - self.target
            w -= 0.05 * (x.T @ err) / len(err)
            b -= 0.05 * float(err.mean())
        return {
            "dense0_weight": w.reshape(w0.shape).astype(w0.dtype),
            "dense0_bias": np.full(b0.shape, b, dtype=b0.dtype),
        }

    def _device_info(self) -> DeviceInfo:
        return DeviceInfo(device_class=self.device_class)

    def _push(self, ins: pb.Metadata, content: dict[str, Any]) -> None:
        assert self.node_id is not None
        now = time.time()
        ttl = ins.created_at + ins.ttl - now if ins.ttl > 0 else 3600.0
        meta = pb.Metadata(
            run_id=ins.run_id,
            src_node_id=self.node_id,
            dst_node_id=_SUPERLINK_NODE_ID,
            reply_to_message_id=ins.message_id,
            group_id=ins.group_id,
            message_type=ins.message_type,
            created_at=now,
            ttl=max(ttl, 1.0),
        )
        with contextlib.suppress(FleetRunNotRunning):  # the run ended while this device worked
            self.fleet.push_message(self.node_id, encode_message(meta, content))
