"""Which parameters are a device's private head (personalisation): shared by the device and the server plugin.

The device keeps these layers to itself and never uploads them; the server aggregates every other layer. Both read
the task's ``model-spec`` and ``personal-layers`` through the protocol (:mod:`flclient.protocol`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import ProtocolError, TaskDeclined
from .protocol import Code, Key, ValueReader, model_spec_from_json

__all__ = ["personal_parameter_names"]


def personal_parameter_names(config: Mapping[str, object]) -> frozenset[str]:
    """The parameter names of the private head (the last ``personal-layers`` dense layers of ``model-spec``).

    Raises :class:`~flclient.TaskDeclined` (``bad-config``) unless ``personal-layers`` is a whole number that
    leaves at least one shared layer.
    """
    try:
        reader = ValueReader(config, where="config")
        k = reader.whole(Key.PERSONAL_LAYERS, 0, minimum=0)
        if not k:
            return frozenset()
        return model_spec_from_json(reader.text(Key.MODEL_SPEC, max_len=1 << 20)).personal_parameter_names(k)
    except ProtocolError as exc:
        raise TaskDeclined(Code.BAD_CONFIG, exc.detail) from exc
