"""Our codec against flwr 1.41.0's own object classes (needs the [server] extra; fails loudly without it)."""

from __future__ import annotations

import numpy as np
import pytest

from flclient.fleet import ArrayRecord, ConfigRecord, MetricRecord, decode_content, encode_message
from flclient.fleet._proto import flclient_fleet_pb2 as pb

try:
    import flwr
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
except ImportError:  # pragma: no cover
    flwr = None


@pytest.fixture(autouse=True)
def _needs_flwr() -> None:
    if flwr is None:
        pytest.fail("flwr is not installed: install the [server] extra (pip install 'flclient[server]')")


def test_pinned_flower_version() -> None:
    from flclient.fleet import FLEET_PROTOCOL_VERSION

    assert f"flwr-{flwr.__version__}" == FLEET_PROTOCOL_VERSION


def test_flower_inflates_our_reply_and_we_decode_flowers_instruction() -> None:
    meta = pb.Metadata(
        run_id=5,
        src_node_id=7,
        dst_node_id=1,
        reply_to_message_id="i",
        group_id="1",
        ttl=9.0,
        message_type="train",
        created_at=1.0,
    )
    enc = encode_message(
        meta,
        {
            "arrays": ArrayRecord({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}),
            "metrics": MetricRecord({"num-examples": 10, "loss": 0.5}),
            "config": ConfigRecord({"a": True, "s": "x", "l": [1.0, 2.0]}),
        },
    )
    msg = inflate_object_from_contents(enc.message_id, enc.objects, keep_object_contents=False)
    assert msg.object_id == enc.message_id
    assert msg.metadata.reply_to_message_id == "i" and msg.metadata.src_node_id == 7
    np.testing.assert_array_equal(msg.content.array_records["arrays"]["w"].numpy(), np.arange(6).reshape(2, 3))
    assert dict(msg.content.metric_records["metrics"]) == {"num-examples": 10, "loss": 0.5}

    from flwr.app import Array, Message, RecordDict
    from flwr.app import ArrayRecord as FArrayRecord
    from flwr.app import ConfigRecord as FConfigRecord

    reply = Message(
        content=RecordDict(
            {"arrays": FArrayRecord({"x": Array(np.ones((3, 2)))}), "config": FConfigRecord({"lr": 0.1, "n": [1, 2]})}
        ),
        reply_to=msg,
    )
    objs = {k: v.deflate() for k, v in get_all_nested_objects(reply).items()}
    out = decode_content(reply.object_id, objs)
    assert out is not None and isinstance(out["arrays"], ArrayRecord)
    np.testing.assert_array_equal(out["arrays"].arrays["x"], np.ones((3, 2)))
    assert out["config"] == ConfigRecord({"lr": 0.1, "n": [1, 2]})
