"""Flower's Fleet API for devices: an httpx client, the content-addressed object codec and the transport seam.

The device never imports ``flwr``: the messages it needs are declared in ``_proto/flclient_fleet.proto`` with
Flower's field numbers (flwr 1.41.0, see :data:`FLEET_PROTOCOL_VERSION`).
"""

from ._client import FLEET_PROTOCOL_VERSION, FleetClient, NodeKey, PulledMessage, RetryPolicy, TrafficCounter
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
    "ArrayRecord",
    "ConfigRecord",
    "DecodeLimits",
    "EncodedMessage",
    "FleetClient",
    "HttpxTransport",
    "MetricRecord",
    "MockTransport",
    "NodeKey",
    "PulledMessage",
    "RecordDict",
    "RetryPolicy",
    "TrafficCounter",
    "Transport",
    "TransportError",
    "TransportResponse",
    "decode_content",
    "encode_message",
    "object_id",
]
