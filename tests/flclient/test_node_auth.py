"""Node authentication (SuperLink's ``--enable-supernode-auth``), the runtime headers a SuperNode sends and the
reply metadata fields it sets, against the in-memory SuperLink."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from flclient import FleetNodeNotRegistered, FleetProtocolError
from flclient._node import FleetNode
from flclient._state import StateStore
from flclient.fleet import (
    FLEET_PROTOCOL_VERSION,
    FLOWER_RELEASES,
    ConfigRecord,
    FleetClient,
    MemorySuperLink,
    NodeKey,
    RetryPolicy,
    encode_message,
)
from flclient.fleet._proto import flclient_fleet_pb2 as pb
from flclient.fleet._transport import MockTransport, TransportResponse

from .test_node import TIMING, FakeExecutor, HeldStop, ManualClock

NOW = 1_800_000_000.0


def _node(tmp_path: Path, link: MemorySuperLink, key: NodeKey) -> FleetNode:
    store = StateStore(tmp_path / "state.db", clock=lambda: NOW)
    if store.get_meta("node_key") is None:
        store.set_meta("node_key", key.to_pem())
    fleet = FleetClient(link, key, retry=RetryPolicy(max_attempts=3), clock=lambda: NOW, rng=random.Random(0))
    return FleetNode(
        fleet=fleet,
        store=store,
        executor=FakeExecutor(),  # type: ignore[arg-type]  # duck-typed: the node only calls run()
        timing=TIMING,
        log=lambda record: None,
        monotonic=ManualClock(5000.0),
        wall=lambda: NOW,
        perf=ManualClock(100.0),
        heartbeat_stop=HeldStop,
    )


def test_an_unregistered_device_stops_at_once_with_one_line_instead_of_retrying(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW, supernode_auth=True)
    node = _node(tmp_path, link, NodeKey.generate())
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) > 20

    with pytest.raises(FleetNodeNotRegistered, match="this device is not registered with the SuperLink") as info:
        node.run(wait)
    assert "\n" not in str(info.value) and "flwr supernode register" in str(info.value)
    assert waits == []  # no backoff, no second try
    assert link.requests == ["register-node", "activate-node"]


def test_a_registered_device_connects_and_answers_a_round_and_reconnects_after_a_restart(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW, supernode_auth=True)
    key = NodeKey.generate()
    node_id = link.register_key(key.public_pem)  # the operator: flwr supernode register
    node = _node(tmp_path, link, key)
    assert node.connect() == node_id
    ins = link.queue(node_id, {"config": ConfigRecord({"lr": 0.1})})
    assert node.poll_once() == 1
    assert list(link.delivered()) == [ins.message_id]
    node.deactivate()
    node.store.close()
    again = _node(tmp_path, link, key)  # a new process on the same state
    assert again.connect() == node_id


def test_a_key_removed_by_the_operator_stops_a_connected_device(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW, supernode_auth=True)
    key = NodeKey.generate()
    link.register_key(key.public_pem)
    node = _node(tmp_path, link, key)
    node.connect()
    link.forget_nodes()  # flwr supernode unregister (or a SuperLink that lost its state): the key is unknown
    with pytest.raises(FleetNodeNotRegistered, match="not registered with the SuperLink"):
        node.run(lambda seconds: False)


def test_without_node_authentication_a_device_still_registers_itself(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    node = _node(tmp_path, link, NodeKey.generate())
    node_id = node.connect()
    assert link.node_online(node_id) and not node.fleet.operator_registers_keys


def test_the_exported_key_is_the_openssh_form_of_the_key_the_device_signs_with() -> None:
    key = NodeKey.generate()
    ssh = key.public_openssh()
    assert ssh.startswith(b"ecdsa-sha2-nistp384 ")
    loaded = serialization.load_ssh_public_key(ssh)
    pem = loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pem == key.public_pem  # what SuperLink stores on `flwr supernode register` and the device presents


def _recording() -> tuple[MockTransport, list[Mapping[str, str]]]:
    seen: list[Mapping[str, str]] = []

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        seen.append(dict(headers))
        body = pb.SendNodeHeartbeatResponse(success=True).SerializeToString()
        return TransportResponse(200, body, {"content-type": "application/protobuf"})

    return MockTransport(handler), seen


def test_every_request_names_the_flower_runtime_as_a_supernode_does() -> None:
    transport, seen = _recording()
    client = FleetClient(transport, NodeKey.generate(), clock=lambda: NOW)
    client.heartbeat(7, 30)
    assert seen[0]["flwr-package-name"] == "flwr"
    assert seen[0]["flwr-package-version"] == FLEET_PROTOCOL_VERSION.removeprefix("flwr-")
    assert seen[0]["flwr-component-name"] == "SuperNode"
    other = FleetClient(transport, NodeKey.generate(), clock=lambda: NOW, flower_version="1.42.0")
    other.heartbeat(7, 30)
    assert seen[1]["flwr-package-version"] == "1.42.0"


@pytest.mark.parametrize("version", ["1.40.0", "2.0.0", "1.42", "latest"])
def test_a_flower_release_outside_the_tested_range_is_refused(version: str) -> None:
    transport, _ = _recording()
    with pytest.raises(ValueError, match="flower_version"):
        FleetClient(transport, NodeKey.generate(), flower_version=version)
    assert FLOWER_RELEASES == ("1.41", "1.42")


def test_a_superlink_that_refuses_the_release_is_one_clear_error_without_retries() -> None:
    calls: list[str] = []

    def handler(path: str, content: bytes, headers: Mapping[str, str]) -> TransportResponse:
        calls.append(path)
        body = b'{"code": 1001, "detail": "SuperLink version 1.44.0 detected a runtime version mismatch"}'
        return TransportResponse(426, body, {"content-type": "application/json"})

    client = FleetClient(MockTransport(handler), NodeKey.generate(), clock=lambda: NOW)
    with pytest.raises(FleetProtocolError, match=r"refused this device's Flower release 1\.41\.0.*1\.44\.0"):
        client.heartbeat(7, 30)
    assert len(calls) == 1


def test_a_reply_swaps_the_instructions_task_ids_as_a_supernode_does(tmp_path: Path) -> None:
    link = MemorySuperLink(clock=lambda: NOW)
    node = _node(tmp_path, link, NodeKey.generate())
    node_id = node.connect()
    meta = pb.Metadata(
        run_id=1, src_node_id=1, dst_node_id=node_id, group_id="1", ttl=3600, message_type="train", created_at=NOW
    )
    meta.src_task_id = 11
    meta.dst_task_id = 22
    ins = link.queue_message(encode_message(meta, {"config": ConfigRecord({"lr": 0.1})}))
    plain = link.queue(node_id, {"config": ConfigRecord({"lr": 0.2})})
    node.poll_once()
    node.poll_once()
    reply = link.replies[ins.message_id].message.metadata
    assert (reply.src_task_id, reply.dst_task_id) == (22, 11)
    unset = link.replies[plain.message_id].message.metadata
    assert not unset.HasField("src_task_id") and not unset.HasField("dst_task_id")


def _device_toml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "device.toml"
    (tmp_path / "d.npz").write_bytes(b"")  # device.toml's paths must exist when it is loaded
    path.write_text(f'[superlink]\nurl = "http://127.0.0.1:9093"\n{extra}\n[device]\nstate_dir = "s"\ndata = "d.npz"\n')
    return path


def test_the_declared_flower_release_comes_from_device_toml(tmp_path: Path) -> None:
    from flclient import Client, DeviceConfig

    config = DeviceConfig.from_toml(_device_toml(tmp_path, 'flower_version = "1.42.0"'))
    transport, seen = _recording()
    with Client(config, transport=transport, log=lambda record: None) as client:
        client.fleet.heartbeat(7, 30)
    assert seen[0]["flwr-package-version"] == "1.42.0"


@pytest.mark.parametrize(("value", "message"), [('"1.39.2"', "outside the tested"), ("142", "must be a string")])
def test_a_flower_release_outside_the_range_in_device_toml_is_one_config_error(
    tmp_path: Path, value: str, message: str
) -> None:
    from flclient import DeviceConfig, DeviceConfigError

    with pytest.raises(DeviceConfigError, match=message):
        DeviceConfig.from_toml(_device_toml(tmp_path, f"flower_version = {value}"))
