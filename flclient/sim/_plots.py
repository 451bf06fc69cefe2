"""PNG plots of a fleet simulation (matplotlib, an optional dependency: ``pip install 'flclient[sim]'``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .._errors import GateError
from ._fleet import FleetReport

__all__ = ["write_fleet_plots"]


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise GateError("PNG plots need matplotlib: pip install 'flclient[sim]' (or pass --no-plots)") from exc
    matplotlib.use("Agg")  # files only: never open a window
    return importlib.import_module("matplotlib.pyplot")


def write_fleet_plots(report: FleetReport, out_dir: Path) -> list[Path]:
    """Write ``rounds.png`` (drop rate, device-time p50/p99, round duration) and ``cohorts.png`` (share of
    accepted updates vs share of the fleet per device class); return their paths."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    rs = report.rounds
    x = [r.round for r in rs]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(x, [r.drop_rate for r in rs], label="drop rate")
    ax1.plot(x, [r.eligible / report.config.devices for r in rs], label="eligible share")
    ax1.set_ylabel("fraction")
    ax1.legend(loc="upper right")
    ax2.plot(x, [r.device_time_p50_s for r in rs], label="device round time p50")
    ax2.plot(x, [r.device_time_p99_s for r in rs], label="device round time p99")
    ax2.plot(x, [r.duration_s for r in rs], label="round duration")
    if report.config.deadline_s is not None:
        ax2.axhline(report.config.deadline_s, color="grey", linestyle="--", label="deadline")
    ax2.set_xlabel("round")
    ax2.set_ylabel("seconds (virtual)")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    rounds_png = out_dir / "rounds.png"
    fig.savefig(rounds_png, dpi=100)
    plt.close(fig)
    summary = report.summary()
    classes = list(report.fleet_by_class)
    fig, ax = plt.subplots(figsize=(9, 4))
    pos = range(len(classes))
    ax.bar([p - 0.2 for p in pos], [summary["fleet_share"][c] for c in classes], width=0.4, label="fleet share")
    ax.bar([p + 0.2 for p in pos], [summary["cohort_share"][c] for c in classes], width=0.4, label="update share")
    ax.set_xticks(list(pos))
    ax.set_xticklabels(classes, rotation=30, ha="right")
    ax.set_ylabel("share")
    ax.legend()
    fig.tight_layout()
    cohorts_png = out_dir / "cohorts.png"
    fig.savefig(cohorts_png, dpi=100)
    plt.close(fig)
    return [rounds_png, cohorts_png]
