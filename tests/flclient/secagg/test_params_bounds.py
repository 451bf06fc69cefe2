"""Round parameters a hostile or careless coordinator might send: bounded, and never the whole graph on a device."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient.secagg import SecAggParams, SecAggProtocolError, choose_degree, neighbour_graph
from flclient.secagg._params import _MAX_EDGES, _PARAMS_HEAD, neighbours_of

SEED = b"g" * 32


def _params(n: int, degree: int, threshold: int) -> SecAggParams:
    return SecAggParams(
        round_tag="r",
        node_ids=tuple(range(1, n + 1)),
        degree=degree,
        threshold=threshold,
        bits=32,
        clip=1.0,
        dim=10,
        graph_seed=SEED,
    )


def _wire(n: int, degree: int, threshold: int) -> bytes:
    head = _PARAMS_HEAD.pack(1, n, degree, threshold, 32, 0, 1.0, 0.0, 10, SEED, 1)
    return head + b"r" + struct.pack(f"<{n}Q", *range(1, n + 1))


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, int, bytes]:
    n = draw(st.integers(3, 60))
    k = draw(st.sampled_from([n - 1, *range(2, n - 1, 2)]))
    return n, k, draw(st.binary(min_size=32, max_size=32))


@given(graphs())
def test_one_devices_neighbours_are_its_row_of_the_whole_graph(case: tuple[int, int, bytes]) -> None:
    n, k, seed = case
    graph = neighbour_graph(n, k, seed)
    assert [neighbours_of(n, k, seed, i) for i in range(n)] == list(graph)


def test_a_complete_graph_of_65536_devices_is_refused_before_any_graph_is_built() -> None:
    n = 1 << 16
    with pytest.raises(SecAggProtocolError, match="neighbour slots"):
        SecAggParams.from_bytes(_wire(n, n - 1, n // 2))
    with pytest.raises(ValueError, match=f"{n * (n - 1)} neighbour slots"):
        _params(n, n - 1, n // 2)


def test_a_device_derives_its_neighbours_without_the_whole_graph() -> None:
    n, k = 1 << 16, 102  # what choose_degree gives for 65536 devices
    assert n * k <= _MAX_EDGES
    params = SecAggParams.from_bytes(_wire(n, k, 52))
    tracemalloc.start()
    try:
        mine = params.neighbours(12345)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(mine) == k and 12345 not in mine
    assert "graph" not in params.__dict__  # the cached whole graph was never built
    assert peak < 32 << 20, f"deriving one neighbourhood peaked at {peak} bytes"


def test_choose_degree_stays_within_the_bound_and_never_overflows() -> None:
    k, t = choose_degree(1 << 16)
    assert (1 << 16) * k <= _MAX_EDGES and k // 2 < t <= k
    assert choose_degree(1500, dropout=0.45, corruption=0.3) == (1499, 750)  # was OverflowError in the binomial
    with pytest.raises(ValueError, match="neighbour slots"):
        choose_degree(1 << 16, dropout=0.45, corruption=0.3)  # only a complete graph would do: too big
