"""Independent Python references for the device_context feature module (pygeohash for the geohash).

Semantics (docs and ../shared reference): hour_of_day = (ms // 3_600_000) % 24; is_weekend =
((ms // 86_400_000) + 4) % 7 in {0, 6} (1970-01-01 was a Thursday); battery_bucket = trunc(f32(b) * 10f32);
location_hash = pygeohash.encode(lat, lon, 5). A non-finite lat/lon/battery -> status 2; otherwise lat
outside [-90, 90], lon outside [-180, 180] or battery outside [0, 1] -> status 1. Rows that are not OK have
all-zero outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pygeohash

OK, INVALID, NON_FINITE = 0, 1, 2


def python_row(ts: int, lat: float, lon: float, battery: float) -> tuple[int, int, int, int, bytes]:
    """One row, plain Python: (status, hour, weekend, bucket, geohash)."""
    if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(battery)):
        return NON_FINITE, 0, 0, 0, b""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and 0.0 <= battery <= 1.0):
        return INVALID, 0, 0, 0, b""
    hour = (ts // 3_600_000) % 24
    weekend = int((ts // 86_400_000 + 4) % 7 in (0, 6))
    bucket = int(np.float32(battery) * np.float32(10.0))
    return OK, hour, weekend, bucket, pygeohash.encode(lat, lon, 5).encode()


def python_reference(cols: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    rows = [
        python_row(int(t), float(a), float(o), float(b))
        for t, a, o, b in zip(
            cols["timestamp_ms"].tolist(),
            cols["location_lat"].tolist(),
            cols["location_lon"].tolist(),
            np.asarray(cols["battery_level"], dtype=np.float32).tolist(),
            strict=True,
        )
    ]
    status, hour, weekend, bucket, geo = zip(*rows, strict=True) if rows else ((),) * 5
    return {
        "status": np.array(status, dtype=np.uint8),
        "hour_of_day": np.array(hour, dtype=np.uint8),
        "is_weekend": np.array(weekend, dtype=np.uint8),
        "battery_bucket": np.array(bucket, dtype=np.uint8),
        "location_hash": np.array(geo, dtype="S5"),
    }


def numpy_reference(cols: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Vectorised integer features; pygeohash (C) per valid row for the geohash."""
    ts = np.asarray(cols["timestamp_ms"], dtype=np.uint64)
    lat = np.asarray(cols["location_lat"], dtype=np.float64)
    lon = np.asarray(cols["location_lon"], dtype=np.float64)
    bat = np.asarray(cols["battery_level"], dtype=np.float32)
    finite = np.isfinite(lat) & np.isfinite(lon) & np.isfinite(bat)
    in_range = (np.abs(lat) <= 90) & (np.abs(lon) <= 180) & (bat >= 0) & (bat <= 1)
    status = np.where(finite, np.where(in_range, OK, INVALID), NON_FINITE).astype(np.uint8)
    ok = status == OK
    days = ts // np.uint64(86_400_000)
    hour = ((ts // np.uint64(3_600_000)) % np.uint64(24)).astype(np.uint8)
    weekday = (days + np.uint64(4)) % np.uint64(7)
    weekend = ((weekday == 0) | (weekday == 6)).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        bucket = (bat * np.float32(10)).astype(np.uint8)
    geo = np.zeros(len(ts), dtype="S5")
    idx = np.flatnonzero(ok)
    encode = pygeohash.encode
    geo[idx] = [encode(a, o, 5) for a, o in zip(lat[idx].tolist(), lon[idx].tolist(), strict=True)]
    bad = ~ok
    for arr in (hour, weekend, bucket):
        arr[bad] = 0
    return {
        "status": status,
        "hour_of_day": hour,
        "is_weekend": weekend,
        "battery_bucket": bucket,
        "location_hash": geo,
    }


def boundary_rows() -> dict[str, np.ndarray[Any, Any]]:
    """Hour and day boundaries, geohash cell edges (+/- one ulp), poles, antimeridian, battery k/10,
    and invalid or non-finite inputs."""
    ts: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    bat: list[float] = []

    def add(t: int, a: float, o: float, b: float) -> None:
        ts.append(t)
        lat.append(a)
        lon.append(o)
        bat.append(b)

    day, hour = 86_400_000, 3_600_000
    for d in (0, 1, 2, 3, 4, 5, 6, 7, 20_000, 20_454, 2_000_000, (2**64 - 1) // day):
        for off in (0, 1, hour - 1, hour, day - 1):
            t = d * day + off
            if t < 2**64:
                add(t, 10.0, 10.0, 0.5)
    add(2**64 - 1, 0.0, 0.0, 0.5)
    cell = 45.0 / 1024.0
    for j in range(0, 2**13 + 1, 97):
        edge = -180.0 + j * cell
        for o in (edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)):
            add(1_700_000_000_000, 12.5, o, 0.3)
    for j in range(0, 2**12 + 1, 53):
        edge = -90.0 + j * cell
        for a in (edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)):
            add(1_700_000_000_000, a, -3.25, 0.3)
    for a, o in ((90.0, 180.0), (-90.0, -180.0), (90.0, -180.0), (-90.0, 180.0), (0.0, 0.0), (-0.0, -0.0)):
        add(0, a, o, 1.0)
    for k in range(11):
        add(0, 1.0, 1.0, float(np.float32(k / 10)))
        add(0, 1.0, 1.0, float(np.nextafter(np.float32(k / 10), np.float32(-1))))
    for a, o, b in (
        (90.000001, 0.0, 0.5),
        (-91.0, 0.0, 0.5),
        (0.0, 180.5, 0.5),
        (0.0, -181.0, 0.5),
        (0.0, 0.0, -0.01),
        (0.0, 0.0, 1.01),
        (math.nan, 0.0, 0.5),
        (0.0, math.nan, 0.5),
        (0.0, 0.0, math.nan),
        (math.inf, 0.0, 0.5),
        (0.0, -math.inf, 0.5),
        (95.0, math.nan, 2.0),
    ):
        add(1_700_000_000_000, a, o, b)
    return {
        "timestamp_ms": np.array(ts, dtype=np.uint64),
        "location_lat": np.array(lat, dtype=np.float64),
        "location_lon": np.array(lon, dtype=np.float64),
        "battery_level": np.array(bat, dtype=np.float32),
    }


def random_rows(n: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-90, 90, n)
    lon = rng.uniform(-180, 180, n)
    bat = rng.uniform(0, 1, n).astype(np.float32)
    # ~3% invalid or non-finite values, the rest valid.
    k = n // 100
    lat[rng.choice(n, k, replace=False)] = np.nan
    lon[rng.choice(n, k, replace=False)] = rng.uniform(180.0001, 1000, k)
    bat[rng.choice(n, k, replace=False)] = np.float32(1.5)
    return {
        "timestamp_ms": rng.integers(0, 4_102_444_800_000, n, dtype=np.uint64),  # 1970..2100
        "location_lat": lat,
        "location_lon": lon,
        "battery_level": bat,
    }
