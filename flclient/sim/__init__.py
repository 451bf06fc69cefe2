"""The live fleet simulator: virtual devices that follow their profiles against a real local SuperLink.

Example::

    from pathlib import Path
    from flclient.gate import list_profiles, load_profile
    from flclient.gate._fleet import FleetConfig, parse_mix
    from flclient.sim import LiveFleetConfig, run_live_fleet

    profiles = {k: load_profile(k) for k in list_profiles()}
    fleet = FleetConfig(devices=50, rounds=5, mix=parse_mix("all", list(profiles)), goal=10)
    result = run_live_fleet(LiveFleetConfig(fleet=fleet), profiles, Path("out/sim"))
    print(result.summary()["drop_rate"], result.summary()["cohort_share"])

Needs the ``[server]`` extra (``flwr``) for the SuperLink; the devices themselves only use ``flclient.fleet``.
"""

from ._device import DeviceEvent, EventLog, SimClock, VirtualDevice
from ._live import LiveFleetConfig, LiveFleetResult, run_live_fleet

__all__ = [
    "DeviceEvent",
    "EventLog",
    "LiveFleetConfig",
    "LiveFleetResult",
    "SimClock",
    "VirtualDevice",
    "run_live_fleet",
]
