from __future__ import annotations

import flclient.sim


def test_all_is_the_sorted_public_surface() -> None:
    assert flclient.sim.__all__ == sorted(flclient.sim.__all__)
    assert set(flclient.sim.__all__) == {n for n in dir(flclient.sim) if not n.startswith("_")} - {"annotations"}
