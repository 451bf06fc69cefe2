"""RunConfig: the ServerApp's run config parsed once, its rules, the task config built from it, and its reference."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import FLClientError
from flclient.protocol import UPDATE_CODECS
from flclient.protocol._runconfig import DEFAULT_MODEL_SPEC
from flclient.server import AGGREGATIONS, SERVER_OPTIMIZERS, RunConfig, RunConfigError, run_config_reference
from flclient.server._dp import CentralDP
from flclient.server._optim import ServerOptimizer
from flclient.server._plan import init_params, plan_from_config, schedule
from flclient.server._rounds import RoundRules

ROOT = Path(__file__).resolve().parents[3]
SHA = "ab" * 32
KEYS = {f.metadata["key"]: f for f in dataclasses.fields(RunConfig)}


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "run-config.md").read_text(encoding="utf-8")
    assert committed == run_config_reference(), (
        "docs/run-config.md is stale: regenerate it with `python scripts/gen_run_config_doc.py`"
    )


def test_the_reference_lists_every_key_once_with_its_default() -> None:
    text = run_config_reference()
    for key, f in KEYS.items():
        assert text.count(f"\n| `{key}` |") == 1, key
        assert f.metadata["doc"] and f.metadata["conv"].text
    assert "| `round-timeout-s` | a finite number > 0 | `120.0` |" in text


def test_defaults_are_those_of_the_server_today() -> None:
    run = RunConfig.from_run_config({})
    assert (run.rounds, run.min_nodes, run.node_wait_s, run.round_timeout_s) == (3, 1, 60.0, 120.0)
    assert (run.lr, run.epochs, run.batch_size, run.seed, run.eval_fraction) == (0.1, 1, 32, 0, 0.2)
    assert (run.aggregation, run.norm_bound, run.rollback_drop, run.history_dir) == (
        "fedavg",
        0.0,
        0.0,
        Path("flclient-models"),
    )
    assert (run.secagg, run.secagg_clip, run.secagg_bits, run.dp_delta) == (False, 1.0, 24, 1e-5)
    assert run.model_spec == DEFAULT_MODEL_SPEC and run.metrics_path is None and run.update_codec is None
    assert RoundRules.from_config(run) == RoundRules()  # deadline: round-timeout-s; selection seed: seed
    opt = ServerOptimizer.from_config(run)
    assert (opt.name, opt.lr, opt.momentum, opt.beta1, opt.beta2, opt.tau) == ("fedavg", 1.0, 0.9, 0.9, 0.99, 1e-3)
    assert CentralDP.from_config(run) is None


def test_derived_defaults_follow_the_keys_they_name() -> None:
    run = RunConfig.from_run_config({"round-timeout-s": 30, "seed": 7, "server-optimizer": "fedadam"})
    rules = RoundRules.from_config(run)
    assert (rules.deadline_s, rules.seed) == (30.0, 7)
    assert ServerOptimizer.from_config(run).lr == 0.01
    run = RunConfig.from_run_config({"round-deadline-s": 5, "selection-seed": 3, "seed": 7, "server-lr": "0.5"})
    assert (RoundRules.from_config(run).deadline_s, RoundRules.from_config(run).seed) == (5.0, 3)
    assert ServerOptimizer.from_config(run).lr == 0.5


def test_values_arrive_as_strings_numbers_or_booleans() -> None:
    as_strings = {"num-server-rounds": "4", "lr": "0.5", "secagg": "TRUE", "feature-scale": "23, 1,10"}
    as_values = {"num-server-rounds": 4.0, "lr": 0.5, "secagg": True, "feature-scale": "23,1,10"}
    assert RunConfig.from_run_config(as_strings) == RunConfig.from_run_config(as_values)
    run = RunConfig.from_run_config(as_strings)
    assert run.rounds == 4 and run.secagg is True and run.feature_scale == (23.0, 1.0, 10.0)
    assert RunConfig.from_run_config({"secagg": "off", "model-via-tuf": 0, "update-codec": ""}).secagg is False
    keys = RunConfig.from_run_config({"artifacts-repo": "repo", "artifacts-keys": " a.pem, b.pem ,"})
    assert keys.artifacts_keys == (Path("a.pem"), Path("b.pem"))


@pytest.mark.parametrize(
    ("cfg", "key", "allowed"),
    [
        ({"num-server-rounds": "three"}, "num-server-rounds", "whole number"),
        ({"epochs": 1.5}, "epochs", "whole number"),
        ({"epochs": True}, "epochs", "whole number"),  # a flag is not a number
        ({"lr": "nan"}, "lr", "finite number > 0"),
        ({"lr": math.inf}, "lr", "finite number > 0"),
        ({"lr": 0}, "lr", "finite number > 0"),
        ({"eval-fraction": 1.0}, "eval-fraction", "[0, 1)"),
        ({"secagg": "maybe"}, "secagg", "true or false"),
        ({"secagg": 2}, "secagg", "true or false"),
        ({"aggregation": "mode"}, "aggregation", "fedavg, mean, median, trimmed-mean"),
        ({"server-optimizer": "sgd"}, "server-optimizer", "fedavg, fedavgm, fedadam"),
        ({"update-codec": "zip"}, "update-codec", "rotated2"),
        ({"dp-mode": "global"}, "dp-mode", "local, central"),
        ({"feature-scale": "1,x"}, "feature-scale", "comma-separated"),
        ({"feature-scale": "1,inf"}, "feature-scale", "comma-separated"),
        ({"model-spec": "{not json"}, "model-spec", "JSON object"),
        ({"model-spec": "[1, 2]"}, "model-spec", "JSON object"),
        ({"feature-module": "m@1", "feature-module-sha256": "abc"}, "feature-module-sha256", "64 hex"),
        ({"max-runtime-major": -1}, "max-runtime-major", "whole number >= 0"),
        ({"secagg-bits": 40}, "secagg-bits", "[2, 32]"),
        ({"history-dir": ""}, "history-dir", "not empty"),
        ({"trim-fraction": 0.5}, "trim-fraction", "[0, 0.5)"),
        ({"round-deadline-s": 0}, "round-deadline-s", "> 0"),
    ],
)
def test_a_bad_value_is_refused_naming_key_value_and_what_is_allowed(
    cfg: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_run_config(cfg)
    assert info.value.key == key
    assert key in str(info.value) and repr(cfg[key]) in str(info.value) and allowed in str(info.value)
    assert isinstance(info.value, FLClientError) and isinstance(info.value, ValueError)


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    with pytest.raises(RunConfigError, match=r"'num-server-round' \(did you mean 'num-server-rounds'\?\)") as info:
        RunConfig.from_run_config({"num-server-round": 3, "lr": 0.1})
    assert info.value.key == "num-server-round"
    with pytest.raises(RunConfigError, match="unknown keys 'a-key', 'b-key'"):
        RunConfig.from_run_config({"b-key": 1, "a-key": 2})


@pytest.mark.parametrize(
    ("cfg", "key", "match"),
    [
        ({"dp-mode": "central", "clip-norm": 1, "dp-noise-multiplier": 1, "secagg": True}, "dp-mode", "without secagg"),
        ({"dp-mode": "central", "clip-norm": 1, "dp-noise-multiplier": 1, "aggregation": "mean"}, "dp-mode", "fedavg"),
        ({"dp-mode": "central", "dp-noise-multiplier": 1}, "clip-norm", "positive clip-norm"),
        ({"dp-mode": "central", "clip-norm": 1}, "dp-noise-multiplier", "positive dp-noise-multiplier"),
        ({"update-codec": "fp16", "dp-noise-multiplier": 1}, "dp-noise-multiplier", "needs clip-norm"),
        ({"secagg": True, "update-codec": "fp16"}, "secagg", "update-codec"),
        ({"secagg": True, "clip-norm": 1, "dp-noise-multiplier": 1}, "dp-noise-multiplier", "would not add"),
        ({"clip-norm": 1, "dp-noise-multiplier": 1}, "dp-noise-multiplier", "only with update-codec"),
        (
            {"secagg": True, "personal-layers": 1, "model-spec": json.dumps({"layers": [[1, 2], [2, 1]]})},
            "secagg",
            "personal",
        ),
        ({"federated-scaler": "true"}, "federated-scaler", "feature-module"),
        ({"feature-module-sha256": SHA}, "feature-module-sha256", "feature-module"),
        ({"feature-module": "m@1.0.0"}, "feature-module", "sha256"),  # a pin without its hash pins nothing
        ({"feature-module": "m", "feature-module-sha256": SHA}, "feature-module", "version"),
        ({"model-spec": '{"layers": [[2, 1, "tanh-ish"]]}'}, "model-spec", "activation"),
        ({"model-spec": '{"layers": []}'}, "model-spec", "layers"),
        ({"min-runtime-version": "1.x"}, "min-runtime-version", "version"),
        ({"model-via-tuf": True}, "model-via-tuf", "artifacts-repo"),
        ({"artifacts-repo": "repo"}, "artifacts-keys", "artifacts-keys"),
        ({"target": 2, "min-replies": 3}, "min-replies", "must not exceed target"),
        ({"personal-layers": 1}, "personal-layers", "personal-layers"),  # the default model has one layer only
    ],
)
def test_rules_across_keys_are_checked_before_the_first_round(cfg: dict[str, Any], key: str, match: str) -> None:
    with pytest.raises(RunConfigError, match=match) as info:
        RunConfig.from_run_config(cfg)
    assert info.value.key == key


def test_constructing_directly_converts_and_checks_the_same_way() -> None:
    assert RunConfig(history_dir="models", feature_scale="1,2").history_dir == Path("models")  # type: ignore[arg-type]
    with pytest.raises(RunConfigError, match="'target'"):
        RunConfig(target=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().lr = 1.0  # type: ignore[misc]


def test_every_caller_in_the_repository_passes_a_valid_run_config(tmp_path: Path) -> None:
    from flclient.sim import FleetConfig, LiveFleetConfig

    base = {
        "num-server-rounds": 2,
        "min-nodes": 2,
        "node-wait-s": 30,
        "round-timeout-s": 60,
        "feature-module": "device_context@1.0.0",
        "feature-module-sha256": SHA,
        "feature-scale": "23,1,10",
        "model-spec": DEFAULT_MODEL_SPEC,
        "lr": 0.5,
        "epochs": 2,
        "metrics-path": str(tmp_path / "metrics.jsonl"),
        "history-dir": str(tmp_path / "models"),
    }
    overrides: list[dict[str, Any]] = [  # what tests/flclient/e2e and benchmarks/bench_quality.py pass
        {"update-codec": "fp16", "clip-norm": 5.0, "dp-noise-multiplier": 0.5},
        {"dp-mode": "central", "clip-norm": 2.0, "dp-noise-multiplier": 1.0, "dp-population": 20},
        {"update-codec": "rotated2", "clip-norm": 50.0},
        {"secagg": "true", "secagg-clip": 4.0, "min-nodes": 3},
        {"model-via-tuf": "true", "require-signed-updates": "true", "artifacts-repo": "r", "artifacts-keys": "a,b"},
        {"federated-scaler": "true", "eval-every": 2, "server-optimizer": "fedavgm", "aggregation": "mean"},
        {"update-codec": "topk", "topk-fraction": 0.05, "init-seed": 3, "seed": 3},
        {"secagg": "true", "secagg-clip": 50.0, "secagg-bits": 24, "aggregation": "mean"},
        {
            "start-version": 2,
            "personal-layers": 1,
            "model-spec": json.dumps({"layers": [[1, 8, "relu"], [8, 2, "none"]]}),
        },
    ]
    for extra in overrides:
        RunConfig.from_run_config({**base, **extra})
    live = LiveFleetConfig(fleet=FleetConfig(devices=4, goal=3, rounds=2, mix=(("phone", 1.0),)))
    RunConfig.from_run_config(live.run_config(tmp_path))


def test_the_plan_carries_only_what_the_run_asks_for() -> None:
    plain = plan_from_config(RunConfig()).train_task({}, server_round=2, version=5).to_records()["config"].values
    assert {k: plain[k] for k in ("epochs", "batch-size", "lr", "seed", "eval-fraction")} == {
        "epochs": 1,
        "batch-size": 32,
        "lr": 0.1,
        "seed": 0,
        "eval-fraction": 0.2,
    }
    assert (plain["server-round"], plain["model-version"]) == (2, 5)
    assert not {"proximal-mu", "feature-module", "update-codec", "clip-norm", "dp-mode"} & set(plain)
    run = RunConfig.from_run_config(
        {
            "feature-module": "m@1.0.0",
            "feature-module-sha256": SHA,
            "feature-scale": "2,4",
            "proximal-mu": 0.01,
            "dp-mode": "central",
            "clip-norm": 1,
            "dp-noise-multiplier": 2,
        }
    )
    plan = plan_from_config(run)
    config = plan.train_task(init_params(plan.model, 0), server_round=1, version=1).to_records()["config"].values
    assert config["feature-scale"] == [2.0, 4.0] and config["feature-module-sha256"] == SHA
    assert config["update-codec"] == "fp32" and config["dp-mode"] == "central"  # central DP: the devices clip
    assert (config["clip-norm"], config["dp-noise-multiplier"], config["proximal-mu"]) == (1.0, 2.0, 0.01)
    assert plan_from_config(RunConfig(backend="numpy, onnx")).requirements.required_backends == ("numpy", "onnx")  # type: ignore[arg-type]


def test_the_schedule_interleaves_evaluation_rounds() -> None:
    plan = [(p.number, p.evaluating, p.group) for p in schedule(RunConfig(rounds=3, eval_every=1))]
    assert plan == [
        (1, False, "1"),
        (1, True, "eval-1"),
        (2, False, "2"),
        (2, True, "eval-2"),
        (3, False, "3"),
        (4, True, "4"),
    ]
    assert [p.final for p in schedule(RunConfig(rounds=1))] == [False, True]


_VALUES = {
    "num-server-rounds": st.integers(0, 10_000),
    "min-nodes": st.integers(0, 1000),
    "round-timeout-s": st.floats(1e-3, 1e6),
    "over-selection": st.floats(0, 10),
    "round-deadline-s": st.floats(1e-3, 1e6),
    "selection-seed": st.integers(0, 2**63),
    "lr": st.floats(1e-9, 10),
    "eval-fraction": st.floats(0, 0.99),
    "aggregation": st.sampled_from(AGGREGATIONS),
    "server-optimizer": st.sampled_from(SERVER_OPTIMIZERS),
    "update-codec": st.sampled_from(UPDATE_CODECS),
    "feature-scale": st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4),
    "secagg": st.booleans(),
    "require-signed-updates": st.booleans(),
    "history-dir": st.text("abc/_-", min_size=1).filter(lambda s: s.strip() != ""),
    "device-keys": st.text("abc/_-", min_size=1).filter(lambda s: s.strip() != ""),
}


@given(st.fixed_dictionaries({}, optional=_VALUES))
def test_a_run_config_round_trips_as_values_and_as_strings(cfg: dict[str, Any]) -> None:
    if "feature-scale" in cfg:
        cfg["feature-scale"] = ",".join(str(v) for v in cfg["feature-scale"])
    try:
        run = RunConfig.from_run_config(cfg)
    except RunConfigError as exc:
        assert exc.key in ("secagg",)  # the only rule these keys can break: secagg with update-codec
        return
    assert RunConfig.from_run_config(run.to_run_config()) == run
    assert RunConfig.from_run_config({k: str(v) for k, v in run.to_run_config().items()}) == run


_NUMERIC = sorted(k for k, f in KEYS.items() if "number" in f.metadata["conv"].text)


@given(st.sampled_from(_NUMERIC), st.text(min_size=1).filter(lambda s: not _is_number(s)))
def test_a_number_key_refuses_anything_but_a_number(key: str, raw: str) -> None:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_run_config({key: raw})
    assert info.value.key == key and repr(raw) in str(info.value)


@given(st.text(min_size=1).filter(lambda k: k not in KEYS))
def test_any_unknown_key_is_refused_by_name(key: str) -> None:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_run_config({key: "1"})
    assert info.value.key == key


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def test_run_config_error_is_in_the_flclient_family_and_tree() -> None:
    import flclient
    from flclient import _errors

    assert flclient.RunConfigError is RunConfigError and "RunConfigError" in flclient.__all__
    assert issubclass(RunConfigError, _errors.FLClientError) and "── RunConfigError " in (_errors.__doc__ or "")
