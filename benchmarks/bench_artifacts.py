"""Trusted-artifact benchmark (TUF over httpx, loopback). The last line printed is one JSON object.

    python benchmarks/bench_artifacts.py [--repeats 25] [--checkpoint-mib 10]

A repository with a 25 KB feature module and a 10 MiB model checkpoint is served by ``http.server`` on
127.0.0.1 (the server the tests use, here in its own process). Medians of ``--repeats``:

``refresh_ms``            ``TrustedArtifacts.refresh()`` when nothing is new (root probe + timestamp; the rest local)
``fetch_module_ms``       ``fetch(pin)`` of the module into an empty cache after a refresh: delegated metadata,
                          download, hash check against the signed metadata, atomic install (rename, no fsync)
``fetch_checkpoint_ms``   the same for the checkpoint (its delegated role's metadata included): the download
                          starts while that metadata is fetched and verified (nothing is installed before it
                          agrees), and the bytes are hashed and written by a worker thread while the next arrive
``plain_fetch_checkpoint_ms``  anchor: the same checkpoint URL fetched with a plain ``httpx`` GET, streamed to a
                          file on the same file system (no hashing, no fsync), same server, same run; which of the two
                          goes first alternates between repeats
``*_cpu_ms``              CPU time of this process (all threads) for each of the two downloads: on a machine
                          with no core to spare the wall-clock ratio tends to this one (sha256 is not free)
``verify_ms``             a cache hit for the checkpoint: index lookup + re-hash of the 10 MiB object
``verify_signature_ms``   ``verify_checkpoint`` (canonical encoding + sha256 + Ed25519) of the decoded arrays

Target: ``fetch_checkpoint_ms <= 1.5 * plain_fetch_checkpoint_ms`` (medians; ``fetch_checkpoint_over_plain_paired``
is the median of the per-repeat ratios, which a load that drifts during the run disturbs less).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.artifacts import (  # noqa: E402
    ArtifactPin,
    ArtifactsConfig,
    TrustedArtifacts,
    sign_checkpoint,
    verify_checkpoint,
)
from tests.flclient.artifacts.support import Clock, StaticServer, make_keys, make_repository  # noqa: E402


def _serve(root: Path, port_queue: multiprocessing.Queue[int]) -> None:
    server = StaticServer(root)
    port_queue.put(server.port)
    server.thread.join()


class _Remote:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000.0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--checkpoint-mib", type=float, default=10.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
    try:
        clock = Clock()
        keys = make_keys(work / "keys")
        repo = make_repository(work / "repo", keys, clock)
        rng = np.random.default_rng(0)
        module = rng.integers(0, 256, 25_000, dtype=np.uint8).tobytes()
        mod_info = repo.add_target("module", "modules/bench/1.0.0", module, {"kind": "module"})
        n = int(args.checkpoint_mib * (1 << 20) / 4)
        params = {"w": rng.standard_normal(n).astype(np.float32)}
        ckpt_info = repo.publish_checkpoint(params, name="global", model_version=1)
        mod_pin = ArtifactPin(kind="module", name="bench", version="1.0.0", sha256=mod_info.hashes["sha256"])
        ckpt_pin = ArtifactPin(kind="checkpoint", name="global", version="1", sha256=ckpt_info.hashes["sha256"])
        (work / "root.json").write_bytes(repo.trusted_root())
        # The server runs in its own process, as a real one would: it must not share this process's GIL.
        ctx = multiprocessing.get_context("spawn")
        port_queue: multiprocessing.Queue[int] = ctx.Queue()
        server_proc = ctx.Process(target=_serve, args=(work / "repo", port_queue), daemon=True)
        server_proc.start()
        server = _Remote(port_queue.get(timeout=60))

        def device(i: int) -> TrustedArtifacts:
            cfg = ArtifactsConfig(
                repository_url=server.url(),
                trusted_root=work / "root.json",
                cache_dir=work / f"dev{i}",
                cache_max_bytes=64 << 20,
            )
            return TrustedArtifacts(cfg, clock=clock.epoch)

        refresh, fetch_mod, fetch_ckpt, plain, verify, verify_sig = [], [], [], [], [], []
        fetch_cpu: list[float] = []
        plain_cpu: list[float] = []
        import httpx

        ckpt_url = f"{server.url()}/targets/checkpoints/global/{ckpt_pin.sha256}.1"
        for i in range(args.repeats):
            # Each repeat is a fresh device and a fresh plain client, each warmed by its small requests first
            # (refresh / a GET of timestamp.json), so both download over a new keep-alive connection.
            with (
                device(i) as dev,
                httpx.Client(trust_env=False, headers={"Accept-Encoding": "identity"}) as plain_client,
            ):
                dev.refresh()
                t = time.perf_counter()
                dev.refresh()
                refresh.append(time.perf_counter() - t)
                t = time.perf_counter()
                dev.fetch(mod_pin)
                fetch_mod.append(time.perf_counter() - t)
                plain_client.get(f"{server.url()}/metadata/timestamp.json").raise_for_status()
                out = work / f"dev{i}" / "tmp" / "plain.bin"

                def plain_fetch(out: Path = out, client: httpx.Client = plain_client) -> None:
                    c = time.process_time()
                    t = time.perf_counter()
                    with client.stream("GET", ckpt_url) as r, out.open("wb") as f:
                        r.raise_for_status()
                        for chunk in r.iter_bytes(1 << 20):
                            f.write(chunk)
                    plain.append(time.perf_counter() - t)
                    plain_cpu.append(time.process_time() - c)
                    out.unlink()

                def trusted_fetch(dev: TrustedArtifacts = dev) -> None:
                    c = time.process_time()
                    t = time.perf_counter()
                    got = dev.fetch(ckpt_pin)
                    fetch_ckpt.append(time.perf_counter() - t)
                    fetch_cpu.append(time.process_time() - c)
                    assert got.sha256 == ckpt_pin.sha256

                # Alternate which goes first, so that neither profits from the other's warm-up (page cache,
                # the server's allocator, CPU frequency) or suffers from its tail (socket clean-up).
                for step in (plain_fetch, trusted_fetch) if i % 2 == 0 else (trusted_fetch, plain_fetch):
                    step()
                t = time.perf_counter()
                hit = dev.cached(ckpt_pin)
                verify.append(time.perf_counter() - t)
                assert hit is not None
            shutil.rmtree(work / f"dev{i}")
        from flclient import _signing

        signing_key = _signing.load_private_key(keys.files["model"].read_bytes())
        sig = sign_checkpoint(params, model_version=1, private_key=signing_key)
        for _ in range(args.repeats):
            t = time.perf_counter()
            verify_checkpoint(params, model_version=1, signature=sig, trusted_keys=[signing_key.public_key()])
            verify_sig.append(time.perf_counter() - t)
        server_proc.terminate()
        server_proc.join()
        ratio = statistics.median(fetch_ckpt) / statistics.median(plain)
        # Each repeat's two downloads ran back to back, under the same load: their ratio is the paired estimate.
        paired = statistics.median(f / p for f, p in zip(fetch_ckpt, plain, strict=True))
        out_json = {
            "bench": "artifacts",
            "repeats": args.repeats,
            "module_bytes": len(module),
            "checkpoint_bytes": ckpt_info.length,
            "refresh_ms": _ms(refresh),
            "fetch_module_ms": _ms(fetch_mod),
            "fetch_checkpoint_ms": _ms(fetch_ckpt),
            "plain_fetch_checkpoint_ms": _ms(plain),
            "fetch_checkpoint_over_plain": round(ratio, 3),
            "fetch_checkpoint_over_plain_paired": round(paired, 3),
            "fetch_checkpoint_cpu_ms": _ms(fetch_cpu),
            "plain_fetch_checkpoint_cpu_ms": _ms(plain_cpu),
            "verify_ms": _ms(verify),
            "verify_signature_ms": _ms(verify_sig),
            "cpu_count": os.cpu_count(),
            "targets_met": {"fetch_checkpoint_ms_le_1.5x_plain": ratio <= 1.5},
        }
        print(json.dumps(out_json))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
