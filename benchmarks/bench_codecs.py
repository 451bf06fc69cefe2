"""Update-codec benchmark (issue 6). The last line printed is one JSON object.

    python benchmarks/bench_codecs.py [--log2d 20] [--repeats 15]

For d = 2^20 Gaussian and Student-t(3) vectors, per codec: ``bits_per_coord`` (everything in the payload),
``nmse``, ``mcoords_per_s`` (encode + decode, best of --repeats, one BLAS thread; ``mcoords_per_s_cpu`` is the
same from the thread's CPU time, which a busy machine does not inflate), ``unbiased_gap`` =
nmse * (2^(2R) - 1) for the unbiased codecs (1.0 would be the limit), ``entropy_gap`` (coded bits - empirical
entropy of the quantised symbols, sign and magnitude per coordinate) for the rotated codecs, and
``index_bits_per_nonzero`` / ``index_bits_bound`` (log2 C(d, k) / k) for top-1 %.

Anchors measured in the same run: per-tensor nearest int8 (the scheme block int8 must beat on t(3)) and the
speed of fp32 byte-shuffle + zstd. The speed target is checked both absolutely (>= 50 Mcoord/s) and as a ratio
to that anchor, timed alternately with rotated2 so both see the same load: the reference table
(../shared/reference/update-pipeline.md) has fp32_lossless at 121 Mcoord/s where the target is 50, a ratio of
0.413, which carries over to a slower or busier machine. Every speed is also given from CPU time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.update import (  # noqa: E402
    BlockInt8Codec,
    Float16Codec,
    LosslessFloat32Codec,
    RotatedCodec,
    TopKCodec,
    UpdateCodec,
    _codecs,
)
from flclient.update._hadamard import block_sizes  # noqa: E402

REFERENCE_FP32_MCPS = 121.0  # ../shared/reference/update-pipeline.md, same table as the 50 Mcoord/s target
TARGET_ROTATED2_MCPS = 50.0


def timed(codec: UpdateCodec, x: np.ndarray, repeats: int) -> tuple[bytes, np.ndarray, float, float]:
    """Payload, decoded vector, and Mcoord/s for encode + decode: best wall-clock and best CPU (this thread) time.

    Everything runs on one thread, so CPU time equals wall time on an idle machine; on a shared one it leaves out
    the time the process spent waiting for a core.
    """
    rng = np.random.default_rng(1)
    best_wall = best_cpu = math.inf
    data, y = b"", x
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        data = codec.encode(x, rng=rng)
        y = codec.decode(data, max_coords=x.size)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.thread_time() - c0)
    return data, y, x.size / best_wall / 1e6, x.size / max(best_cpu, 1e-9) / 1e6


def anchor_ratio(fast: UpdateCodec, anchor: UpdateCodec, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """Speed of ``fast`` over ``anchor`` (encode + decode), timed alternately so both see the same machine load.

    Returns the ratio of best wall-clock times and the ratio of best CPU times.
    """
    best = {id(fast): [math.inf, math.inf], id(anchor): [math.inf, math.inf]}
    rng = np.random.default_rng(3)
    for _ in range(repeats):
        for codec in (anchor, fast):
            t0, c0 = time.perf_counter(), time.thread_time()
            codec.decode(codec.encode(x, rng=rng), max_coords=x.size)
            row = best[id(codec)]
            row[0] = min(row[0], time.perf_counter() - t0)
            row[1] = min(row[1], time.thread_time() - c0)
    (fw, fc), (aw, ac) = best[id(fast)], best[id(anchor)]
    return aw / fw, ac / max(fc, 1e-9)


def nmse(x: np.ndarray, y: np.ndarray) -> float:
    x64 = x.astype(np.float64)
    return float(np.sum((y - x64) ** 2) / np.sum(x64**2))


def entropy(symbols: np.ndarray) -> float:
    p = np.bincount(symbols) / symbols.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def rotated_symbol_entropy(codec: RotatedCodec, x: np.ndarray, data: bytes) -> float:
    """Empirical entropy (bits/coord) of the signed symbols the codec quantised, from the seed in its payload."""
    (seed,) = struct.unpack_from("<Q", data, 17)
    sizes = block_sizes(x.size)
    v = np.zeros(sum(sizes), np.float32)
    v[: x.size] = x
    quant = _codecs._quantise(v, seed, codec.bits, sizes)
    signed = quant.negative.astype(np.int64)
    if quant.magnitudes is not None:
        signed += 2 * quant.magnitudes.astype(np.int64)
    return entropy(signed) * v.size / x.size


def per_tensor_int8(x: np.ndarray) -> float:
    scale = np.abs(x).max() / 127
    return nmse(x, np.rint(x / scale).astype(np.int8) * scale)


def check(target: float, measured: float, *, at_most: bool) -> dict[str, Any]:
    met = measured <= target if at_most else measured >= target
    return {"target": ("<= " if at_most else ">= ") + f"{target:g}", "measured": measured, "met": bool(met)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2d", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    d = 1 << args.log2d
    rng = np.random.default_rng(2024)
    sources = {
        "gaussian": rng.standard_normal(d).astype(np.float32),
        "student_t3": rng.standard_t(3, d).astype(np.float32),
    }
    codecs: dict[str, UpdateCodec] = {
        "fp32_lossless": LosslessFloat32Codec(),
        "fp16": Float16Codec(kind="fp16"),
        "bf16": Float16Codec(kind="bf16"),
        "int8_block": BlockInt8Codec(block_size=64),
        "rotated1": RotatedCodec(bits=1),
        "rotated2": RotatedCodec(bits=2),
        "rotated4": RotatedCodec(bits=4),
        "topk1pct": TopKCodec(fraction=0.01),
    }
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name, codec in codecs.items():
        result[name] = {}
        for src, x in sources.items():
            data, y, mcps, mcps_cpu = timed(codec, x, args.repeats)
            bits = len(data) * 8 / d
            row = {
                "bits_per_coord": round(bits, 4),
                "nmse": float(f"{nmse(x, y):.4g}"),
                "mcoords_per_s": round(mcps, 1),
                "mcoords_per_s_cpu": round(mcps_cpu, 1),
            }
            if codec.unbiased and name != "fp32_lossless":
                row["unbiased_gap"] = round(nmse(x, y) * (2 ** (2 * bits) - 1), 4)
            if isinstance(codec, RotatedCodec):
                row["entropy_gap"] = round(bits - rotated_symbol_entropy(codec, x, data), 4)
            if isinstance(codec, TopKCodec):
                k = math.ceil(codec.fraction * d)
                value_bytes = 2 * k
                index_bytes = len(data) - 16 - 10 - 4 - value_bytes - 4
                row["index_bits_per_nonzero"] = round(index_bytes * 8 / k, 4)
                row["index_bits_bound"] = round(
                    float((math.lgamma(d + 1) - math.lgamma(k + 1) - math.lgamma(d - k + 1)) / math.log(2) / k), 4
                )
            result[name][src] = row
    fp32_mcps = max(result["fp32_lossless"][s]["mcoords_per_s"] for s in sources)
    ratios = {s: anchor_ratio(codecs["rotated2"], codecs["fp32_lossless"], x, args.repeats) for s, x in sources.items()}
    speed_ratio = round(min(wall for wall, _ in ratios.values()), 3)
    speed_ratio_cpu = round(min(cpu for _, cpu in ratios.values()), 3)
    anchors = {
        "int8_per_tensor_nmse": {s: float(f"{per_tensor_int8(x):.4g}") for s, x in sources.items()},
        "fp32_lossless_mcoords_per_s": fp32_mcps,
        "reference_fp32_lossless_mcoords_per_s": REFERENCE_FP32_MCPS,
        "rotated2_over_fp32_lossless_speed": speed_ratio,
        "rotated2_over_fp32_lossless_speed_cpu": speed_ratio_cpu,
    }
    r2, r1, i8, tk = result["rotated2"], result["rotated1"], result["int8_block"], result["topk1pct"]
    r2_mcps = min(r2[s]["mcoords_per_s"] for s in sources)
    rotated = ("rotated1", "rotated2", "rotated4")
    targets = {
        "rotated2_bits_per_coord": check(2.0, max(r2[s]["bits_per_coord"] for s in sources), at_most=True),
        "rotated2_unbiased_gap": check(1.6, max(r2[s]["unbiased_gap"] for s in sources), at_most=True),
        "rotated2_mcoords_per_s": check(TARGET_ROTATED2_MCPS, r2_mcps, at_most=False),
        "rotated2_mcoords_per_s_cpu_time": check(
            TARGET_ROTATED2_MCPS, min(r2[s]["mcoords_per_s_cpu"] for s in sources), at_most=False
        ),
        "rotated2_speed_ratio_vs_fp32_lossless": check(
            round(TARGET_ROTATED2_MCPS / REFERENCE_FP32_MCPS, 3), speed_ratio, at_most=False
        ),
        "rotated2_speed_ratio_vs_fp32_lossless_cpu_time": check(
            round(TARGET_ROTATED2_MCPS / REFERENCE_FP32_MCPS, 3), speed_ratio_cpu, at_most=False
        ),
        "rotated1_bits_per_coord": check(1.05, max(r1[s]["bits_per_coord"] for s in sources), at_most=True),
        "int8_block_t3_nmse": check(1e-3, i8["student_t3"]["nmse"], at_most=True),
        "rotated_t3_over_gaussian_nmse": check(
            1.1,
            round(max(result[c]["student_t3"]["nmse"] / result[c]["gaussian"]["nmse"] for c in rotated), 4),
            at_most=True,
        ),
        "rotated_entropy_gap": check(
            0.05, max(result[c][s]["entropy_gap"] for c in rotated for s in sources), at_most=True
        ),
        "topk1pct_index_bits_over_bound": check(
            0.1,
            round(max(tk[s]["index_bits_per_nonzero"] - tk[s]["index_bits_bound"] for s in sources), 4),
            at_most=True,
        ),
    }
    out = {
        **result,
        "anchors": anchors,
        "rotated2_speed_ratio_vs_fp32_lossless": speed_ratio,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "d": d,
        "repeats": args.repeats,
    }
    for name, rows in result.items():
        for src, row in rows.items():
            print(f"{name:14s} {src:10s} {row}", file=sys.stderr)
    for tname, t in targets.items():
        print(f"target {tname:40s} {t}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
