"""Which parameters are a device's private head (personalisation): shared by the device and the server plugin.

The device keeps these layers to itself and never uploads them; the server aggregates every other layer. Both read
the same task config keys, ``model-spec`` and ``personal-layers``, through this one function (pure, no I/O), so the
server plugin needs nothing from the device's task executor.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import TaskDeclined
from ._json import loads_untrusted

__all__ = ["personal_parameter_names"]


def personal_parameter_names(config: Mapping[str, object]) -> frozenset[str]:
    """The parameter names of the private head (the last ``personal-layers`` dense layers of ``model-spec``).

    Raises :class:`~flclient.TaskDeclined` (``bad-config``) unless ``personal-layers`` is a whole number that
    leaves at least one shared layer.
    """
    k = config.get("personal-layers", 0.0)
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TaskDeclined("bad-config", f"config 'personal-layers' must be a number, got {k!r}")
    if not k:
        return frozenset()
    raw = config.get("model-spec")
    try:
        n_layers = len(loads_untrusted(raw, max_depth=16)["layers"]) if isinstance(raw, str) else 0
    except (ValueError, KeyError, TypeError):
        n_layers = 0
    if k != int(k) or not 0 < k < n_layers:
        raise TaskDeclined("bad-config", f"personal-layers must be a whole number in [0, {n_layers}), got {k}")
    return frozenset(f"dense{i}_{p}" for i in range(n_layers - int(k), n_layers) for p in ("weight", "bias"))
