"""The server's decode path for encoded device updates (numpy only, no flwr)."""

from __future__ import annotations

import numpy as np
import pytest

from flclient import UpdateCodecError
from flclient._task import update_pipeline
from flclient.server._aggregate import apply_encoded_update

BASE = {"w": np.zeros((6, 4), np.float32), "b": np.ones(4, np.float32)}


def _payload(codec: str, new: dict[str, np.ndarray] | None = None) -> bytes:
    pipeline = update_pipeline({"update-codec": codec, "clip-norm": 10.0}, rng=lambda: np.random.default_rng(0))
    assert pipeline is not None
    new = new or {"w": np.full((6, 4), 0.5, np.float32), "b": np.full(4, 1.25, np.float32)}
    return pipeline.run(round_id="1/0", new=new, old=BASE, names=list(BASE)).to_bytes()


def test_fp32_update_is_applied_exactly() -> None:
    out = apply_encoded_update(BASE, _payload("fp32"))
    np.testing.assert_array_equal(out["w"], 0.5)
    np.testing.assert_array_equal(out["b"], 1.25)


def test_rotated2_update_is_close() -> None:
    out = apply_encoded_update(BASE, _payload("rotated2"))
    assert set(out) == set(BASE) and out["w"].shape == (6, 4)
    assert np.abs(out["w"] - 0.5).mean() < 0.5


@pytest.mark.parametrize("cut", ["flip", "truncate", "trailing"])
def test_corrupted_payload_is_rejected(cut: str) -> None:
    data = bytearray(_payload("int8"))
    if cut == "flip":
        data[len(data) - 3] ^= 0xFF
    elif cut == "truncate":
        data = data[:-5]
    else:
        data += b"\0"
    with pytest.raises(UpdateCodecError):
        apply_encoded_update(BASE, bytes(data))


def test_other_layers_shapes_or_too_many_coordinates_are_rejected() -> None:
    payload = _payload("fp32")
    for base in (
        {"w": BASE["w"], "v": BASE["b"]},  # other layer names
        {"w": BASE["w"], "b": np.ones(5, np.float32)},  # other shapes
        {"w": np.zeros((2, 2), np.float32), "b": BASE["b"]},  # more coordinates than the model has
    ):
        with pytest.raises(UpdateCodecError):
            apply_encoded_update(base, payload)


def test_unknown_codec_is_declined() -> None:
    from flclient import TaskDeclined

    with pytest.raises(TaskDeclined, match="update-codec"):
        update_pipeline({"update-codec": "zip"})
    with pytest.raises(TaskDeclined, match="clip-norm"):
        update_pipeline({"update-codec": "fp16", "dp-noise-multiplier": 1.0})
    assert update_pipeline({}) is None
