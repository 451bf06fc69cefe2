"""Participation-gate and fleet-simulation benchmark. The last line printed is one JSON object.

    python benchmarks/bench_fleet.py [--devices 200] [--live-rounds 8] [--rounds 48] [--repeats 200]

``gate_check_ms``: one full may-start check (every reader + the policy), warm, median of ``--repeats``, against
a fake Jetson-like sysfs/proc tree that has every signal (power supplies, six thermal zones, nvpmodel, network,
meminfo, loadavg, disk); ``gate_check_host_ms`` is the same against this machine's real ``/``.

``sim_*``: ``--devices`` virtual devices across every profile against a real local SuperLink and the flclient
ServerApp (``flclient simulate``; time scaled 60x, devices poll every 5 s), ``--live-rounds`` rounds with 30 %
over-selection, a 900 s (virtual) deadline and partial aggregation at 80 % of the goal; then the same fleet as a
plain synchronous round (no over-selection, no deadline: wait for every selected device). ``p99_round_time_s`` is
the 99th percentile of round durations in virtual seconds, ``cohort_share`` the share of aggregated updates per
device class. Anchors measured in the same run: ``superlink_pull_rps`` (what this machine's SuperLink serves:
``pull-messages`` calls per second from 16 concurrent nodes) and the discrete-event virtual-time simulator
(``virtual``: a day, 48 rounds, no SuperLink). Targets: gate_check_ms <= 5, 200 devices at >= 2 rounds per wall
minute against the real SuperLink.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.fleet import FleetClient, HttpxTransport, NodeKey  # noqa: E402
from flclient.gate import (  # noqa: E402
    DeviceSignals,
    InterfaceKindMetered,
    ManualClock,
    ParticipationGate,
    list_profiles,
    load_profile,
)
from flclient.server import LocalSuperLink  # noqa: E402
from flclient.sim import FleetConfig, LiveFleetConfig, parse_mix, run_live_fleet, simulate_fleet  # noqa: E402
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


def _superlink_rps(link: LocalSuperLink, nodes: int = 16, seconds: float = 5.0) -> float:
    """The anchor: ``pull-messages`` calls per second the SuperLink serves to ``nodes`` concurrent idle nodes."""
    clients = []
    for _ in range(nodes):
        c = FleetClient(HttpxTransport(link.url), NodeKey.generate())
        c.register()
        clients.append((c, c.activate(60)))
    count = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def loop(c: FleetClient, nid: int) -> None:
        while time.perf_counter() < stop:
            c.pull_messages(nid)
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=loop, args=cn) for cn in clients]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rps = count[0] / (time.perf_counter() - t)
    for c, nid in clients:
        c.deactivate(nid)
        c.close()  # and its transport
    return rps


def _live(args: argparse.Namespace, profiles: dict[str, Any], mix: Any, out: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with LocalSuperLink(out / "flwr") as link:
        rps = _superlink_rps(link)
        print(f"anchor: SuperLink serves {rps:.0f} pull-messages/s to 16 concurrent nodes")
        for label, deadline, over in (("deadline", 900.0, 0.3), ("no_deadline", None, 0.0)):
            fleet = FleetConfig(
                devices=args.devices,
                rounds=args.live_rounds,
                mix=mix,
                seed=0,
                goal=20,
                deadline_s=deadline,
                over_selection=over,
                start_hour=args.start_hour,
            )
            live = LiveFleetConfig(fleet=fleet, time_scale=args.time_scale, poll_s=args.poll_s, timeout_s=1200)
            result = run_live_fleet(live, profiles, out / label, superlink=link)
            s = result.summary()
            s["superlink_pull_rps"] = rps
            results[label] = s
            print(
                f"live {label}: {s['rounds']} rounds of {args.devices} devices in {s['wall_s']:.1f} s wall "
                f"({s['rounds_per_min']:.2f} rounds/min); drop rate {s['drop_rate']:.3f}; p50/p99 round "
                f"{s['p50_round_time_s']:.0f}/{s['p99_round_time_s']:.0f} s virtual; late replies {s['late_replies']}"
            )
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--live-rounds", type=int, default=8)
    ap.add_argument("--time-scale", type=float, default=60.0)
    ap.add_argument("--poll-s", type=float, default=5.0)
    ap.add_argument("--start-hour", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=48, help="rounds of the virtual-time anchor")
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
    config = FleetConfig(devices=args.devices, rounds=args.rounds, mix=mix, seed=0, deadline_s=900.0)
    t = time.perf_counter()
    virtual = simulate_fleet(config, profiles).summary()
    virtual_wall = time.perf_counter() - t
    print(f"virtual-time anchor: {args.rounds} rounds of {args.devices} devices in {virtual_wall:.2f} s wall")

    with tempfile.TemporaryDirectory() as tmp:
        live = _live(args, profiles, mix, Path(tmp))
    d, nd = live["deadline"], live["no_deadline"]
    rpm = float(d["rounds_per_min"] or 0.0)
    out = {
        "gate_check_ms": round(check_ms, 4),
        "gate_check_host_ms": round(host_ms, 4),
        "gate_check_target_ms": 5.0,
        "gate_check_ratio_to_target": round(check_ms / 5.0, 4),
        "sim_mode": "superlink",
        "sim_devices": args.devices,
        "sim_rounds": d["rounds"],
        "sim_wall_s": round(d["wall_s"], 2),
        "sim_rounds_per_min": round(rpm, 2),
        "sim_rounds_per_min_target": 2.0,
        "sim_rounds_per_min_no_deadline": round(float(nd["rounds_per_min"] or 0.0), 2),
        "sim_time_scale": args.time_scale,
        "sim_poll_s": args.poll_s,
        "superlink_pull_rps": round(d["superlink_pull_rps"], 1),
        "sim_drop_rate": round(d["drop_rate"], 4),
        "sim_late_replies": d["late_replies"],
        "rounds_aggregated": d["rounds_aggregated"],
        "rounds_aggregated_no_deadline": nd["rounds_aggregated"],
        "p99_round_time_s": round(d["p99_round_time_s"], 1),
        "p99_round_time_s_no_deadline": round(nd["p99_round_time_s"], 1),
        "p50_round_time_s": round(d["p50_round_time_s"], 1),
        "p50_round_time_s_no_deadline": round(nd["p50_round_time_s"], 1),
        "device_time_p50_s": round(float(d["device_time_p50_s"] or 0.0), 1),
        "device_time_p99_s": round(float(d["device_time_p99_s"] or 0.0), 1),
        "cohort_share": {k: round(v, 4) for k, v in d["cohort_share"].items()},
        "cohort_share_no_deadline": {k: round(v, 4) for k, v in nd["cohort_share"].items()},
        "fleet_share": {k: round(v, 4) for k, v in d["fleet_share"].items()},
        "virtual": {
            "rounds": args.rounds,
            "wall_s": round(virtual_wall, 3),
            "rounds_per_min": round(args.rounds / virtual_wall * 60, 1),
            "drop_rate": round(virtual["drop_rate"], 4),
            "p99_round_time_s": round(virtual["p99_round_time_s"], 1),
            "cohort_share": {k: round(v, 4) for k, v in virtual["cohort_share"].items()},
        },
        "targets_met": {
            "gate_check_ms": check_ms <= 5.0,
            "sim_200_devices_2_rounds_per_min": args.devices >= 200 and rpm >= 2.0,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
