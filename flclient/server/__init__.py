"""Server side of flclient: the Flower ServerApp plugin, aggregation, model versions and a local federation.

Only this subpackage imports ``flwr`` (in :mod:`flclient.server.app`, installed with ``flclient[server]``);
the aggregation and model-history code here is numpy only.
"""

from .._errors import RunConfigError
from ..protocol import AGGREGATIONS, SERVER_OPTIMIZERS, RunConfig, run_config_reference
from ._aggregate import AggregationResult, DeviceUpdate, aggregate
from ._history import ModelHistory
from ._local import LocalSuperLink, free_port, write_flower_app
from ._optim import ServerOptimizer

__all__ = [
    "AGGREGATIONS",
    "SERVER_OPTIMIZERS",
    "AggregationResult",
    "DeviceUpdate",
    "LocalSuperLink",
    "ModelHistory",
    "RunConfig",
    "RunConfigError",
    "ServerOptimizer",
    "aggregate",
    "free_port",
    "run_config_reference",
    "write_flower_app",
]
