"""The personal-layer split reads the server's model-spec: hostile JSON there declines the task, nothing else."""

from __future__ import annotations

import pytest

from flclient import TaskDeclined
from flclient._personal import personal_parameter_names


@pytest.mark.parametrize(
    "spec",
    [
        "[" * 100_000 + "]" * 100_000,  # was a RecursionError, which wedged the device on the instruction
        '{"layers": [[4, 2, "relu"]], "layers": [[4, 2, "relu"], [2, 2, "linear"]]}',
        '{"layers": [[Infinity, 2, "relu"], [2, 2, "linear"]]}',
    ],
)
def test_hostile_model_spec_declines_the_task(spec: str) -> None:
    with pytest.raises(TaskDeclined, match="personal-layers"):
        personal_parameter_names({"model-spec": spec, "personal-layers": 1})


def test_a_good_model_spec_still_splits() -> None:
    spec = '{"layers": [[4, 8, "relu"], [8, 2, "linear"]]}'
    assert personal_parameter_names({"model-spec": spec, "personal-layers": 1}) == {"dense1_weight", "dense1_bias"}
