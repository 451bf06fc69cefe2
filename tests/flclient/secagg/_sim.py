"""An in-process federation: n devices and a coordinator exchanging bytes, with hooks to drop or tamper."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flclient.secagg import (
    InMemorySecAggStore,
    SecAggCoordinator,
    SecAggDevice,
    SecAggError,
    SecAggParams,
    SecAggResult,
    choose_degree,
    quantize,
)

Tamper = Callable[[int, int, bytes], bytes]


class Federation:
    """Devices ``0..n-1`` (node ids ``1000+i``); :attr:`seen` logs every byte string the coordinator received."""

    def __init__(
        self, n: int, dim: int, *, bits: int = 20, dropout: float = 0.3, seed: int = 0, noise_std: float = 0.0
    ):
        k, t = choose_degree(n, dropout=dropout)
        rng = np.random.default_rng(seed)
        self.params = SecAggParams(
            round_tag=f"test-{seed}",
            node_ids=tuple(1000 + i for i in range(n)),
            degree=k,
            threshold=t,
            bits=bits,
            clip=1.0,
            dim=dim,
            graph_seed=rng.bytes(32),
            noise_std=noise_std,
        )
        self.devices = [
            SecAggDevice(
                node_id=1000 + i,
                identity=Ed25519PrivateKey.generate(),
                store=InMemorySecAggStore(),
                rng=np.random.default_rng(seed * 1000 + i),
                random_bytes=np.random.default_rng(seed * 7919 + i).bytes,
            )
            for i in range(n)
        ]
        self.inputs = [rng.uniform(-1, 1, dim).astype(np.float32) for _ in range(n)]
        self.coordinator = SecAggCoordinator(self.params)
        self.seed = seed
        self.seen: list[bytes] = []
        self.device_errors: dict[int, str] = {}

    def quantised(self, i: int) -> np.ndarray:
        """Device ``i``'s quantised input, recomputed from the seed of its rounding rng (its first draw)."""
        p = self.params
        q, _ = quantize(
            self.inputs[i], clip=p.clip, levels=p.levels, bits=p.bits, rng=np.random.default_rng(self.seed * 1000 + i)
        )
        return q

    def _round(self, requests: dict[int, bytes], stage: int, drop: set[int], tamper: Tamper | None) -> dict[int, bytes]:
        out = {}
        for i, req in requests.items():
            if i in drop:
                continue
            try:
                reply = self.devices[i].handle(req, update=lambda i=i: self.inputs[i])
            except SecAggError as exc:
                self.device_errors[i] = exc.reason
                continue
            if tamper is not None:
                reply = tamper(stage, i, reply)
            self.seen.append(reply)
            out[i] = reply
        return out

    def run(
        self,
        *,
        drop_after_shares: set[int] = frozenset(),  # type: ignore[assignment]
        drop_before_unmask: set[int] = frozenset(),  # type: ignore[assignment]
        tamper: Tamper | None = None,
        tamper_requests: Callable[[int, int, bytes], bytes] | None = None,
    ) -> SecAggResult:
        c = self.coordinator
        req = c.setup()
        rep = self._round(req, 1, set(), tamper)
        req = c.share_keys(rep)
        rep = self._round(req, 2, set(), tamper)
        req = c.collect(rep)
        if tamper_requests is not None:
            req = {i: tamper_requests(3, i, r) for i, r in req.items()}
        rep = self._round(req, 3, set(drop_after_shares), tamper)
        req = c.unmask(rep)
        rep = self._round(req, 4, set(drop_before_unmask), tamper)
        return c.finish(rep)
