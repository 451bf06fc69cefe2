"""Participation-gate and fleet-simulation benchmark. The last line printed is one JSON object.

    python benchmarks/bench_fleet.py [--devices 200] [--rounds 48] [--repeats 200]

``gate_check_ms``: one full may-start check (every reader + the policy), warm, median of ``--repeats``, against
a fake Jetson-like sysfs/proc tree that has every signal (power supplies, six thermal zones, nvpmodel, network,
meminfo, loadavg, disk); ``gate_check_host_ms`` is the same against this machine's real ``/``.
``sim_*``: a day (48 rounds, one every 30 virtual minutes) of ``--devices`` virtual devices across every profile,
with over-selection and a 900 s round deadline, and as a plain synchronous round (no over-selection, no deadline);
``p99_round_time_s`` is the 99th percentile of round durations (virtual seconds), ``cohort_share`` the share of
accepted updates per device class. Targets: gate_check_ms <= 5, 200 devices at >= 2 rounds per wall minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.gate import (  # noqa: E402
    DeviceSignals,
    InterfaceKindMetered,
    ManualClock,
    ParticipationGate,
    list_profiles,
    load_profile,
)
from flclient.gate._fleet import FleetConfig, parse_mix, simulate_fleet  # noqa: E402
from tests.flclient.gate.fakefs import FakeDevice  # noqa: E402


def _jetson_tree(root: Path) -> None:
    dev = FakeDevice(root)
    dev.supply("ac", "Mains", online=1)
    dev.supply("ucsi-source-psy-0", "USB", online=0)
    for i, (kind, milli) in enumerate(
        [
            ("CPU-therm", 51_000),
            ("GPU-therm", 49_500),
            ("SOC0-therm", 50_000),
            ("PMIC-Die", 100_000),
            ("AO-therm", -256_000),
            ("tj-therm", 52_000),
        ]
    ):
        dev.zone(i, kind, milli)
    dev.nvpmodel(0, {0: "MAXN", 1: "15W", 2: "7W"})
    dev.interface("eth0", "ethernet")
    dev.interface("wlan0", "wifi")
    dev.interface("docker0", "virtual")
    dev.default_route("eth0")
    dev.meminfo(6_000_000)
    dev.load(0.3, "0-5")
    dev.data_dir()


def _check_ms(gate: ParticipationGate, repeats: int) -> float:
    for _ in range(10):
        gate.may_start()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        gate.may_start()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()

    policy = load_profile("jetson-orin-nano-8gb").policy()
    with tempfile.TemporaryDirectory() as tmp:
        _jetson_tree(Path(tmp))
        signals = DeviceSignals(root=tmp, metered=InterfaceKindMetered())
        gate = ParticipationGate(policy=policy, signals=signals, clock=ManualClock())
        decision = gate.may_start()
        check_ms = _check_ms(gate, args.repeats)
    host_gate = ParticipationGate(
        policy=policy,
        signals=DeviceSignals(root="/", data_dir="/tmp", metered=InterfaceKindMetered()),
        clock=ManualClock(),
    )
    host_ms = _check_ms(host_gate, args.repeats)
    print(f"gate check: {check_ms:.3f} ms (fake Jetson tree, eligible={decision.eligible}), {host_ms:.3f} ms (host /)")

    profiles = {k: load_profile(k) for k in list_profiles()}
    mix = parse_mix("all", list(profiles))
    results = {}
    # "deadline": 1.3x over-selection, a 900 s deadline, aggregate at >= 80 % of goal. "no_deadline": what a plain
    # synchronous round does (Flower's default): ask exactly goal devices and wait for every one that does not drop.
    for label, deadline, over in (("deadline", 900.0, 1.3), ("no_deadline", None, 1.0)):
        config = FleetConfig(
            devices=args.devices, rounds=args.rounds, mix=mix, seed=0, deadline_s=deadline, over_selection=over
        )
        t = time.perf_counter()
        report = simulate_fleet(config, profiles)
        wall = time.perf_counter() - t
        results[label] = (report.summary(), wall)
        s = results[label][0]
        print(
            f"{label}: {args.rounds} rounds of {args.devices} devices in {wall:.2f} s wall; drop rate "
            f"{s['drop_rate']:.3f}; p50/p99 round {s['p50_round_time_s']:.0f}/{s['p99_round_time_s']:.0f} s virtual"
        )
    summary, wall = results["deadline"]
    rounds_per_min = args.rounds / wall * 60
    out = {
        "gate_check_ms": round(check_ms, 4),
        "gate_check_host_ms": round(host_ms, 4),
        "gate_check_target_ms": 5.0,
        "gate_check_ratio_to_target": round(check_ms / 5.0, 4),
        "sim_devices": args.devices,
        "sim_rounds": args.rounds,
        "sim_wall_s": round(wall, 3),
        "sim_rounds_per_min": round(rounds_per_min, 1),
        "sim_rounds_per_min_target": 2.0,
        "sim_virtual_s_per_wall_s": round(args.rounds * 1800.0 / wall, 1),
        "sim_drop_rate": round(summary["drop_rate"], 4),
        "p99_round_time_s": round(summary["p99_round_time_s"], 1),
        "p99_round_time_s_no_deadline": round(results["no_deadline"][0]["p99_round_time_s"], 1),
        "p50_round_time_s": round(summary["p50_round_time_s"], 1),
        "p50_round_time_s_no_deadline": round(results["no_deadline"][0]["p50_round_time_s"], 1),
        "rounds_aggregated": summary["rounds_aggregated"],
        "cohort_share": {k: round(v, 4) for k, v in summary["cohort_share"].items()},
        "fleet_share": {k: round(v, 4) for k, v in summary["fleet_share"].items()},
        "targets_met": {
            "gate_check_ms": check_ms <= 5.0,
            "sim_200_devices_2_rounds_per_min": args.devices >= 200 and rounds_per_min >= 2.0,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
