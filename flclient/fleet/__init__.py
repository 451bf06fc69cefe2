"""Flower's Fleet API for devices: an httpx client, the content-addressed object codec and the transport seam.

:class:`MemorySuperLink` is an in-memory SuperLink behind that seam, for testing devices without a network.

The device never imports ``flwr``: the messages it needs are declared in ``_proto/flclient_fleet.proto`` with
Flower's field numbers (flwr 1.41 and 1.42, see :data:`FLOWER_RELEASES`).
"""

from ._client import (
    FLEET_PROTOCOL_VERSION,
    FLOWER_RELEASES,
    FleetClient,
    NodeKey,
    PulledMessage,
    RetryPolicy,
    TrafficCounter,
)
from ._memory import MemorySuperLink, StoredReply
from ._objects import (
    CHUNK_SIZE,
    ArrayRecord,
    ConfigRecord,
    DecodeLimits,
    EncodedMessage,
    MetricRecord,
    RecordDict,
    decode_content,
    encode_message,
    object_id,
)
from ._transport import HttpxTransport, MockTransport, Transport, TransportError, TransportResponse

__all__ = [
    "CHUNK_SIZE",
    "FLEET_PROTOCOL_VERSION",
    "FLOWER_RELEASES",
    "ArrayRecord",
    "ConfigRecord",
    "DecodeLimits",
    "EncodedMessage",
    "FleetClient",
    "HttpxTransport",
    "MemorySuperLink",
    "MetricRecord",
    "MockTransport",
    "NodeKey",
    "PulledMessage",
    "RecordDict",
    "RetryPolicy",
    "StoredReply",
    "TrafficCounter",
    "Transport",
    "TransportError",
    "TransportResponse",
    "decode_content",
    "encode_message",
    "object_id",
]
