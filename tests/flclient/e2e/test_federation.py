"""A real federation on loopback: flower-superlink, the flclient ServerApp and flclient device processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import cast

import pytest

from flclient.server import LocalSuperLink

from .conftest import Devices, run_config, submit_and_wait
from .proxy import FlakyProxy, Rule

pytestmark = pytest.mark.e2e


def _rounds(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if r["event"] in ("round", "evaluate")]


def test_multi_round_federation_improves_the_model(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(3, superlink.url)
    for i in range(3):
        devices.start(i)
    records = submit_and_wait(
        superlink, tmp_path, run_config(feature_module, tmp_path, **{"num-server-rounds": 3, "min-nodes": 3})
    )
    rounds = _rounds(records)
    assert [r["replies"] for r in rounds] == [3, 3, 3, 3]
    assert all(not r["failures"] and r["duplicates"] == 0 for r in rounds)
    assert rounds[-1]["eval_acc"] > rounds[0]["eval_acc"] + 0.3  # type: ignore[operator]
    assert rounds[-1]["eval_loss"] < rounds[0]["eval_loss"]  # type: ignore[operator]
    # per-round telemetry on the device: training time and bytes, in the local JSON-lines log
    tasks = [t for t in devices.telemetry(0) if t["event"] == "task"]
    assert len(tasks) == 4 and all(t["outcome"] == "replied" and t["bytes_down"] > 0 for t in tasks)
    assert any(t["event"] == "pushed" and t["bytes_up"] > 0 for t in devices.telemetry(0))


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ("hold", "push-messages"),  # the reply is stored, its push never reached SuperLink
        ("forward-hold", "push-object"),  # SuperLink has the message and one object, the answer is lost
    ],
)
def test_device_killed_mid_round_restarts_without_duplicate_reply(
    superlink: LocalSuperLink,
    devices: Devices,
    feature_module: tuple[Path, str, str],
    tmp_path: Path,
    action: str,
    path: str,
) -> None:
    # Device 0 talks through a proxy that blocks its first push at the given step; while it is blocked the
    # process is killed with SIGKILL and restarted on the same state directory.
    proxy = FlakyProxy(superlink.url, [Rule(action, path=path, budget=1)])
    try:
        devices.configure(2, [proxy.url, superlink.url])
        devices.start(0)
        devices.start(1)
        app_cfg = run_config(feature_module, tmp_path)
        from flclient.server import write_flower_app

        run_id = superlink.submit(write_flower_app(tmp_path / "app", app_cfg))
        deadline = time.monotonic() + 60
        while proxy.fired(action) == 0:
            assert time.monotonic() < deadline, devices.log(0)
            time.sleep(0.1)
        devices.kill9(0)
        before = devices.telemetry(0)  # what the killed process did
        proxy.released.set()
        devices.start(0)  # same state directory: same key, node id and stored reply
        assert superlink.wait(run_id, timeout_s=120) == "finished:completed", superlink.logs(run_id)
    finally:
        proxy.close()
    records = [r for r in _read(Path(app_cfg["metrics-path"])) if r["event"] in ("round", "evaluate")]
    assert [r["replies"] for r in records] == [2, 2, 2]
    assert all(r["duplicates"] == 0 and not r["failures"] for r in records), records
    # The killed process had computed round 1's reply but not finished pushing it.
    (interrupted,) = [t for t in before if t["event"] == "task"]
    assert interrupted["outcome"] == "replied" and interrupted["round"] == "1"
    assert not [t for t in before if t["event"] == "pushed"]
    # The restarted process resumed that same run with the same node: it pushed the stored reply (computed once,
    # not again), then took part in the remaining rounds; every reply was pushed once and counted once above.
    after = devices.telemetry(0)[len(before) :]
    tasks = [t for t in devices.telemetry(0) if t["event"] == "task"]
    assert [t["message_id"] for t in tasks].count(interrupted["message_id"]) == 1
    assert [t["round"] for t in tasks] == ["1", "2", "3"] and {t["run_id"] for t in tasks} == {run_id}
    assert all(t["outcome"] == "replied" for t in tasks), tasks
    pushes = [t for t in after if t["event"] == "pushed"]
    assert pushes[0]["reply_to"] == interrupted["message_id"]
    assert len(pushes) == len({p["reply_to"] for p in pushes}) == 3  # each reply pushed once
    connected = [json.loads(line) for line in devices.log(0).splitlines() if '"connected"' in line]
    assert len(connected) >= 2 and len({c["node_id"] for c in connected}) == 1  # one node id across the restart


def test_flaky_link_loses_no_update(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    # Requests dropped before SuperLink sees them, delayed, and answers lost after SuperLink acted on the request
    # (a reply announced or an object stored, but the device never hears so and pushes again).
    lost_announce = Rule("lose-answer", path="push-messages", share=0.5, budget=2)
    lost_object = Rule("lose-answer", path="push-object", share=0.3, budget=2)
    proxy = FlakyProxy(
        superlink.url,
        [
            lost_announce,
            lost_object,
            Rule("drop", share=0.3, budget=12),
            Rule("delay", share=0.3, budget=12, delay_s=0.4),
        ],
        seed=3,
    )
    try:
        devices.configure(2, proxy.url)
        devices.start(0)
        devices.start(1)
        records = submit_and_wait(superlink, tmp_path, run_config(feature_module, tmp_path))
    finally:
        proxy.close()
    assert proxy.fired("drop") > 0 and proxy.fired("delay") > 0
    assert lost_announce.fired == 2 and lost_object.fired == 2  # every lost-answer fault happened
    rounds = _rounds(records)
    assert [r["replies"] for r in rounds] == [2, 2, 2]  # no update lost...
    assert all(not r["failures"] and r["duplicates"] == 0 for r in rounds), rounds  # ...none counted twice
    for i in (0, 1):
        tasks = [t for t in devices.telemetry(i) if t["event"] == "task"]
        pushes = [t["reply_to"] for t in devices.telemetry(i) if t["event"] == "pushed"]
        assert [t["outcome"] for t in tasks] == ["replied"] * 3, tasks  # each instruction computed once
        assert sorted(pushes) == sorted(t["message_id"] for t in tasks)  # and its reply recorded pushed once


def test_hostile_responses_are_rejected_and_the_node_keeps_running(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    # One fault per round for device 0; device 1 is direct. Faults: an object whose bytes do not match its id,
    # then an oversized object; then a wrong content type and a truncated protobuf on pull-object. The proxy arms
    # each one when it hands out the next instruction (no test thread racing the device's next pull), and none for
    # the final evaluation.
    faults = ["corrupt-object", "oversize-object", "content-type", "truncate"]
    proxy = FlakyProxy(superlink.url, per_instruction=[*faults, ""])
    try:
        devices.configure(2, [proxy.url, superlink.url])
        devices.start(0)
        devices.start(1)
        cfg = run_config(feature_module, tmp_path, **{"num-server-rounds": len(faults)})
        submit_and_wait(superlink, tmp_path, cfg)
    finally:
        proxy.close()
    metrics = Path(cfg["metrics-path"])
    rounds = [r for r in _read(metrics) if r["event"] in ("round", "evaluate")]
    assert devices.alive(0), devices.log(0)
    assert proxy.armed == faults and all(proxy.fired(f) == 1 for f in faults)
    rejected = [t for t in devices.telemetry(0) if t.get("outcome") == "rejected"]
    assert len(rejected) == len(faults), devices.telemetry(0)
    reasons = " ".join(f"{t['reason']}: {t['detail']}" for t in rejected)  # code "undecodable" and its detail
    for phrase in ("does not hash to its id", "over ", "content type", "not a valid"):
        assert phrase in reasons, reasons
    assert all(r["replies"] == 2 for r in rounds)
    assert sum(sum(cast(dict[str, int], r["failures"]).values()) for r in rounds) == len(faults)
    assert not rounds[-1]["failures"]  # after the faults, device 0 takes part normally


def test_superlink_restart_is_survived(
    superlink: LocalSuperLink, devices: Devices, feature_module: tuple[Path, str, str], tmp_path: Path
) -> None:
    devices.configure(2, superlink.url)
    devices.start(0)
    devices.start(1)
    submit_and_wait(superlink, tmp_path, run_config(feature_module, tmp_path, **{"num-server-rounds": 1}))
    superlink.kill()  # a crash, mid-life of the devices
    deadline = time.monotonic() + 60
    while '"disconnected"' not in devices.log(0):  # wait until a device has really hit the outage
        assert time.monotonic() < deadline, devices.log(0)
        time.sleep(0.2)
    superlink.start()  # same port, same database
    cfg = run_config(feature_module, tmp_path, **{"num-server-rounds": 1, "metrics-path": str(tmp_path / "m2.jsonl")})
    records = submit_and_wait(superlink, tmp_path, cfg)
    assert [r["replies"] for r in _rounds(records)] == [2, 2]
    assert devices.alive(0) and devices.alive(1)
    assert '"disconnected"' in devices.log(0)


def _read(path: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
