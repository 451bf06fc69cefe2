"""The device's round handler as a chain: one ``task -> reply`` handler wrapped by ordered concerns.

A :data:`Handler` turns a decoded :mod:`flclient.protocol` task into a reply; a :data:`Concern` wraps a handler
(``concern(task, context, call_next)``), in the spirit of Flower's client mods. :func:`compose` builds the chain
with the first concern outermost. The device's order (see :class:`flclient._task.TaskExecutor`):

1. :class:`GateConcern` - may this device start (power, network, thermal, memory...)? It hands the training loop a
   checkpoint that abandons the round, with nothing uploaded, when the device leaves the policy mid-training.
2. :class:`CompatibilityConcern` - can it run this task at all (runtime version range, feature ABI, backend, model
   format)? Declines with a specific code before any work.
3. :class:`PrivacyConcern` - would this DP round exceed the device's lifetime privacy budget?
4. :class:`SigningConcern` - signs a train reply's update for the run, round, node and model version.
5. :class:`SecAggConcern` - answers SecAgg+ stages; at the collect stage it runs the handler for the plain
   trained model and masks its delta (inside signing: a masked reply is never signed twice, a plain one never
   signed only to be thrown away).

A refusal is a :class:`~flclient.TaskDeclined` carrying a :class:`~flclient.protocol.Code`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ._errors import RoundAbandoned, SecAggProtocolError, TaskDeclined
from .gate import DeviceCapabilities, ParticipationGate, Reason, RoundOutcome, TaskRequirements, check_compatibility
from .protocol import (
    Code,
    EvaluateTask,
    QueryTask,
    Reply,
    SecAggReply,
    SecAggStage,
    Task,
    TrainReply,
    TrainTask,
    UpdateSignature,
)
from .secagg import SecAggTaskHandler, flatten_update
from .update import PrivacyLedger

if TYPE_CHECKING:
    from .artifacts import RoundTrust

__all__ = [
    "CompatibilityConcern",
    "Concern",
    "GateConcern",
    "Handler",
    "NodeBinding",
    "PrivacyConcern",
    "RoundContext",
    "SecAggConcern",
    "SigningConcern",
    "compose",
    "not_eligible",
]


def _no_check() -> None:
    """The checkpoint of a round that no gate watches."""


@dataclass(frozen=True, kw_only=True)
class RoundContext:
    """What a handler knows about the instruction besides its task.

    ``message_id`` names the round in the privacy ledger. ``checkpoint`` is called between training steps (it
    raises :class:`~flclient.RoundAbandoned` when the round must stop); ``check_now`` once more after training,
    before anything is built for upload.
    """

    message_id: str = ""
    checkpoint: Callable[[], None] = _no_check
    check_now: Callable[[], None] = _no_check


Handler = Callable[[Task, RoundContext], Reply]
Concern = Callable[[Task, RoundContext, Handler], Reply]


def compose(handler: Handler, concerns: Sequence[Concern]) -> Handler:
    """``handler`` wrapped by ``concerns``, the first outermost."""
    chained = handler
    for concern in reversed(concerns):
        chained = _wrap(concern, chained)
    return chained


def _wrap(concern: Concern, inner: Handler) -> Handler:
    def call(task: Task, context: RoundContext) -> Reply:
        return concern(task, context, inner)

    return call


def _trains(task: Task) -> TrainTask | None:
    """The train task an instruction runs, if it trains (a plain train task or a SecAgg collect stage)."""
    if isinstance(task, TrainTask):
        return task
    if isinstance(task, SecAggStage):
        return task.task
    return None


def _model_task(task: Task) -> TrainTask | EvaluateTask | None:
    if isinstance(task, (TrainTask, EvaluateTask)):
        return task
    if isinstance(task, SecAggStage):
        return task.task
    return None


def not_eligible(outcome: RoundOutcome) -> TaskDeclined:
    """The decline of a round the gate refused or abandoned (the gate's coarse reasons travel with it)."""
    return TaskDeclined(Code.NOT_ELIGIBLE, json.dumps(outcome.to_reply(), sort_keys=True), reasons=outcome.reasons)


@dataclass(frozen=True)
class GateConcern:
    """Ask the participation gate before training, and watch the device while it trains."""

    gate: ParticipationGate

    def __call__(self, task: Task, context: RoundContext, call_next: Handler) -> Reply:
        if _trains(task) is None:
            return call_next(task, context)
        start = self.gate.may_start()
        if not start.eligible:
            raise not_eligible(RoundOutcome(status="not_eligible", reasons=tuple(r.value for r in start.reasons)))
        monitor = self.gate.monitor()
        try:
            reply = call_next(task, replace(context, checkpoint=monitor.checkpoint, check_now=monitor.check_now))
        except RoundAbandoned as exc:  # the monitor already made the gate back off
            raise not_eligible(
                RoundOutcome(status="abandoned", reasons=exc.reasons, checks_during_round=monitor.checks)
            ) from exc
        self.gate.record_completed()
        return reply


_COMPAT_CODES = {
    Reason.APP_VERSION: Code.APP_VERSION,
    Reason.RUNTIME_VERSION: Code.RUNTIME_VERSION,
    Reason.MODEL_FORMAT: Code.MODEL_FORMAT,
    Reason.FEATURE_ABI: Code.FEATURE_ABI,
    Reason.BACKEND: Code.BACKEND_UNAVAILABLE,
}
_BACKEND_EXTRAS = {"onnx": "flclient[onnx]", "litert": "flclient[litert]"}


@dataclass(frozen=True)
class CompatibilityConcern:
    """Check the task's requirements (stated, and implied by its model) against what this device has."""

    capabilities: DeviceCapabilities

    def __call__(self, task: Task, context: RoundContext, call_next: Handler) -> Reply:
        model_task = _model_task(task)
        if model_task is None:
            return call_next(task, context)
        stated = model_task.requirements
        needed = replace(
            stated,
            required_backends=tuple(dict.fromkeys((*stated.required_backends, model_task.model.backend))),
            model_format=stated.model_format or model_task.model.model_format,
        )
        reasons = check_compatibility(needed, self.capabilities)
        if reasons:
            raise TaskDeclined(_COMPAT_CODES.get(reasons[0], Code.NOT_ELIGIBLE), self._detail(needed, reasons))
        return call_next(task, context)

    def _detail(self, needed: TaskRequirements, reasons: Sequence[Reason]) -> str:
        caps = self.capabilities
        parts = []
        for reason in reasons:
            if reason is Reason.RUNTIME_VERSION:
                low = needed.min_runtime_version or "any"
                high = f"< {needed.max_runtime_major + 1}" if needed.max_runtime_major is not None else "any"
                parts.append(f"the task needs runtime >= {low}, {high}; this device runs {caps.runtime_version}")
            elif reason is Reason.BACKEND:
                missing = [b for b in needed.required_backends if b not in caps.backends]
                hints = ", ".join(f"pip install '{_BACKEND_EXTRAS.get(b, b)}'" for b in missing)
                parts.append(
                    f"the task needs the {', '.join(missing)} backend ({hints}); this device has "
                    f"{', '.join(caps.backends) or 'none'}"
                )
            elif reason is Reason.FEATURE_ABI:
                parts.append(f"the task needs feature ABI {needed.feature_abi}; this device speaks {caps.feature_abis}")
            elif reason is Reason.MODEL_FORMAT:
                parts.append(f"the task's model format {needed.model_format} is not among {caps.model_formats}")
            elif reason is Reason.APP_VERSION:
                parts.append(f"the task needs app >= {needed.min_app_version}; this device runs {caps.app_version}")
            else:
                parts.append(reason.value)
        return "; ".join(parts)


@dataclass(frozen=True)
class PrivacyConcern:
    """Refuse, before any work, a DP round that would take the device past its lifetime privacy budget."""

    ledger: PrivacyLedger

    def __call__(self, task: Task, context: RoundContext, call_next: Handler) -> Reply:
        private = isinstance(task, TrainTask) and task.update.private
        if private and not self.ledger.check(noise_multiplier=task.update.noise_multiplier).allowed:  # type: ignore[union-attr]
            raise not_eligible(RoundOutcome(status="not_eligible", reasons=(Reason.PRIVACY_BUDGET.value,)))
        return call_next(task, context)


@dataclass
class NodeBinding:
    """The node id SuperLink gave this device, once it connected (``None`` before): SecAgg and update
    signatures name it. The node sets it at connect; concerns read it per task."""

    node_id: int | None = None


@dataclass(frozen=True)
class SigningConcern:
    """Sign each train reply's update (encoded payload or plain arrays) with the device's update key."""

    trust: RoundTrust
    node: NodeBinding

    def __call__(self, task: Task, context: RoundContext, call_next: Handler) -> Reply:
        reply = call_next(task, context)
        if not isinstance(task, TrainTask) or not isinstance(reply, TrainReply) or self.node.node_id is None:
            return reply
        from .artifacts._round import update_payload

        payload = update_payload(reply.arrays, reply.payload, task.round.model_version)
        signed = self.trust.sign_reply(payload, task.round, node_id=self.node.node_id)
        if signed is None:
            return reply
        return replace(reply, signature=UpdateSignature(signature=signed[0], public_key=signed[1]))


@dataclass
class SecAggConcern:
    """Answer SecAgg+ stage instructions with this node's SecAgg device (made once the node id is known)."""

    make_handler: Callable[[int], SecAggTaskHandler]
    node: NodeBinding
    _handler: SecAggTaskHandler | None = field(default=None, init=False, repr=False)

    def _device(self) -> SecAggTaskHandler:
        node_id = self.node.node_id
        if node_id is None:
            raise SecAggProtocolError("a SecAgg stage reached a device that has no node id yet")
        if self._handler is None or self._handler.device.node_id != node_id:
            self._handler = self.make_handler(node_id)
        return self._handler

    def __call__(self, task: Task, context: RoundContext, call_next: Handler) -> Reply:
        if not isinstance(task, SecAggStage):
            return call_next(task, context)
        handler = self._device()
        if task.task is None:
            return SecAggReply(reply=handler.answer(task.request))
        train = task.task
        if train.arrays is None:
            raise SecAggProtocolError("the collect stage carries no model ('arrays')")
        old = train.arrays
        result: list[TrainReply] = []

        def delta() -> np.ndarray:
            reply = call_next(train, context)
            if not isinstance(reply, TrainReply) or reply.arrays is None:
                raise SecAggProtocolError("local training returned no plain arrays to mask")
            result.append(reply)
            names = sorted(old)
            return flatten_update(reply.arrays, names)[0] - flatten_update(old, names)[0]

        answer = handler.answer(task.request, update=delta)
        return SecAggReply(reply=answer, metrics=result[0].metrics if result else None)


_ = QueryTask  # query tasks pass every concern untouched
