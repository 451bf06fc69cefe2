"""SecAgg+ costs at d = 2^20, n = 100: device-side protocol time, upload, server unmasking; Flower's for comparison.

Ours: a full in-process round of 100 devices; ``client_ms`` is device 0's time over all four stages (key
generation, sharing, quantise + mask + pack + sign, revealing shares). ``server_unmask_ms_*`` times the
coordinator's last stage (reconstruct, expand and remove masks). Flower's ``secaggplus_mod`` stage functions run
for one client of the same n and d, with as many shares as our graph degree (``flwr_client_ms``) and with one
share per device (``flwr_client_ms_full``), in a separate venv with flwr pinned (FLWR_VENV, default
``$TMPDIR/flclient-bench-flwr``); if it cannot be created, the reason is printed and the project's interpreter is
used when it has flwr, else the Flower numbers are null. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flclient.secagg import InMemorySecAggStore, SecAggCoordinator, SecAggDevice, SecAggParams, choose_degree

FLWR_VERSION = "1.41.0"


def our_round(n: int, d: int, k: int, t: int, bits: int, drop: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    params = SecAggParams(
        round_tag=f"bench-{seed}",
        node_ids=tuple(range(1, n + 1)),
        degree=k,
        threshold=t,
        bits=bits,
        clip=1.0,
        dim=d,
        graph_seed=rng.bytes(32),
    )
    devices = [
        SecAggDevice(
            node_id=i + 1,
            identity=Ed25519PrivateKey.generate(),
            store=InMemorySecAggStore(),
            rng=np.random.default_rng(i),
        )
        for i in range(n)
    ]
    x = rng.uniform(-1, 1, d).astype(np.float32)
    dropped = set(rng.choice(np.arange(1, n), size=int(drop * n), replace=False).tolist())
    c = SecAggCoordinator(params)
    dev0 = 0.0
    upload = 0

    def stage(requests: dict[int, bytes], skip: set[int]) -> dict[int, bytes]:
        nonlocal dev0, upload
        out = {}
        for i, r in requests.items():
            if i in skip:
                continue
            t0 = time.perf_counter()
            out[i] = devices[i].handle(r, update=lambda: x)
            if i == 0:
                dev0 += time.perf_counter() - t0
        return out

    req = c.setup()
    req = c.share_keys(stage(req, set()))
    req = c.collect(stage(req, set()))
    rep = stage(req, dropped)
    upload = len(rep[0])
    req = c.unmask(rep)
    rep = stage(req, set())
    t0 = time.perf_counter()
    result = c.finish(rep)
    unmask_ms = (time.perf_counter() - t0) * 1000
    assert len(result.survivors) == n - len(dropped)
    return {"client_ms": dev0 * 1000, "upload_bytes_per_coord": upload / d, "server_unmask_ms": unmask_ms}


_FLWR_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from flwr.app import ConfigRecord
    from flwr.common import ndarrays_to_parameters
    import importlib
    sm = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import encrypt, generate_shared_key
    from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_concat
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes

    n, d, shares = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    me = 1
    peers = list(range(2, shares + 1))
    keys = {p: (generate_key_pairs(), generate_key_pairs()) for p in peers}
    params = ndarrays_to_parameters([np.random.default_rng(0).uniform(-1, 1, d).astype(np.float32)])
    state = sm.SecAggPlusState()
    state.nid = me
    t_total = 0.0
    t0 = time.perf_counter()
    adv = sm._setup(state, ConfigRecord({Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: shares,
        Key.THRESHOLD: shares // 2 + 1, Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 1 << 22,
        Key.MOD_RANGE: 1 << 32, Key.MAX_WEIGHT: 1000.0}))
    t_total += time.perf_counter() - t0
    pk = {me: (adv[Key.PUBLIC_KEY_1], adv[Key.PUBLIC_KEY_2])}
    pk.update({p: (public_key_to_bytes(a[1]), public_key_to_bytes(b[1])) for p, (a, b) in keys.items()})
    t0 = time.perf_counter()
    sm._share_keys(state, ConfigRecord({str(p): list(v) for p, v in pk.items()}))
    t_total += time.perf_counter() - t0
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key
    cts = []
    for p, (_, (sk2, _pk2)) in keys.items():
        k = generate_shared_key(sk2, bytes_to_public_key(state.pk2))
        cts.append(encrypt(k, share_keys_plaintext_concat(p, me, os.urandom(32), os.urandom(32))))
    t0 = time.perf_counter()
    relayed = ConfigRecord({Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: peers})
    out = sm._collect_masked_vectors(state, relayed, 10, params)
    t_total += time.perf_counter() - t0
    upload = sum(len(b) for b in out[Key.MASKED_PARAMETERS])
    active = [me] + peers[: len(peers) * 8 // 10]
    dead = peers[len(peers) * 8 // 10 :]
    t0 = time.perf_counter()
    sm._unmask(state, ConfigRecord({Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead}))
    t_total += time.perf_counter() - t0
    import flwr
    print(json.dumps({"ms": t_total * 1000, "upload_bytes_per_coord": upload / d, "version": flwr.__version__}))
    """
)


def _flwr_python(venv: Path) -> tuple[str | None, str]:
    py = venv / "bin" / "python"
    probe = [str(py), "-c", f"import flwr, sys; sys.exit(flwr.__version__ != {FLWR_VERSION!r})"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(py), f"reused {venv}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", f"flwr=={FLWR_VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        return str(py), f"created {venv} with flwr=={FLWR_VERSION}"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        reason = f"could not create a venv with flwr=={FLWR_VERSION} at {venv}: {exc} {err[-300:]!r}"
    print(reason, file=sys.stderr)
    try:
        import flwr  # noqa: F401

        print("falling back to this interpreter's flwr", file=sys.stderr)
        return sys.executable, reason + "; used the project interpreter's flwr"
    except ImportError:
        return None, reason + "; no flwr available: Flower numbers are null"


def flower(n: int, d: int, shares: int, venv: Path) -> tuple[dict[str, float] | None, str]:
    py, how = _flwr_python(venv)
    if py is None:
        return None, how
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "flwr_secaggplus_client.py"
        script.write_text(_FLWR_SCRIPT)
        proc = subprocess.run(
            [py, str(script), str(n), str(d), str(shares)], capture_output=True, text=True, timeout=900
        )
    if proc.returncode != 0:
        return None, f"{how}; Flower run failed: {proc.stderr[-400:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--log2-d", type=int, default=20)
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--skip-flower", action="store_true")
    args = ap.parse_args()
    n, d = args.n, 1 << args.log2_d
    k, t = choose_degree(n, dropout=0.2)
    r0 = our_round(n, d, k, t, args.bits, 0.0, 1)
    r20 = our_round(n, d, k, t, args.bits, 0.2, 2)
    r40 = our_round(n, d, 40, 21, args.bits, 0.0, 3)
    r20b = our_round(n, 1 << 16, k, t, 20, 0.0, 4)
    venv = Path(os.environ.get("FLWR_VENV", Path(tempfile.gettempdir()) / "flclient-bench-flwr"))
    fl, how = (None, "skipped (--skip-flower)") if args.skip_flower else flower(n, d, k + 1, venv)
    fl_full, _ = (None, "") if args.skip_flower else flower(n, d, n, venv)
    client_ms = min(r0["client_ms"], r20["client_ms"])
    out: dict[str, object] = {
        "n": n,
        "d": d,
        "bits": args.bits,
        "k": k,
        "t": t,
        "client_ms": round(client_ms, 1),
        "upload_bytes_per_coord": round(r0["upload_bytes_per_coord"], 4),
        "upload_bytes_per_coord_b20": round(r20b["upload_bytes_per_coord"], 4),
        "server_unmask_ms_0": round(r0["server_unmask_ms"], 1),
        "server_unmask_ms_20": round(r20["server_unmask_ms"], 1),
        "client_ms_k40": round(r40["client_ms"], 1),
        "flwr_version": fl["version"] if fl else None,
        "flwr_client_ms": round(fl["ms"], 1) if fl else None,
        "flwr_client_ms_full": round(fl_full["ms"], 1) if fl_full else None,
        "flwr_upload_bytes_per_coord": round(fl["upload_bytes_per_coord"], 4) if fl else None,
        "flwr_source": how,
    }
    targets: dict[str, bool | None] = {
        "client_ms_le_0.2x_flwr": client_ms <= 0.2 * fl["ms"] if fl else None,
        "upload_le_0.5x_flwr": r0["upload_bytes_per_coord"] <= 0.5 * fl["upload_bytes_per_coord"] if fl else None,
        "upload_le_4_bytes_at_b32": r0["upload_bytes_per_coord"] <= 4.0 + 1e-3,
        "client_ms_k40_le_150": r40["client_ms"] <= 150.0,
    }
    out["targets_met"] = targets
    print(json.dumps(out))


if __name__ == "__main__":
    main()
