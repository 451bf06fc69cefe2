"""The fleet simulators: virtual devices, each following its device profile, through many rounds.

Two models share one configuration (:class:`FleetConfig`), one report (:class:`FleetReport`) and its plots
(:func:`write_fleet_plots`, matplotlib from ``pip install 'flclient[sim]'``):

- live (:func:`run_live_fleet`): device threads speak the real Fleet API to a local SuperLink running the
  flclient ServerApp; needs the ``[server]`` extra (``flwr``) for the SuperLink, the devices only use
  ``flclient.fleet``;
- virtual time (:func:`simulate_fleet`): discrete events and a :class:`RoundPlanner` in place of the server, so
  a day of fleet behaviour takes seconds and a seed reproduces a run exactly.

``flclient simulate`` runs either from the command line. Example::

    from pathlib import Path
    from flclient.gate import list_profiles, load_profile
    from flclient.sim import FleetConfig, LiveFleetConfig, parse_mix, run_live_fleet, simulate_fleet

    profiles = {k: load_profile(k) for k in list_profiles()}
    fleet = FleetConfig(devices=50, rounds=5, mix=parse_mix("all", list(profiles)), goal=10)
    print(simulate_fleet(fleet, profiles).summary()["drop_rate"])
    result = run_live_fleet(LiveFleetConfig(fleet=fleet), profiles, Path("out/sim"))
    print(result.summary()["drop_rate"], result.summary()["cohort_share"])
"""

from ._device import DeviceEvent, EventLog, SimClock, VirtualDevice
from ._fleet import FleetConfig, FleetReport, RoundPlanner, RoundReport, parse_mix, simulate_fleet
from ._live import LiveFleetConfig, LiveFleetResult, run_live_fleet
from ._plots import write_fleet_plots

__all__ = [
    "DeviceEvent",
    "EventLog",
    "FleetConfig",
    "FleetReport",
    "LiveFleetConfig",
    "LiveFleetResult",
    "RoundPlanner",
    "RoundReport",
    "SimClock",
    "VirtualDevice",
    "parse_mix",
    "run_live_fleet",
    "simulate_fleet",
    "write_fleet_plots",
]
