"""The Flower ServerApp for flclient devices (the only module, with its package, that imports ``flwr``).

Submit it as a Flower app whose ``serverapp`` component is ``flclient.server.app:app`` (see
:func:`flclient.server.write_flower_app`). Its settings are the run config's keys, all optional, parsed once into
a :class:`~flclient.server.RunConfig` before the first round: ``docs/run-config.md`` lists every key with its
values and default (it is generated from that class).

A run is a schedule of rounds (:func:`~flclient.server._plan.schedule`), and a training round is five stages:

1. plan: the nodes available and the task (the global model, and the run's
   :class:`~flclient.protocol.TaskPlan` built once by :func:`~flclient.protocol.plan_from_config`);
2. send and collect: push the task to the selected nodes, collect replies until the round closes
   (:class:`~flclient.server._rounds.RoundCollector`: over-selection, a deadline, late replies counted);
3. decode: replies into device updates, failures by reason and undecodable updates
   (:func:`~flclient.server._decode.decode_replies`);
4. aggregate: roll back when accuracy fell, then the robust aggregate or central DP, the server optimiser and a
   new model version;
5. record: one metrics record per round (:mod:`flclient.server._record`; tests and benchmarks read them).

An evaluation round stops after decoding and never changes the model; a SecAgg round replaces stages 2 to 4 by
SecAgg+'s four exchanges (:mod:`flclient.server._secagg`).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from .._errors import RunConfigError, SecAggAborted
from ..protocol import DeviceInfo, EvaluateTask, QueryTask, RunConfig, TrainTask
from ._aggregate import DeviceUpdate, aggregate
from ._decode import DecodedReplies, decode_capabilities, decode_replies, decode_stats
from ._dp import CentralDP, central_dp_aggregate
from ._exchange import send_and_receive
from ._history import ModelHistory
from ._optim import ServerOptimizer
from ._plan import PlannedRound, init_params, plan_from_config, schedule
from ._record import MetricsLog, replies_record
from ._records import to_flwr
from ._rounds import RoundCollection, RoundCollector, RoundRules
from ._stats import Scaler, ScalerStore, federated_scaler
from ._trust import ServerTrust

__all__ = ["app", "run_federation"]

app = ServerApp()


def run_federation(grid: Grid, cfg: Mapping[str, Any] | RunConfig) -> None:
    """The server loop: send train tasks, decode and aggregate replies, version the model, evaluate.

    ``cfg`` is Flower's run config (parsed here, so that a wrong key stops the run with
    :class:`~flclient.RunConfigError` before the first round) or a :class:`RunConfig`.
    """
    run = cfg if isinstance(cfg, RunConfig) else RunConfig.from_run_config(cfg)
    _Federation(grid, run).run()


class _Federation:
    """One run of the ServerApp: its settings, and the state it carries from round to round (the global model and
    its version, the best accuracy seen, the server optimiser's state, the central DP accounting, the scaler)."""

    def __init__(
        self,
        grid: Grid,
        run: RunConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.grid, self.settings = grid, run
        self._clock, self._sleep = clock, sleep
        self.history = ModelHistory(run.history_dir)
        self.metrics = MetricsLog(run.metrics_path)
        self.trust = ServerTrust.from_config(run)
        self.optimizer = ServerOptimizer.from_config(run)
        self.central_dp = CentralDP.from_config(run)
        self.collector = RoundCollector(grid, RoundRules.from_config(run), clock=clock, sleep=sleep)
        self.plan = plan_from_config(run)  # the tasks' round-independent parts (checked when run was parsed)
        self.personal = self.plan.personal
        self.devices: dict[int, DeviceInfo] = {}  # what each node declared it can run, from its replies
        self.dp_rates: list[float] = []  # the sampling rate of every noised round so far
        self._dp_rng = np.random.default_rng(secrets.randbits(128))  # the server's noise: never a fixed seed
        self._secagg_tag = secrets.token_hex(8)  # SecAgg round ids must never repeat on a device, across runs too
        self.progress_path = run.history_dir / "progress.json"
        self.done_steps = 0  # schedule steps completed (resume: by the run this one continues)
        progress = self._read_progress() if run.resume else None
        if progress is not None:
            self.done_steps = int(progress["steps"])
            self.version = int(progress["version"])
            self.params = self.history.load(self.version)
            self.optimizer.load_state_dict(self.history.load_optimizer_state(self.version))
            self.dp_rates = [float(r) for r in progress.get("dp_rates", [])]
        elif run.start_version:
            try:
                self.params = self.history.load(run.start_version)
            except KeyError as exc:
                raise RunConfigError("start-version", str(exc.args[0])) from None
            self.version = self.history.rollback(run.start_version, "start-version")
            # resume with the momentum/moments saved with that version (none: start them afresh)
            self.optimizer.load_state_dict(self.history.load_optimizer_state(self.version))
        else:
            self.params = init_params(self.plan.model, run.init_seed)
            self.version = self.history.commit(self.params, {"round": 0, "init": True})
        self.best: tuple[float, int] = (-1.0, self.version)  # (accuracy, version)

    @property
    def shared(self) -> dict[str, np.ndarray]:
        """The global parameters the devices upload and the server aggregates (all but the private heads)."""
        return {k: v for k, v in self.params.items() if k not in self.personal}

    def run(self) -> None:
        """Wait for the nodes, compute the scaler (federated-scaler), then every round of the schedule."""
        nodes = self._wait_for_nodes()
        self.metrics.write(
            {"event": "start", "nodes": len(nodes), "version": self.version, "rounds": self.settings.rounds}
        )
        if self.settings.federated_scaler:
            self.plan = self.plan.with_scaler(self.stats_round(nodes))
        for step, planned in enumerate(schedule(self.settings)):
            if step < self.done_steps:  # done by the run this one resumes
                continue
            t0 = self._clock()
            if planned.evaluating:
                record = self.evaluate_round(planned)
            elif self.settings.secagg:
                record = self.secagg_round(planned)
            else:
                record = self.train_round(planned)
            record["round_s"] = self._clock() - t0
            self.metrics.write(record)
            self._write_progress(step + 1)
        self.metrics.write({"event": "done", "version": self.version})

    # -- the rounds ----------------------------------------------------------------------------------------------
    def train_round(self, planned: PlannedRound) -> dict[str, Any]:
        """Plan, send and collect, decode, aggregate; returns the round's record."""
        nodes = sorted(self.grid.get_node_ids())
        collected = self.send_and_collect(planned, to_flwr(self.task(planned).to_records()), nodes)
        decoded = self.decode(planned, collected)
        record = self.record(planned, nodes, collected, decoded)
        if self.trust is not None:
            record["signed_updates"] = self.trust.take_summary()
        self._note_accuracy(record["eval_acc"])
        updates = decoded.updates if collected.aggregate else []  # fewer than min-replies in time: keep the model
        record.update(
            self.aggregate(
                planned,
                updates,
                decoded.undecodable,
                accuracy=record["eval_acc"],
                asked=len(collected.selected),
                available=len(nodes),
            )
        )
        return record

    def evaluate_round(self, planned: PlannedRound) -> dict[str, Any]:
        """Plan, send and collect, decode: the devices' held-out metrics of the current model, which stays."""
        nodes = sorted(self.grid.get_node_ids())
        collected = self.send_and_collect(planned, to_flwr(self.task(planned).to_records()), nodes)
        decoded = self.decode(planned, collected)
        record = self.record(planned, nodes, collected, decoded)
        record["final"] = planned.final
        record["per_device"] = decoded.per_device
        self._note_accuracy(record["eval_acc"])
        return record

    def secagg_round(self, planned: PlannedRound) -> dict[str, Any]:
        """One SecAgg+ training round in place of plain aggregation; an aborted round keeps the model."""
        from ._secagg import SecAggRoundConfig, secagg_train_round

        nodes = sorted(self.grid.get_node_ids())
        record: dict[str, Any] = {
            "event": "round",
            "round": planned.number,
            "version": self.version,
            "nodes": len(nodes),
        }
        # The task as planned: with the model's signature and the run id when trust is on.
        task = self.task(planned)
        assert isinstance(task, TrainTask)
        try:
            outcome = secagg_train_round(
                self.grid,
                nodes,
                self.params,
                task,
                SecAggRoundConfig.from_config(self.settings),
                round_tag=f"{self._secagg_tag}/{planned.number}",
            )
        except SecAggAborted as exc:
            record["secagg"] = {"aborted": str(exc)}
        else:
            result = outcome.result
            record["secagg"] = {
                "survivors": len(result.survivors),
                "dropped": len(result.dropped),
                "rejected": {str(k): str(v) for k, v in result.rejected.items()},
            }
            self.params = self.optimizer.step(self.params, outcome.parameters)
            self.version = self.history.commit(
                self.params,
                {"round": planned.number, "secagg": list(result.survivors)},
                optimizer_state=self.optimizer.state_dict(),
            )
        record["new_version"] = self.version
        return record

    def stats_round(self, nodes: list[int]) -> Scaler:
        """A ``feature-stats`` query round: the devices' sums give the global scaler, stored as a new version."""
        t0 = self._clock()
        store = ScalerStore(self.settings.history_dir / "scalers")
        content = to_flwr(self.plan.stats_task().to_records())
        messages = [
            Message(content=content, dst_node_id=n, message_type=MessageType.QUERY, group_id="stats") for n in nodes
        ]
        replies = send_and_receive(self.grid, messages, timeout=self.settings.round_timeout_s)
        stats, failures = decode_stats(replies)
        scaler = federated_scaler(
            stats, version=store.next_version(), module_sha256=self.settings.feature_module_sha256
        )
        store.save(scaler)
        self.metrics.write(
            {
                "event": "stats",
                "nodes": len(nodes),
                "replies": len(replies),
                "devices": len(stats),
                "failures": failures,
                "scaler_version": scaler.version,
                "count": scaler.count,
                "round_s": self._clock() - t0,
            }
        )
        return scaler

    # -- the stages of a round -----------------------------------------------------------------------------------
    def task(self, planned: PlannedRound) -> TrainTask | EvaluateTask:
        """Plan the round's task: the global model and the plan's train or evaluate task (signed and pinned when
        trust is on)."""
        task: TrainTask | EvaluateTask
        if planned.evaluating:
            task = self.plan.evaluate_task(self.params, server_round=planned.number, version=self.version)
        else:
            task = self.plan.train_task(self.params, server_round=planned.number, version=self.version)
        if self.trust is not None:  # signed model, TUF checkpoint pin (see flclient.server._trust)
            task = self.trust.prepare(task, self.params, version=self.version, run_id=self.grid.run.run_id)
        return task

    def send_and_collect(self, planned: PlannedRound, content: RecordDict, nodes: list[int]) -> RoundCollection:
        """Send the task to the nodes the round selects and collect their replies until the round closes."""
        training = not planned.evaluating
        kind = MessageType.TRAIN if training else MessageType.EVALUATE
        asked = self.collector.select(self.capable(nodes), training=training)
        messages = [Message(content=content, dst_node_id=n, message_type=kind, group_id=planned.group) for n in asked]
        return self.collector.collect(messages, training=training)

    def decode(self, planned: PlannedRound, collected: RoundCollection) -> DecodedReplies:
        """The replies' metrics, failures and (training) updates; with trust, updates are verified first."""
        refuse = None
        if self.trust is not None and not planned.evaluating:
            refuse = partial(
                self.trust.refuse, server_round=planned.number, version=self.version, run_id=self.grid.run.run_id
            )
        decoded = decode_replies(
            collected.replies,
            training=not planned.evaluating,
            shared=self.shared,
            refuse=refuse,
            node_of=collected.node_of,
        )
        self.devices.update(decoded.devices)
        return decoded

    def capable(self, nodes: list[int]) -> list[int]:
        """The nodes whose declared backends can run the plan's model. When the model needs a backend besides the
        always-installed numpy, nodes not heard from yet are asked first (a ``capabilities`` query)."""
        needed = {*self.plan.requirements.required_backends, self.plan.model.backend}
        if needed <= {"numpy"}:
            return nodes
        unknown = [n for n in nodes if n not in self.devices]
        if unknown:
            query = to_flwr(QueryTask(query="capabilities").to_records())
            messages = [
                Message(content=query, dst_node_id=n, message_type=MessageType.QUERY, group_id="capabilities")
                for n in unknown
            ]
            self.devices.update(
                decode_capabilities(send_and_receive(self.grid, messages, timeout=self.settings.round_timeout_s))
            )
        return [n for n in nodes if n in self.devices and needed <= set(self.devices[n].backends)]

    def aggregate(
        self,
        planned: PlannedRound,
        updates: list[DeviceUpdate],
        undecodable: Mapping[int, str],
        *,
        accuracy: float | None,
        asked: int,
        available: int,
    ) -> dict[str, Any]:
        """Roll back when accuracy fell ``rollback-drop`` below the best version; aggregate the updates (central
        DP, or the robust ``aggregation``); step the server optimiser and commit a version when any was used.
        Returns the record's ``rolled_back_to``, ``dp``, ``rejected`` and ``new_version``."""
        run = self.settings
        out: dict[str, Any] = {}
        if run.rollback_drop and accuracy is not None and accuracy < self.best[0] - run.rollback_drop:
            reason = f"accuracy {accuracy:.3f} fell below best {self.best[0]:.3f}"
            self.version = self.history.rollback(self.best[1], reason)
            self.params = self.history.load(self.version)
            self.optimizer.load_state_dict(self.history.load_optimizer_state(self.version))  # the state it had then
            out["rolled_back_to"] = self.best[1]
        shared = self.shared
        if self.central_dp is not None:
            result, noise_std = central_dp_aggregate(shared, updates, self.central_dp, self._dp_rng)
            if result.used:
                population = run.dp_population or available
                self.dp_rates.append(min(1.0, asked / max(population, 1)))
            out["dp"] = {
                "mode": "central",
                "noise_std": noise_std,
                "delta": self.central_dp.delta,
                "epsilon": _dp_epsilon(self.central_dp, self.dp_rates),
            }
        else:
            result = aggregate(
                shared,
                updates,
                method=run.aggregation,
                trim_fraction=run.trim_fraction,
                norm_bound=run.norm_bound or None,
            )
        out["rejected"] = {str(k): v for k, v in {**undecodable, **result.rejected}.items()}
        if result.used:
            self.params = {**self.params, **self.optimizer.step(shared, result.parameters)}
            self.version = self.history.commit(
                self.params,
                {"round": planned.number, "used": list(result.used)},
                optimizer_state=self.optimizer.state_dict(),
            )
        out["new_version"] = self.version
        return out

    def record(
        self, planned: PlannedRound, nodes: list[int], collected: RoundCollection, decoded: DecodedReplies
    ) -> dict[str, Any]:
        """The round's metrics record (what every training and evaluation round reports)."""
        record = replies_record(
            evaluating=planned.evaluating,
            number=planned.number,
            version=self.version,
            nodes=len(nodes),
            replies=len(collected.replies),
            decoded=decoded,
        )
        record.update(collected.to_record())
        record["duplicates"] += collected.duplicates  # answers to a re-issued task's second copy
        record["declines"] = decoded.declines
        return record

    # -- helpers -------------------------------------------------------------------------------------------------
    def _note_accuracy(self, accuracy: float | None) -> None:
        if accuracy is not None and accuracy > self.best[0]:
            self.best = (accuracy, self.version)

    def _write_progress(self, steps: int) -> None:
        """Where a resumed run continues: steps of the schedule done, the model version reached (atomic)."""
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": steps, "version": self.version, "dp_rates": self.dp_rates}))
        os.replace(tmp, self.progress_path)

    def _read_progress(self) -> dict[str, Any] | None:
        try:
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None  # nothing to resume: a new run
        except (OSError, ValueError) as exc:
            raise RunConfigError("resume", f"cannot read {self.progress_path}: {exc}") from None
        if not (isinstance(progress, dict) and isinstance(progress.get("steps"), int) and "version" in progress):
            raise RunConfigError("resume", f"{self.progress_path} is not a progress record")
        return progress

    def _wait_for_nodes(self) -> list[int]:
        deadline = self._clock() + self.settings.node_wait_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.settings.min_nodes or self._clock() > deadline:
                return nodes
            self._sleep(0.5)


def _dp_epsilon(dp: CentralDP, rates: list[float]) -> float:
    """Epsilon of the noised rounds so far (rounds at the highest sampling rate seen: an upper bound)."""
    return dp.epsilon(rounds=len(rates), sampling_rate=max(rates)) if rates else 0.0


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls with the run's grid and context."""
    run_federation(grid, dict(context.run_config))
