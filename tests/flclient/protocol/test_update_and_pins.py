"""UpdateSpec and ArtifactPins: their config values read back exactly, and inconsistent ones are named."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient import ProtocolError
from flclient.protocol import ArtifactPins, FeaturePin, Key, ModelPin, UpdateSpec, ValueReader

from .strategies import pins, updates


@given(updates())
def test_update_values_read_back_exactly(spec: UpdateSpec) -> None:
    reader = ValueReader(spec.to_values(), where="config")
    assert UpdateSpec.read(reader) == spec
    reader.finish()
    assert spec.private == (spec.noise_multiplier > 0)


def test_the_default_update_sends_nothing() -> None:
    assert UpdateSpec().to_values() == {}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({Key.DP_NOISE_MULTIPLIER: 1.0}, Key.DP_NOISE_MULTIPLIER),
        ({Key.DP_NOISE_MULTIPLIER: 1.0, Key.CLIP_NORM: 1.0}, Key.DP_NOISE_MULTIPLIER),
        ({Key.UPDATE_CODEC: "fp16", Key.SECAGG_BITS: 8}, Key.SECAGG_BITS),
        ({Key.TOPK_FRACTION: 1.5}, Key.TOPK_FRACTION),
        ({Key.CLIP_NORM: -1.0}, Key.CLIP_NORM),
        ({Key.UPDATE_CODEC: "zstd"}, Key.UPDATE_CODEC),
        ({Key.DP_MODE: "global"}, Key.DP_MODE),
    ],
)
def test_inconsistent_update_values_name_their_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ProtocolError) as info:
        UpdateSpec.read(ValueReader(values, where="config"))
    assert info.value.key == key and key in str(info.value)


@given(pins)
def test_pin_values_read_back_exactly(p: ArtifactPins) -> None:
    reader = ValueReader(p.to_values(), where="config")
    assert ArtifactPins.read(reader) == p
    reader.finish()
    if p.model is not None:
        assert p.to_values()[Key.MODEL_PIN] == f"{p.model.name}@{p.model.version}"


@given(st.sampled_from(["", "a@b", "a" * 300]))
def test_a_feature_pin_that_cannot_be_split_back_is_refused_when_built(name: str) -> None:
    with pytest.raises(ValueError, match="name@version"):
        ArtifactPins(feature_module=FeaturePin(name=name, version="1.0", sha256="0" * 64))


@pytest.mark.parametrize("name", ["", "a@b", "-a", "a b", "a" * 129])
def test_a_model_pin_name_is_refused_when_built(name: str) -> None:
    with pytest.raises(ValueError, match="name@version"):
        ModelPin(name=name, version="1", sha256="0" * 64)
