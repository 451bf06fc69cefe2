"""Poison-proof device: no instruction wedges the node (decode or task failures answered with a coded error,
transient failures retried with a capped backoff), and device.toml is validated completely at startup."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from flclient import DeviceConfigError
from flclient._config import DeviceConfig
from flclient._task import TaskOutcome
from flclient.fleet import MemorySuperLink, RecordDict
from flclient.protocol import ErrorReply

from .test_node import NOW, FakeExecutor, ManualClock, _connected, _device, _metrics, _restart, _train


def _error(link: MemorySuperLink, instruction_id: str) -> ErrorReply:
    error = link.reply_error(instruction_id)
    assert error is not None
    return ErrorReply.from_reason(error.reason)


def test_a_task_raising_anything_is_answered_with_its_code_and_the_next_one_runs(tmp_path: Path) -> None:
    seen: list[float] = []

    def answer(message_type: str, content: RecordDict) -> TaskOutcome:
        seen.append(0.0)
        if len(seen) == 1:
            raise RecursionError("maximum recursion depth exceeded")
        return FakeExecutor().run(message_type, content, message_id="-")

    link, dev, node_id = _connected(tmp_path, FakeExecutor(answer))
    bad, good = _train(link, node_id), _train(link, node_id, lr=0.5)
    dev.node.poll_once()
    dev.node.poll_once()
    failed = _error(link, bad.message_id)
    assert (failed.kind, failed.code) == ("failed", "RecursionError")
    assert _metrics(link, good.message_id)["lr-seen"] == 0.5
    assert dev.store.pending_instructions() == []


def test_a_hostile_decode_failure_is_rejected_once_and_never_decoded_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flclient._node as node_module

    def explode(*args: object, **kwargs: object) -> RecordDict:
        raise OverflowError("cannot convert float infinity to integer")  # a chunk id `Infinity`

    link, dev, node_id = _connected(tmp_path)
    bad = _train(link, node_id)
    monkeypatch.setattr(node_module, "decode_content", explode)
    dev.node.poll_once()
    rejected = _error(link, bad.message_id)
    assert (rejected.kind, rejected.code) == ("rejected", "undecodable") and "infinity" in rejected.detail
    dev = _restart(tmp_path, link, dev.executor, dev)
    dev.node.connect()
    dev.node.poll_once()
    assert dev.executor.runs == [] and dev.store.pending_instructions() == []


def test_a_missing_data_file_is_retried_with_backoff_then_answered_and_never_looped_on(tmp_path: Path) -> None:
    tries: list[int] = []

    def answer(message_type: str, content: RecordDict) -> TaskOutcome:
        tries.append(1)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "data.npz")

    link = MemorySuperLink(clock=lambda: NOW)
    dev = _device(tmp_path, link, FakeExecutor(answer))
    node_id = dev.node.connect()
    ins = _train(link, node_id)
    clock = dev.node._monotonic
    assert isinstance(clock, ManualClock)
    dev.node.poll_once()  # attempt 1: retry in 1 s
    dev.node.poll_once()  # not due yet
    assert len(tries) == 1 and ins.message_id not in link.delivered()
    clock.advance(1.0)
    dev.node.poll_once()  # attempt 2: retry in 2 s
    clock.advance(2.0)
    dev.node.poll_once()  # attempt 3 of 3: answered
    assert len(tries) == 3
    failed = _error(link, ins.message_id)
    assert (failed.kind, failed.code) == ("failed", "FileNotFoundError") and "attempt 3" in failed.detail
    clock.advance(60.0)
    dev.node.poll_once()
    assert len(tries) == 3 and dev.store.pending_instructions() == []


def _toml(tmp_path: Path, extra: str = "", *, data: bool = True) -> Path:
    if data:
        (tmp_path / "data.npz").write_bytes(b"x")
    path = tmp_path / "device.toml"
    path.write_text(
        '[superlink]\nurl = "http://127.0.0.1:9093"\n' + extra + '\n[device]\nstate_dir = "state"\ndata = "data.npz"\n'
    )
    return path


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("request_timeout_s = inf", "request_timeout_s must be a finite number"),
        ("request_timeout_s = nan", "request_timeout_s must be a finite number"),
        ("max_backoff_s = 1e9", "max_backoff_s must be a finite number"),
        ("heartbeat_interval_s = inf", "heartbeat_interval_s must be within"),
    ],
)
def test_numbers_must_be_finite_and_in_range(tmp_path: Path, extra: str, match: str) -> None:
    with pytest.raises(DeviceConfigError, match=match) as info:
        DeviceConfig.from_toml(_toml(tmp_path, extra))
    assert "\n" not in str(info.value)


def test_paths_and_encoding_are_checked_at_load(tmp_path: Path) -> None:
    assert DeviceConfig.from_toml(_toml(tmp_path)).data == tmp_path / "data.npz"
    (tmp_path / "data.npz").unlink()
    with pytest.raises(DeviceConfigError, match=r"device.data: .*data.npz is not a file"):
        DeviceConfig.from_toml(_toml(tmp_path, data=False))
    (tmp_path / "state").write_text("a file")
    with pytest.raises(DeviceConfigError, match="device.state_dir: .* is not a directory"):
        DeviceConfig.from_toml(_toml(tmp_path))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[superlink]\nurl = "http://h\xe9:1"\n')
    with pytest.raises(DeviceConfigError, match="not UTF-8"):
        DeviceConfig.from_toml(bad)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DeviceConfigError, match="too deeply|not valid TOML"):
        DeviceConfig.from_toml(deep)
