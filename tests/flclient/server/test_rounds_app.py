"""run_federation with over-selection, a round deadline and partial aggregation, on a Grid of flwr Messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

flwr_app = pytest.importorskip("flwr.app", reason="flwr is not installed (pip install flclient[server])")


class ReplyGrid:
    """Nodes answer a train message with the model + 1 at once, except ``silent`` nodes, which answer only after
    their round closed (their reply is late), and ``gone`` nodes, which never answer."""

    def __init__(
        self, nodes: list[int], silent: frozenset[int] = frozenset(), gone: frozenset[int] = frozenset()
    ) -> None:
        self.nodes, self.silent, self.gone = nodes, set(silent), set(gone)
        self.msgs: dict[str, Any] = {}
        self.asked: list[list[int]] = []
        self._held: set[str] = set()

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        self._held.clear()  # a new round: the silent nodes' earlier updates arrive now, late
        ids, batch = [], []
        for msg in messages:
            mid = f"m{len(self.msgs)}"
            msg.metadata._message_id = mid
            self.msgs[mid] = msg
            ids.append(mid)
            batch.append(msg.metadata.dst_node_id)
            if msg.metadata.dst_node_id in self.silent:
                self._held.add(mid)
        self.asked.append(batch)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        out = []
        for mid in sorted(set(message_ids)):
            msg = self.msgs.get(mid)
            if msg is None or mid in self._held or msg.metadata.dst_node_id in self.gone:
                continue
            self.msgs[mid] = None
            arrays = {k: a.numpy() + 1.0 for k, a in msg.content.array_records["arrays"].items()}
            rd = flwr_app.RecordDict(
                {
                    "arrays": flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in arrays.items()}),
                    "metrics": flwr_app.MetricRecord({"num-examples": 10, "eval-loss": 1.0}),
                }
            )
            out.append(flwr_app.Message(rd, reply_to=msg))
        return out


pytestmark = pytest.mark.usefixtures("flower_run")  # Flower's Message reads the run identity


def _run(tmp_path: Path, grid: ReplyGrid, **cfg: Any) -> list[dict[str, Any]]:
    from flclient.server.app import run_federation

    base = {
        "num-server-rounds": 2,
        "model-spec": json.dumps({"layers": [[2, 1, "none"]], "loss": "mse"}),
        "metrics-path": str(tmp_path / "m.jsonl"),
        "history-dir": str(tmp_path / "models"),
        "node-wait-s": 1,
        "round-deadline-s": 0.3,
        "round-poll-s": 0.05,
    }
    run_federation(grid, {**base, **cfg})  # type: ignore[arg-type]
    return [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]


def test_server_over_selects_and_aggregates_what_arrived_by_the_deadline(tmp_path: Path) -> None:
    grid = ReplyGrid(list(range(1, 11)), gone=frozenset({1, 2, 3}))
    records = _run(tmp_path, grid, target=4, **{"over-selection": 0.5, "min-replies": 2})
    rounds = [r for r in records if r["event"] == "round"]
    assert [len(a) for a in grid.asked[:2]] == [6, 6]  # ceil(4 * 1.5) of the 10 available nodes
    for r in rounds:
        assert r["selected"] == 6 and r["nodes"] == 10
        assert r["replies"] == sum(n not in {1, 2, 3} for n in grid.asked[r["round"] - 1])
        assert r["aggregated"] == (r["replies"] >= 2)
        assert r["closed"] in ("target", "deadline", "all-replied")
        if r["aggregated"]:
            assert r["new_version"] == r["version"] + 1


def test_server_skips_the_round_and_keeps_the_model_below_min_replies(tmp_path: Path) -> None:
    grid = ReplyGrid([1, 2, 3, 4], gone=frozenset({2, 3, 4}))
    records = _run(tmp_path, grid, target=4, **{"min-replies": 2})
    rounds = [r for r in records if r["event"] == "round"]
    assert all(r["replies"] == 1 and not r["aggregated"] and r["closed"] == "deadline" for r in rounds)
    assert all(r["new_version"] == r["version"] == 1 for r in rounds)  # the initial model, never replaced


def test_late_replies_are_discarded_and_counted(tmp_path: Path) -> None:
    grid = ReplyGrid([1, 2, 3], silent=frozenset({3}))
    # reissue-after 0: this grid's silent node answers at the next push, which a re-issue would be
    records = _run(tmp_path, grid, **{"num-server-rounds": 3, "min-replies": 1, "reissue-after": 0})
    rounds = [r for r in records if r["event"] == "round"]
    assert [r["replies"] for r in rounds] == [2, 2, 2]  # node 3's update never arrives in time
    assert [r["late"] for r in rounds] == [0, 1, 1]  # ... but arrives during the next round: counted, discarded
    assert all(r["aggregated"] for r in rounds)


def test_a_bad_run_config_stops_the_run_before_anything_is_sent(tmp_path: Path) -> None:
    from flclient.server import RunConfigError

    grid = ReplyGrid([1, 2])
    with pytest.raises(RunConfigError, match="'aggregation': 'avg' is not allowed"):
        _run(tmp_path, grid, aggregation="avg")
    with pytest.raises(RunConfigError, match="unknown key 'num-rounds'"):
        _run(tmp_path, grid, **{"num-rounds": 2})
    assert grid.asked == [] and not (tmp_path / "models").exists()  # no round, no model version


def test_run_federation_takes_a_parsed_run_config(tmp_path: Path) -> None:
    from flclient.server import RunConfig
    from flclient.server.app import run_federation

    grid = ReplyGrid([1, 2])
    run = RunConfig(rounds=1, history_dir=tmp_path / "models", metrics_path=tmp_path / "m.jsonl", node_wait_s=0)
    run_federation(grid, run)  # type: ignore[arg-type]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "round", "evaluate", "done"]
    assert records[1]["aggregated"] and records[1]["new_version"] == 2


def test_a_start_version_that_does_not_exist_is_refused_by_key(tmp_path: Path) -> None:
    from flclient.server import RunConfigError

    with pytest.raises(RunConfigError, match="'start-version': model version 9 does not exist"):
        _run(tmp_path, ReplyGrid([1]), **{"start-version": 9})


class OutlierGrid(ReplyGrid):
    """Node 1 answers with the model + 100 instead of + 1: an outlier a trimmed mean drops."""

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        out = []
        for reply in super().pull_messages(message_ids):
            if reply.metadata.src_node_id == 1 and "arrays" in reply.content.array_records:
                arrays = {k: a.numpy() + 99.0 for k, a in reply.content.array_records["arrays"].items()}
                reply.content["arrays"] = flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in arrays.items()})
            out.append(reply)
        return out


@pytest.mark.parametrize(("trim", "moved"), [(0.2, 1.0), (0.0, (4 * 1.0 + 100.0) / 5)])
def test_trim_fraction_sets_how_much_a_trimmed_mean_drops(tmp_path: Path, trim: float, moved: float) -> None:
    import numpy as np

    from flclient.server import ModelHistory

    cfg = {"num-server-rounds": 1, "aggregation": "trimmed-mean", "trim-fraction": trim}
    _run(tmp_path, OutlierGrid([1, 2, 3, 4, 5]), **cfg)
    history = ModelHistory(tmp_path / "models")
    np.testing.assert_allclose(history.load(2)["dense0_bias"] - history.load(1)["dense0_bias"], moved, rtol=1e-5)


def test_central_dp_rounds_record_noise_and_epsilon(tmp_path: Path) -> None:
    cfg = {"dp-mode": "central", "clip-norm": 1.0, "dp-noise-multiplier": 1.0, "dp-population": 8}
    records = _run(tmp_path, ReplyGrid([1, 2, 3, 4]), **cfg)
    rounds = [r for r in records if r["event"] == "round"]
    assert [r["dp"]["mode"] for r in rounds] == ["central", "central"]
    assert all(r["dp"]["noise_std"] == 1.0 * 1.0 / 4 and r["dp"]["delta"] == 1e-5 for r in rounds)
    assert 0 < rounds[0]["dp"]["epsilon"] < rounds[1]["dp"]["epsilon"]  # two noised rounds at rate 4/8 compose
    assert all(r["new_version"] == r["version"] + 1 for r in rounds)


def test_unsigned_updates_are_refused_when_signed_updates_are_required(tmp_path: Path) -> None:
    from types import SimpleNamespace

    grid = ReplyGrid([1, 2])
    grid.run = SimpleNamespace(run_id=7)  # type: ignore[attr-defined]
    records = _run(tmp_path, grid, **{"require-signed-updates": "true", "num-server-rounds": 1})
    train = next(r for r in records if r["event"] == "round")
    assert train["signed_updates"] == {"verified": 0, "rejected": 2}
    unsigned = "unsigned update (require-signed-updates)"
    assert train["rejected"] == {"1": unsigned, "2": unsigned}
    assert train["new_version"] == train["version"] == 1  # nothing aggregated


class CrashingGrid(ReplyGrid):
    """A ReplyGrid whose SuperLink goes away for good at the ``crash_at``-th push (the run in progress fails)."""

    def __init__(self, nodes: list[int], crash_at: int) -> None:
        super().__init__(nodes)
        self.crash_at = crash_at

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        if len(self.asked) + 1 == self.crash_at:
            raise ConnectionError("SuperLink is gone")
        return super().push_messages(messages)


def test_a_run_resumed_after_its_superlink_failed_continues_from_the_last_round(tmp_path: Path) -> None:
    cfg = {"num-server-rounds": 4, "min-replies": 1}
    with pytest.raises(ConnectionError):
        _run(tmp_path, CrashingGrid([1, 2], crash_at=3), **cfg)  # rounds 1 and 2 done, then the crash
    first = [r for r in _read(tmp_path) if r["event"] == "round"]
    assert [r["round"] for r in first] == [1, 2] and first[-1]["new_version"] == 3
    grid = ReplyGrid([1, 2])
    records = _run(tmp_path, grid, **cfg, resume=True)
    rounds = [r for r in records if r["event"] in ("round", "evaluate")][2:]
    assert [(r["event"], r["round"]) for r in rounds] == [("round", 3), ("round", 4), ("evaluate", 5)]
    assert rounds[0]["version"] == 3 and rounds[1]["new_version"] == 5  # from the version the first run reached
    assert records[-1] == {"event": "done", "version": 5}


def _read(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
