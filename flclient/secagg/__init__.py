"""Secure aggregation (SecAgg+, Bell et al. 2020): the coordinator learns only the sum of the devices' updates.

Device side: :class:`SecAggDevice`, a persisted state machine fed with coordinator requests. Coordinator side:
:class:`SecAggCoordinator`, transport-free (the Flower ServerApp workflow in :mod:`flclient.server` drives it).
Masks are ChaCha20 keystreams keyed through X25519 + HKDF-SHA256; seeds and mask keys are Shamir-shared over
F_(2^31-1) and sent AEAD-encrypted to neighbours on a k-regular graph; every message is Ed25519-signed; updates
are quantised into Z_(2^b) with stochastic rounding and travel packed in b bits per coordinate.
"""

from .._errors import SecAggAborted, SecAggError, SecAggIncompatible, SecAggProtocolError, SecAggStateError
from ._compose import check_update_stages, flatten_update, require_linear_codec, unflatten_update
from ._coordinator import SecAggCoordinator, SecAggResult
from ._device import SecAggDevice
from ._packing import pack_bits, unpack_bits
from ._params import SecAggParams, choose_degree, neighbour_graph
from ._quant import dequantize_sum, quantize, skellam_noise
from ._store import InMemorySecAggStore, RoundRecord, SecAggStore, SqliteSecAggStore
from ._task import SecAggTaskHandler

__all__ = [
    "InMemorySecAggStore",
    "RoundRecord",
    "SecAggAborted",
    "SecAggCoordinator",
    "SecAggDevice",
    "SecAggError",
    "SecAggIncompatible",
    "SecAggParams",
    "SecAggProtocolError",
    "SecAggResult",
    "SecAggStateError",
    "SecAggStore",
    "SecAggTaskHandler",
    "SqliteSecAggStore",
    "check_update_stages",
    "choose_degree",
    "dequantize_sum",
    "flatten_update",
    "neighbour_graph",
    "pack_bits",
    "quantize",
    "require_linear_codec",
    "skellam_noise",
    "unflatten_update",
    "unpack_bits",
]
