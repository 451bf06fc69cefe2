"""Front doors for embedding a device node in an existing program: sync :class:`Client`, :class:`AsyncClient`.

Example (sync, in a thread of your daemon)::

    from flclient import Client, DeviceConfig

    with Client(DeviceConfig.from_toml("device.toml")) as client:
        client.run(stop_event)          # takes part in rounds until stop_event is set

Example (asyncio)::

    async with AsyncClient(DeviceConfig.from_toml("device.toml")) as client:
        await client.run(stop)          # an asyncio.Event
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ._concerns import NodeBinding
from ._config import DeviceConfig
from ._errors import DeviceConfigError, TaskDeclined
from ._examples import ExampleStore
from ._lifetime import Resource
from ._node import FleetNode, LogFn, NodeTiming, TelemetryLog
from ._state import StateStore
from ._task import DataSource, LocalData, NpzDataSource, TaskExecutor
from .fleet._client import FLEET_PROTOCOL_VERSION, FleetClient, NodeKey, RetryPolicy
from .fleet._transport import HttpxTransport, Transport
from .gate import DeviceCapabilities, DeviceSignals, ParticipationGate, SignalSource, SystemClock
from .secagg import SecAggDevice, SecAggTaskHandler, SqliteSecAggStore
from .update import PrivacyLedger, SqliteResidualStore, secure_generator

if TYPE_CHECKING:
    from .artifacts import RoundTrust

__all__ = ["AsyncClient", "Client", "json_logger"]


def json_logger(stream: Any = None, *, clock: Callable[[], float] = time.time, **static: Any) -> LogFn:
    """A structured logger: one JSON object per line (``ts``, ``event`` and fields) on ``stream`` (stderr)."""

    def log(record: dict[str, Any]) -> None:
        out = stream if stream is not None else sys.stderr
        out.write(json.dumps({"ts": round(clock(), 3), **static, **record}, default=str) + "\n")
        out.flush()

    return log


class Client(Resource):
    """A device node: its state store, Fleet client and task executor, from one :class:`DeviceConfig`.

    ``transport`` replaces the HTTP transport (tests pass a ``MockTransport``); ``data`` replaces the
    configured data source (the ``[device] data`` file or the ``[data]`` example store, which is then
    :attr:`examples`: a daemon appends to it while the client runs, and the examples a round read count as
    used once its reply reached the SuperLink); ``rng`` seeds backoff jitter; ``signals`` replaces the device's real
    signal readers for the ``[gate]`` policy (tests pass ``StaticSignals``); ``capabilities`` what the device
    declares it can run (default: what this installation has - runtime version, feature ABI, backends; tasks whose
    requirements it does not meet are declined before any work). ``close()`` is idempotent.
    """

    def __init__(
        self,
        config: DeviceConfig,
        *,
        transport: Transport | None = None,
        data: DataSource | None = None,
        log: LogFn | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        signals: SignalSource | None = None,
        capabilities: DeviceCapabilities | None = None,
    ) -> None:
        self.config = config
        if data is None and config.data is None and config.example_store is None:
            raise DeviceConfigError(
                "no local data: give device.data (an .npz file) or a [data] table (the example store) in "
                "device.toml, or a data source to Client(config, data=...)"
            )
        self._log = log or json_logger()
        self.examples: ExampleStore | None = None
        """The example store of the ``[data]`` table (None with another data source)."""
        self.store = StateStore(config.state_path, clock=clock)
        pem = self.store.get_meta("node_key")
        if pem is None:
            key = NodeKey.generate()
            self.store.set_meta("node_key", key.to_pem())
        else:
            key = NodeKey.from_pem(pem)
        self._transport = transport or HttpxTransport(config.superlink_url, tls=config.tls)
        self.fleet = FleetClient(
            self._transport,
            key,
            retry=RetryPolicy(timeout_s=config.request_timeout_s, max_backoff_s=config.max_backoff_s),
            clock=clock,
            sleep=sleep,
            rng=rng or random.Random(),
            flower_version=config.flower_version or FLEET_PROTOCOL_VERSION.removeprefix("flwr-"),
        )
        self._secagg_store = SqliteSecAggStore(config.state_dir / "secagg.sqlite")
        self._residuals = SqliteResidualStore(config.state_dir / "update-residuals.sqlite")
        self.ledger = (
            PrivacyLedger(config.privacy_ledger_path, budget=config.privacy_budget)
            if config.privacy_budget is not None
            else None
        )
        self._node = NodeBinding()
        gate = None
        if config.gate_policy is not None:
            gate = ParticipationGate(
                policy=config.gate_policy,
                signals=signals or DeviceSignals(data_dir=config.state_dir),
                clock=SystemClock(),
            )
        if data is None:
            if config.example_store is not None:
                self.examples = data = ExampleStore.from_config(config.example_store)
            else:
                assert config.data is not None  # checked above
                data = NpzDataSource(config.data)
        self.executor = TaskExecutor(
            data=data,
            feature_modules=config.feature_modules,
            module_cache_dir=config.state_dir / "module-cache",
            backbones=config.backbones,
            activation_cache_dir=config.state_dir,
            activation_cache_bytes=config.activation_cache_mib << 20,
            gate=gate,
            residuals=self._residuals,
            ledger=self.ledger,
            device_class=config.device_class,
            personal_path=config.state_dir / "personal-head.npz",
            model_path=model_path(config),
            trust=_round_trust(config),
            secagg=self._secagg_handler,
            capabilities=capabilities,
            node=self._node,
        )
        self.node = FleetNode(
            fleet=self.fleet,
            store=self.store,
            executor=self.executor,
            timing=NodeTiming(
                heartbeat_interval_s=config.heartbeat_interval_s,
                poll_interval_s=config.poll_interval_s,
                reply_grace_s=config.reply_grace_s,
                max_backoff_s=config.max_backoff_s,
            ),
            log=self._log,
            telemetry=TelemetryLog(config.telemetry_path),
            wall=clock,
            on_connect=self._connected,
            on_pushed=self._pushed,
        )

    def _connected(self, node_id: int) -> None:
        """SecAgg and update signatures name the node id SuperLink gave this device: record it for them."""
        self._node.node_id = node_id

    def _secagg_handler(self, node_id: int) -> SecAggTaskHandler:
        """This node's SecAgg+ device (made when a SecAgg stage first reaches a node id)."""
        device = SecAggDevice(
            node_id=node_id,
            identity=self._secagg_store.identity(),
            store=self._secagg_store,
            rng=secure_generator(),
        )
        return SecAggTaskHandler(device=device)

    def _pushed(self, reply_to: str) -> None:
        """A reply reached SuperLink: its DP participation (if any) is now uploaded in the ledger, and the examples
        its task read are used."""
        if self.ledger is not None:
            self.ledger.mark_uploaded_round(reply_to)
        if self.examples is not None:
            self.examples.mark_used()

    def predict(self, columns: Mapping[str, np.ndarray], *, x: np.ndarray | None = None) -> np.ndarray:
        """Local inference with the current global model (and this device's personal head when it has one):
        raw records (the feature module's input ``columns``, optional dense extras ``x``) through the pinned
        feature module, scaler and backbone. See :meth:`TaskExecutor.predict`."""
        self._check_open()
        return self.executor.predict(columns, x=x)

    def run_once(self) -> int:
        """Connect if needed and make one pass; returns how many instructions were handled."""
        self._check_open()
        return self.node.poll_once()

    def run(self, stop: threading.Event | None = None) -> None:
        """Take part in rounds until ``stop`` is set, then linger for the last reply and deactivate."""
        self._check_open()
        stop = stop or threading.Event()
        self.node.run(stop.wait)
        self.shutdown()

    def shutdown(self, wait: Callable[[float], bool] | None = None) -> None:
        """Give the last reply time to be collected, then deactivate (errors are logged, not raised)."""
        try:
            self.node.linger(wait or (lambda s: time.sleep(s) or False))  # type: ignore[func-returns-value]
            self.node.deactivate()
        except Exception as exc:
            self._log({"event": "shutdown-error", "error": type(exc).__name__, "reason": str(exc)})

    def _release(self) -> None:
        """Release the feature modules, the artifacts client, the Fleet client (and its transport) and the stores."""
        self.executor.close()
        if self.executor.trust is not None:
            self.executor.trust.close()
        self.fleet.close()
        self._secagg_store.close()
        self._residuals.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.examples is not None:
            self.examples.close()
        self.store.close()


class _NoLocalData:
    """The data source of an executor that only predicts: its input comes with each call."""

    def load(self) -> LocalData:
        raise TaskDeclined("no-data", "this executor only predicts; it reads no local examples")


def model_path(config: DeviceConfig) -> Path:
    """Where a device keeps the last global model it was given (for local inference)."""
    return config.state_dir / "global-model.npz"


def local_predictor(config: DeviceConfig) -> TaskExecutor:
    """An executor that only predicts (``flclient predict``): the device's modules, backbones, artifacts and
    personal head, no connection."""
    return TaskExecutor(
        data=NpzDataSource(config.data) if config.data is not None else _NoLocalData(),
        feature_modules=config.feature_modules,
        module_cache_dir=config.state_dir / "module-cache",
        backbones=config.backbones,
        activation_cache_dir=config.state_dir,
        personal_path=config.state_dir / "personal-head.npz",
        model_path=model_path(config),
        trust=_round_trust(config),
    )


def _round_trust(config: DeviceConfig) -> RoundTrust | None:
    """TUF artifacts, model keys and the update key, when ``[artifacts]`` or ``[signatures]`` is configured."""
    if config.artifacts is None and config.signatures is None:
        return None  # flclient.artifacts (and tuf) is not even imported
    from .artifacts import RoundTrust

    return RoundTrust.from_config(config.artifacts, config.signatures, state_dir=config.state_dir)


class AsyncClient:
    """The :class:`Client` for asyncio programs: the node runs in a worker thread, the event loop stays free."""

    def __init__(self, config: DeviceConfig, **kwargs: Any) -> None:
        self._client = Client(config, **kwargs)

    @property
    def client(self) -> Client:
        """The sync client underneath."""
        return self._client

    async def run_once(self) -> int:
        """One pass (see :meth:`Client.run_once`)."""
        return await asyncio.to_thread(self._client.run_once)

    async def run(self, stop: asyncio.Event) -> None:
        """Take part in rounds until ``stop`` is set."""
        thread_stop = threading.Event()

        async def bridge() -> None:
            await stop.wait()
            thread_stop.set()

        task = asyncio.create_task(bridge())
        try:
            await asyncio.to_thread(self._client.run, thread_stop)
        finally:
            thread_stop.set()
            task.cancel()

    async def close(self) -> None:
        """Close the client."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
