"""Generate scripts/data/device_context_sample.csv, the demo's bundled sample (deterministic).

Run from the repository root: .venv/bin/python scripts/data/make_device_context_sample.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flclient.features import Column
from flclient.features._columns_io import write_columns

ROWS = 2000
CITIES = [(52.52, 13.405), (48.8566, 2.3522), (-33.8688, 151.2093), (40.7128, -74.006), (35.6762, 139.6503)]


def main() -> None:
    rng = np.random.default_rng(20261124)
    start_ms = 1_763_942_400_000  # 2025-11-24T00:00:00Z, a Monday
    ts = np.sort(start_ms + rng.integers(0, 14 * 86_400_000, ROWS)).astype(np.uint64)
    city = rng.integers(0, len(CITIES), ROWS)
    lat = np.array([CITIES[c][0] for c in city]) + rng.normal(0, 0.05, ROWS)
    lon = np.array([CITIES[c][1] for c in city]) + rng.normal(0, 0.05, ROWS)
    battery = rng.uniform(0, 1, ROWS).astype(np.float32)
    # A few broken readings, as real devices produce: no GPS fix, a bad latitude, a miscalibrated battery.
    lat[rng.choice(ROWS, 12, replace=False)] = np.nan
    lat[rng.choice(ROWS, 5, replace=False)] = 95.0
    battery[rng.choice(ROWS, 5, replace=False)] = np.float32(1.2)
    columns = (
        Column(name="timestamp_ms", dtype="u64"),
        Column(name="location_lat", dtype="f64"),
        Column(name="location_lon", dtype="f64"),
        Column(name="battery_level", dtype="f32"),
    )
    data = {"timestamp_ms": ts, "location_lat": lat, "location_lon": lon, "battery_level": battery}
    out = Path(__file__).with_name("device_context_sample.csv")
    # write_columns always adds a status column; the sample is raw input, so drop it.
    tmp = out.with_suffix(".tmp.csv")
    write_columns(tmp, columns, {**data, "status": np.zeros(ROWS, dtype=np.uint8)})
    lines = tmp.read_text().splitlines()
    tmp.unlink()
    out.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    print(f"wrote {out} ({ROWS} rows)")


if __name__ == "__main__":
    main()
