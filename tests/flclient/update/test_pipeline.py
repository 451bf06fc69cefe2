"""The update pipeline: stage order, clipping, DP noise and its ledger charge, LoRA, error feedback, wire form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flclient.update
from flclient import PrivacyBudgetExhausted, UpdateCodecError, UpdateInputError
from flclient.update import (
    ClipConfig,
    ClipStage,
    EncodeStage,
    ErrorFeedback,
    InMemoryResidualStore,
    LosslessFloat32Codec,
    PrivacyBudget,
    PrivacyConfig,
    PrivacyLedger,
    PrivacyStage,
    RotatedCodec,
    SqliteResidualStore,
    TopKCodec,
    UpdateDraft,
    UpdatePipeline,
    clip_update,
    compute_delta,
    decode_update,
)
from flclient.update._clip import update_norm


def _models(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    old = {"dense0_w": rng.standard_normal((64, 32)).astype(np.float32), "dense0_b": np.zeros(32, np.float32)}
    new = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in old.items()}
    return new, old


def test_public_surface_is_sorted_and_complete() -> None:
    names = flclient.update.__all__
    assert names == sorted(names)
    public = {n for n in dir(flclient.update) if not n.startswith("_")}
    assert set(names) == public


def test_stages_run_in_the_fixed_order_and_out_of_order_is_refused() -> None:
    rng = np.random.default_rng(0)
    clip = ClipStage(config=ClipConfig(max_norm=1.0))
    noise = PrivacyStage(config=PrivacyConfig(mode="local", noise_multiplier=0.5), rng=rng)
    encode = EncodeStage(codec=LosslessFloat32Codec(), rng=rng)
    seen: list[tuple[str, float]] = []
    new, old = _models(rng)
    UpdatePipeline([clip, noise, encode]).run(
        round_id="r", new=new, old=old, trace=lambda name, d: seen.append((name, update_norm(d.tensors)))
    )
    assert [s[0] for s in seen] == ["ClipStage", "PrivacyStage", "EncodeStage"]
    assert seen[0][1] <= 1.0 < seen[1][1]  # clipped, then noised
    for bad in ([noise, clip, encode], [clip, encode, noise], [clip, clip, encode], [clip, noise], [noise, encode], []):
        with pytest.raises(ValueError):
            UpdatePipeline(bad)


def test_clipping_per_update_and_per_layer() -> None:
    rng = np.random.default_rng(1)
    new, old = _models(rng)
    delta = compute_delta(new, old)
    clipped, report = clip_update(delta, ClipConfig(max_norm=2.0))
    assert report.clipped and update_norm(clipped) <= 2.0
    np.testing.assert_allclose(clipped["dense0_w"] / delta["dense0_w"], update_norm(clipped) / update_norm(delta))
    per_layer, _ = clip_update(delta, ClipConfig(max_norm=2.0, per_layer=True))
    total = sum(a.size for a in delta.values())
    for name, a in per_layer.items():
        assert update_norm({name: a}) <= 2.0 * np.sqrt(a.size / total) * (1 + 1e-6)
    small, report = clip_update(delta, ClipConfig(max_norm=1e9))
    assert not report.clipped and all(np.array_equal(small[k], delta[k]) for k in delta)
    with pytest.raises(UpdateInputError):
        clip_update({"w": np.array([np.nan], np.float32)}, ClipConfig(max_norm=1.0))
    with pytest.raises(ValueError):
        ClipConfig(max_norm=-1.0)


def test_local_dp_noise_has_the_stated_std_and_is_charged_before_it_is_drawn(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ledger = PrivacyLedger(tmp_path / "state.db", budget=PrivacyBudget(epsilon=50.0, delta=1e-5))
    stage = PrivacyStage(config=PrivacyConfig(mode="local", noise_multiplier=0.7), ledger=ledger, rng=rng)
    zeros = {"w": np.zeros(200_000, np.float32)}
    draft = UpdateDraft(round_id="r1", tensors=zeros, record={"clip": {"max_norm": 3.0, "per_layer": False}})
    out = stage(draft)
    assert float(out.tensors["w"].std()) == pytest.approx(0.7 * 3.0, rel=0.01)
    assert out.record["privacy"]["noise_std"] == pytest.approx(2.1)
    assert [e.mechanism for e in ledger.entries()] == ["gaussian-local"]
    assert "seed" not in str(out.record["privacy"])
    central = PrivacyStage(config=PrivacyConfig(mode="central", noise_multiplier=0.7), ledger=ledger)(draft)
    assert np.array_equal(central.tensors["w"], zeros["w"])
    assert central.record["privacy"]["server_noise_std"] == pytest.approx(2.1)
    assert [e.mechanism for e in ledger.entries()] == ["gaussian-local", "gaussian-central"]
    ledger.close()


def test_exhausted_budget_stops_the_round_before_noise_and_encoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ledger = PrivacyLedger(tmp_path / "state.db", budget=PrivacyBudget(epsilon=1.0, delta=1e-5))
    seen: list[str] = []
    pipeline = UpdatePipeline(
        [
            ClipStage(config=ClipConfig(max_norm=1.0)),
            PrivacyStage(config=PrivacyConfig(mode="local", noise_multiplier=0.5), ledger=ledger, rng=rng),
            EncodeStage(codec=RotatedCodec(bits=2), rng=rng),
        ]
    )
    new, old = _models(rng)
    with pytest.raises(PrivacyBudgetExhausted):
        pipeline.run(round_id="r", new=new, old=old, trace=lambda name, _: seen.append(name))
    assert seen == ["ClipStage"] and ledger.entries() == []
    ledger.close()


def test_encoded_update_round_trips_through_the_wire_form() -> None:
    rng = np.random.default_rng(4)
    new, old = _models(rng)
    pipeline = UpdatePipeline(
        [ClipStage(config=ClipConfig(max_norm=5.0)), EncodeStage(codec=LosslessFloat32Codec(), rng=rng)]
    )
    update = pipeline.run(round_id="r9", new=new, old=old)
    manifest, layers = decode_update(update.to_bytes(), max_coords=10**6)
    assert manifest["codec"]["name"] == "fp32_lossless" and manifest["clip"]["max_norm"] == 5.0
    assert manifest["round_id"] == "r9"
    clipped, _ = clip_update(compute_delta(new, old), ClipConfig(max_norm=5.0))
    for name, a in clipped.items():
        np.testing.assert_array_equal(layers[name], a)
    wire = update.to_bytes()
    with pytest.raises(UpdateCodecError):
        decode_update(wire, max_coords=100)
    for cut in (3, 10, len(wire) // 2, len(wire) - 1):
        with pytest.raises(UpdateCodecError):
            decode_update(wire[:cut], max_coords=10**6)
    with pytest.raises(UpdateCodecError):
        decode_update(wire + b"x", max_coords=10**6)


def test_lora_updates_carry_only_the_adapters() -> None:
    rng = np.random.default_rng(5)
    old = {
        "dense0_w": np.ones((8, 8), np.float32),
        "dense0_lora_a": np.zeros((8, 2), np.float32),
        "dense0_lora_b": np.zeros((2, 8), np.float32),
    }
    new = {k: v + 1 for k, v in old.items()}
    assert sorted(compute_delta(new, old)) == ["dense0_lora_a", "dense0_lora_b"]
    update = UpdatePipeline([EncodeStage(codec=LosslessFloat32Codec(), rng=rng)]).run(round_id="r", new=new, old=old)
    assert [name for name, _ in update.manifest["layers"]] == ["dense0_lora_a", "dense0_lora_b"]
    assert sorted(compute_delta(new, old, names=["dense0_w"])) == ["dense0_w"]


def test_error_feedback_persists_the_residual_across_rounds(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    old = {"w": np.zeros(5000, np.float32)}
    deltas = [rng.standard_normal(5000).astype(np.float32) for _ in range(5)]
    sent = np.zeros(5000)
    for i, d in enumerate(deltas):
        with SqliteResidualStore(tmp_path / "state.db") as store:  # a fresh process each round
            stage = EncodeStage(codec=TopKCodec(fraction=0.05), rng=rng, error_feedback=ErrorFeedback(store=store))
            update = UpdatePipeline([stage]).run(round_id=f"r{i}", new={"w": d}, old=old)
            sent += decode_update(update.to_bytes(), max_coords=5000)[1]["w"]
            residual = store.load("w")
    assert residual is not None
    # Error feedback: what was sent plus what is still owed is everything that was produced.
    np.testing.assert_allclose(sent + residual, np.sum(deltas, axis=0), atol=1e-3)
    memory = InMemoryResidualStore()
    EncodeStage(codec=TopKCodec(fraction=0.05), rng=rng, error_feedback=ErrorFeedback(store=memory))(
        UpdateDraft(round_id="x", tensors={"w": deltas[0]})
    )
    assert memory.load("w") is not None
