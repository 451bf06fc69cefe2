"""Public round parameters, their wire form, the choice of (k, t) and the k-regular neighbour graph."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from .._errors import SecAggProtocolError
from ._wire import Reader

__all__ = ["PRGS", "SecAggParams", "choose_degree", "neighbour_graph", "neighbours_of"]

PRGS: tuple[str, ...] = ("chacha20", "aes-ctr")
Prg = Literal["chacha20", "aes-ctr"]

_PARAMS_HEAD = struct.Struct("<BIIIBBddI32sH")
_PARAMS_VERSION = 1
_MAX_NODES = 1 << 16
_MAX_DIM = (1 << 31) - 1
# n * k neighbour slots: the coordinator relays a ciphertext per slot and holds the graph; a device never builds
# it (it derives its own neighbours), but a round beyond this is refused by both.
_MAX_EDGES = 1 << 23


def _binom_pmf(k: int, p: float) -> list[float]:
    """P[Binomial(k, p) = m] for m = 0..k, in log space (the coefficients overflow floats past k ~ 1000)."""
    if p <= 0.0 or p >= 1.0:
        certain = 0 if p <= 0.0 else k
        return [1.0 if m == certain else 0.0 for m in range(k + 1)]
    log_p, log_q, log_k = math.log(p), math.log1p(-p), math.lgamma(k + 1)
    return [
        math.exp(log_k - math.lgamma(m + 1) - math.lgamma(k - m + 1) + m * log_p + (k - m) * log_q)
        for m in range(k + 1)
    ]


def choose_degree(
    n: int,
    *,
    dropout: float = 0.2,
    corruption: float = 0.05,
    security_bits: int = 40,
    correctness_bits: int = 20,
) -> tuple[int, int]:
    """The smallest neighbour-graph degree ``k`` and its threshold ``t`` for ``n`` devices (Bell et al. 2020).

    Each device drops out independently with probability ``dropout`` and is corrupted (colluding with the
    server) with probability ``corruption``. ``(k, t)`` must satisfy, over all ``n`` neighbourhoods together:
    the chance that some device keeps fewer than ``t`` surviving neighbours is at most ``2^-correctness_bits``,
    the chance that some neighbourhood holds ``t`` corrupted devices is at most ``2^-security_bits``, and
    ``t > k / 2`` so the server can never gather both kinds of shares of one secret from honest devices.
    When no sparse graph qualifies the graph is complete (``k = n - 1``) with the smallest ``t > k / 2``,
    which tolerates the most dropouts. The graph is held to ``n * k <= 2^23`` neighbour slots (see
    :class:`SecAggParams`): ``ValueError`` when no graph within that bound qualifies.

    Example: ``choose_degree(1000, dropout=0.2)`` gives a graph far sparser than the complete one.
    """
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 devices, got {n}")
    if not (0 <= dropout < 0.5):
        raise ValueError(f"dropout must be in [0, 0.5), got {dropout}")
    if not (0 <= corruption < 0.5):
        raise ValueError(f"corruption must be in [0, 0.5), got {corruption}")
    fail_ok = 2.0**-correctness_bits / n
    leak_ok = 2.0**-security_bits / n
    for k in range(2, min(n - 1, _MAX_EDGES // n + 1), 2):
        survive = _binom_pmf(k, 1 - dropout)
        # P[corrupted >= t] summed from its small end: 1 - P[< t] would lose the 2^-40-sized tail to rounding.
        corrupt_from = list(itertools.accumulate(reversed(_binom_pmf(k, corruption))))[::-1]
        first = k // 2 + 1
        below_survive = sum(survive[:first])  # P[survivors < t], extended one term per t
        for t in range(first, k + 1):
            if below_survive > fail_ok:
                break
            if corrupt_from[t] <= leak_ok:
                return k, t
            below_survive += survive[t]
    if n * (n - 1) > _MAX_EDGES:
        raise ValueError(
            f"no neighbour graph for {n} devices within {_MAX_EDGES} neighbour slots meets dropout={dropout}, "
            f"corruption={corruption}; use fewer devices per round or lower the assumed dropout/corruption"
        )
    return n - 1, (n - 1) // 2 + 1


def _perm_key(seed: bytes, i: int) -> bytes:
    return hashlib.sha256(seed + i.to_bytes(4, "little")).digest()


def _check_degree(n: int, k: int) -> None:
    if not 1 <= k <= n - 1:
        raise ValueError(f"degree k must be in [1, n-1] = [1, {n - 1}], got {k}")
    if k != n - 1 and k % 2:
        raise ValueError(f"a sparse neighbour graph needs an even degree, got {k}")


def neighbours_of(n: int, k: int, seed: bytes, index: int) -> frozenset[int]:
    """Device ``index``'s neighbour set in :func:`neighbour_graph`, in O(n) time and memory (not O(n k)).

    In the Harary graph a device's neighbours are the ``k / 2`` devices on either side of it in the seeded order.
    """
    _check_degree(n, k)
    if not 0 <= index < n:
        raise ValueError(f"device index must be in [0, {n}), got {index}")
    if k == n - 1:
        return frozenset(range(n)) - {index}
    order = sorted(range(n), key=lambda i: _perm_key(seed, i))
    pos = order.index(index)
    return frozenset(order[(pos + step) % n] for step in range(-(k // 2), k // 2 + 1) if step)


def neighbour_graph(n: int, k: int, seed: bytes) -> tuple[frozenset[int], ...]:
    """The k-regular neighbour sets of devices ``0..n-1``: a Harary graph over a seeded permutation.

    Positions come from sorting ``sha256(seed || index)``, so every party derives the same graph from the public
    seed without depending on a numpy version. ``k`` must be even or equal ``n - 1`` (complete graph).
    """
    _check_degree(n, k)
    if k == n - 1:
        everyone = frozenset(range(n))
        return tuple(everyone - {i} for i in range(n))
    order = sorted(range(n), key=lambda i: _perm_key(seed, i))
    half = k // 2
    out: list[set[int]] = [set() for _ in range(n)]
    for pos, node in enumerate(order):
        for step in range(1, half + 1):
            other = order[(pos + step) % n]
            out[node].add(other)
            out[other].add(node)
    return tuple(frozenset(s) for s in out)


@dataclass(frozen=True, kw_only=True)
class SecAggParams:
    """The public parameters of one SecAgg+ round, chosen by the coordinator and sent to every device.

    ``node_ids`` are the Flower node ids taking part, sorted; a device's protocol index is its position there.
    ``bits`` is the ring Z_(2^bits) of the masked sum; ``clip`` the per-coordinate range ``[-clip, clip]`` of the
    shared scale; ``noise_std`` the std (in update units) of the discrete noise each device adds for distributed
    DP (0: none). Every message of the round is bound to :attr:`round_id`, a hash of all of these.
    """

    round_tag: str
    node_ids: tuple[int, ...]
    degree: int
    threshold: int
    bits: int
    clip: float
    dim: int
    graph_seed: bytes
    noise_std: float = 0.0
    prg: Prg = "chacha20"

    def __post_init__(self) -> None:
        n = len(self.node_ids)
        if not 2 <= n <= _MAX_NODES:
            raise ValueError(f"a round needs between 2 and {_MAX_NODES} devices, got {n}")
        if list(self.node_ids) != sorted(set(self.node_ids)) or any(not 0 <= x < 1 << 64 for x in self.node_ids):
            raise ValueError("node_ids must be sorted, unique unsigned 64-bit ids")
        if not 1 <= self.degree <= n - 1 or (self.degree != n - 1 and self.degree % 2):
            raise ValueError(f"degree must be even and in [2, n-2], or n-1 = {n - 1}; got {self.degree}")
        if n * self.degree > _MAX_EDGES:
            raise ValueError(
                f"{n} devices of degree {self.degree} make {n * self.degree} neighbour slots, more than the "
                f"{_MAX_EDGES} allowed; use a sparser graph (choose_degree) or fewer devices per round"
            )
        if not self.degree // 2 < self.threshold <= self.degree:
            raise ValueError(
                f"threshold must be in (k/2, k] = ({self.degree / 2}, {self.degree}], got {self.threshold}"
            )
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in [2, 32], got {self.bits}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}")
        if not 1 <= self.dim <= _MAX_DIM:
            raise ValueError(f"dim must be in [1, 2^31), got {self.dim}")
        if len(self.graph_seed) != 32:
            raise ValueError("graph_seed must be 32 bytes")
        if self.prg not in PRGS:
            raise ValueError(f"prg must be one of {PRGS}, got {self.prg!r}")
        if len(self.round_tag.encode()) > 1024:
            raise ValueError("round_tag must be at most 1024 bytes of UTF-8")
        if self.levels < 1:
            raise ValueError(
                f"{self.bits} bits leave no room for {n} devices' values plus noise; use more bits or less noise"
            )

    @property
    def n(self) -> int:
        """How many devices the round started with."""
        return len(self.node_ids)

    @cached_property
    def levels(self) -> int:
        """``M``: a value of ``clip`` quantises to ``M``, so that ``n`` values plus 10 sigma of noise fit the ring.

        Without noise this is ``floor((2^(b-1) - 1) / n)``: about ``log2(n)`` bits of headroom.
        """
        margin = self.n + 10.0 * math.sqrt(self.n) * self.noise_std / self.clip
        return math.floor(((1 << (self.bits - 1)) - 1) / margin)

    @cached_property
    def round_id(self) -> bytes:
        """16 bytes that bind a message to exactly these parameters."""
        return hashlib.sha256(b"flclient-secagg-round\x00" + self.to_bytes()).digest()[:16]

    @cached_property
    def graph(self) -> tuple[frozenset[int], ...]:
        """Neighbour sets by device index (the coordinator's view; a device needs only :meth:`neighbours`)."""
        return neighbour_graph(self.n, self.degree, self.graph_seed)

    def neighbours(self, index: int) -> frozenset[int]:
        """The neighbour set of device ``index``, derived without building the whole graph."""
        if "graph" in self.__dict__:
            return self.graph[index]
        return neighbours_of(self.n, self.degree, self.graph_seed, index)

    def index_of(self, node_id: int) -> int:
        """The protocol index of a Flower node id (``ValueError`` when it does not take part)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.node_ids[mid] < node_id:
                lo = mid + 1
            else:
                hi = mid
        if lo == self.n or self.node_ids[lo] != node_id:
            raise ValueError(f"node {node_id} does not take part in this round")
        return lo

    def to_bytes(self) -> bytes:
        """Canonical binary form (the body of a setup request)."""
        tag = self.round_tag.encode()
        head = _PARAMS_HEAD.pack(
            _PARAMS_VERSION,
            self.n,
            self.degree,
            self.threshold,
            self.bits,
            PRGS.index(self.prg),
            self.clip,
            self.noise_std,
            self.dim,
            self.graph_seed,
            len(tag),
        )
        return head + tag + struct.pack(f"<{self.n}Q", *self.node_ids)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggParams:
        """Parse :meth:`to_bytes`; anything malformed raises :class:`~flclient.SecAggProtocolError`."""
        r = Reader(data, "round parameters")
        version, n, k, t, bits, prg, clip, noise, dim, seed, tag_len = r.unpack(_PARAMS_HEAD)
        if version != _PARAMS_VERSION:
            raise SecAggProtocolError(f"round parameters of unknown version {version}")
        if not 2 <= n <= _MAX_NODES or prg >= len(PRGS):
            raise SecAggProtocolError("round parameters are out of range")
        try:
            tag = bytes(r.take(tag_len)).decode()
        except UnicodeDecodeError as exc:
            raise SecAggProtocolError("round tag is not UTF-8") from exc
        node_ids = struct.unpack(f"<{n}Q", r.take(8 * n))
        r.finish()
        try:
            return cls(
                round_tag=tag,
                node_ids=tuple(node_ids),
                degree=k,
                threshold=t,
                bits=bits,
                clip=clip,
                dim=dim,
                graph_seed=seed,
                noise_std=noise,
                prg=PRGS[prg],
            )
        except ValueError as exc:
            raise SecAggProtocolError(f"round parameters are invalid: {exc}") from exc
