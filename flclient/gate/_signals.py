"""Device signal readers for Linux edge devices.

Every reader takes a filesystem ``root`` (``/`` on a device, a fake sysfs/proc tree in tests) and never raises for
a device condition: a signal that cannot be read is reported as ``None`` ("unknown"), and the policy decides what
unknown means. A signal whose hardware the device does not have at all is *absent* instead (:func:`read_absent`):
mains online and no battery listed, no Raspberry Pi firmware throttle node on a board that is not a Pi, no thermal
zone, no nvpmodel on a board that is not a Jetson. Absent signals pass; unknown ones fail closed. Parsers are pure
functions of the file text so they can be property-tested.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "HARDWARE_SIGNALS",
    "Board",
    "DeviceSignals",
    "Metered",
    "MeteredSource",
    "NetworkKind",
    "PowerState",
    "SignalSnapshot",
    "SignalSource",
    "StaticSignals",
    "ThrottleState",
    "classify_interface",
    "parse_cpu_list",
    "parse_cpuinfo",
    "parse_int_text",
    "parse_loadavg",
    "parse_meminfo_available",
    "parse_nvpmodel_conf",
    "parse_nvpmodel_status",
    "parse_proc_net_route_default",
    "parse_throttled",
    "parse_uevent",
    "read_absent",
    "read_board",
    "read_disk_free",
    "read_load_per_core",
    "read_mem_available",
    "read_network_kind",
    "read_power",
    "read_power_mode",
    "read_temperature",
    "read_throttle",
]

# A file in sysfs/proc is tiny; a bigger one is not what we think it is.
_MAX_READ = 64 * 1024

HARDWARE_SIGNALS = frozenset({"external_power", "battery", "temperature", "throttle", "power_mode"})
"""The signals a device may lack the hardware for (and so may report as absent)."""

_PI_THROTTLE = "/sys/devices/platform/soc/soc:firmware/get_throttled"
_NVPMODEL_STATUS = "/var/lib/nvpmodel/status"


class NetworkKind(str, enum.Enum):
    """What the default-route interface is. ``NONE`` means there is no default route (offline)."""

    ETHERNET = "ethernet"
    WIFI = "wifi"
    CELLULAR = "cellular"
    VIRTUAL = "virtual"
    NONE = "none"


class Metered(str, enum.Enum):
    """NetworkManager's metered states (NMMetered); the guesses are kept so a policy can treat them as it likes."""

    YES = "yes"
    NO = "no"
    GUESS_YES = "guess_yes"
    GUESS_NO = "guess_no"

    @property
    def is_metered(self) -> bool:
        """True for ``yes`` and ``guess_yes``: NetworkManager's guesses count as what they guess."""
        return self in (Metered.YES, Metered.GUESS_YES)


@dataclass(frozen=True, kw_only=True)
class PowerState:
    """Power supplies under ``/sys/class/power_supply``, classified by their ``type`` file.

    ``external_online`` is True when a Mains/USB/UPS supply reports ``online=1``, False when such supplies exist and
    none is online, None when the device exposes no external supply (a Pi, most boards): unknown, not "unplugged".
    """

    external_online: bool | None = None
    has_battery: bool = False
    battery_percent: float | None = None
    battery_status: str | None = None  # lower-case sysfs status: charging, discharging, full, not charging, unknown


@dataclass(frozen=True, kw_only=True)
class ThrottleState:
    """Raspberry Pi firmware throttle bits (``vcgencmd get_throttled`` / ``soc:firmware/get_throttled``)."""

    raw: int

    @property
    def under_voltage(self) -> bool:
        """Bit 0: under-voltage right now."""
        return bool(self.raw & 0x1)

    @property
    def frequency_capped(self) -> bool:
        """Bit 1: ARM frequency capped right now."""
        return bool(self.raw & 0x2)

    @property
    def throttled(self) -> bool:
        """Bit 2: throttled right now."""
        return bool(self.raw & 0x4)

    @property
    def soft_temp_limit(self) -> bool:
        """Bit 3: soft temperature limit active right now."""
        return bool(self.raw & 0x8)

    @property
    def under_voltage_occurred(self) -> bool:
        """Bit 16: under-voltage has occurred since boot."""
        return bool(self.raw & 0x10000)


@dataclass(frozen=True, kw_only=True)
class SignalSnapshot:
    """Every signal the gate looks at, read once. ``None`` means the signal could not be read."""

    power: PowerState = field(default_factory=PowerState)
    throttle: ThrottleState | None = None
    temperature_c: float | None = None
    power_mode: str | None = None
    network_interface: str | None = None
    network_kind: NetworkKind | None = None
    metered: Metered | None = None
    mem_available_bytes: int | None = None
    load_per_core: float | None = None
    disk_free_bytes: int | None = None
    absent: frozenset[str] = frozenset()
    """Signals whose hardware this device does not have (:func:`read_absent`); they pass like a profile's
    ``absent_signals``. Hardware that exists but cannot be read is not absent: it stays unknown."""

    def __post_init__(self) -> None:
        bad = sorted(set(self.absent) - HARDWARE_SIGNALS)
        if bad:
            raise ValueError(
                f"absent names signals that are not hardware {bad}; use some of {sorted(HARDWARE_SIGNALS)}"
            )


@dataclass(frozen=True, kw_only=True)
class Board:
    """What the device says it is: the device-tree model, the CPU model and the architecture (None: not said)."""

    model: str | None = None
    cpu: str | None = None
    arch: str | None = None

    @property
    def is_raspberry_pi(self) -> bool:
        """A Raspberry Pi board (its firmware exposes the throttle bits)."""
        return (self.model or "").startswith("Raspberry Pi")

    @property
    def is_jetson(self) -> bool:
        """An NVIDIA Jetson board (it has nvpmodel power modes)."""
        return "Jetson" in (self.model or "")

    def describe(self) -> str:
        """One line for people: what was seen."""
        parts = [f"model {self.model!r}" if self.model else "no device-tree model"]
        parts.append(f"CPU {self.cpu!r}" if self.cpu else "no CPU model in /proc/cpuinfo")
        if self.arch:
            parts.append(self.arch)
        return ", ".join(parts)


@runtime_checkable
class SignalSource(Protocol):
    """Anything that can produce a :class:`SignalSnapshot`: the real readers or a test/simulation double."""

    def read(self) -> SignalSnapshot:
        """Read every signal now."""
        ...


@runtime_checkable
class MeteredSource(Protocol):
    """Tells whether traffic on ``interface`` is metered; ``None`` when it cannot tell."""

    def metered(self, interface: str, kind: NetworkKind | None) -> Metered | None:
        """The metered state of ``interface`` (of kind ``kind`` when known)."""
        ...


class StaticSignals:
    """A :class:`SignalSource` that returns a snapshot you set: for tests and the fleet simulator."""

    def __init__(self, snapshot: SignalSnapshot | None = None) -> None:
        self.snapshot = snapshot if snapshot is not None else SignalSnapshot()

    def read(self) -> SignalSnapshot:
        """Return the current snapshot."""
        return self.snapshot


# --------------------------------------------------------------------------------------------------------- parsers


def parse_int_text(text: str) -> int | None:
    """A sysfs integer file (``"1\\n"``, ``"-256000"``): the integer, or None when it is not exactly one."""
    s = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,19}", s):
        return None
    return int(s)


def parse_throttled(text: str) -> int | None:
    """``throttled=0x50005`` (vcgencmd) or ``50005`` (sysfs, hex without prefix) -> the bit field."""
    s = text.strip()
    if s.startswith("throttled="):
        s = s[len("throttled=") :]
    if s[:2].lower() == "0x":
        s = s[2:]
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", s):
        return None
    return int(s, 16)


def parse_meminfo_available(text: str) -> int | None:
    """``MemAvailable:  123456 kB`` in /proc/meminfo -> bytes."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            m = re.fullmatch(r"MemAvailable:\s+(\d{1,15})\s*kB\s*", line)
            return int(m.group(1)) * 1024 if m else None
    return None


def parse_loadavg(text: str) -> float | None:
    """/proc/loadavg -> the 1-minute load average."""
    parts = text.split()
    if len(parts) < 3:
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    return value if 0.0 <= value < 1e6 else None


def parse_cpu_list(text: str) -> int | None:
    """A kernel CPU list (``0-3,6,8-9``) -> how many CPUs it names."""
    s = text.strip()
    if not s:
        return None
    count = 0
    for part in s.split(","):
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", part)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            return None
        count += hi - lo + 1
    return count


def parse_uevent(text: str) -> dict[str, str]:
    """A sysfs ``uevent`` file (``KEY=value`` lines) -> a dict; malformed lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key.replace("_", "").isalnum():
            out[key] = value
    return out


def parse_proc_net_route_default(text: str) -> str | None:
    """/proc/net/route -> the interface of the default route with the lowest metric (None: no default route)."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        iface, dest, flags, metric = cols[0], cols[1], cols[3], cols[6]
        try:
            up = int(flags, 16) & 0x1
            met = int(metric)
        except ValueError:
            continue
        if dest == "00000000" and up and (best is None or met < best[0]):
            best = (met, iface)
    return best[1] if best else None


def parse_cpuinfo(text: str) -> tuple[str | None, str | None]:
    """/proc/cpuinfo -> (CPU model, architecture). The model is x86's ``model name``, else the ``Hardware`` or
    ``Model`` line ARM kernels print; the architecture is ``x86_64`` when ``flags`` lists ``lm``, ``aarch64`` or
    ``armv7l`` from ``CPU architecture``, else None."""
    model: str | None = None
    fallback: str | None = None
    arch: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and model is None and value:
            model = value
        elif key in ("hardware", "model") and fallback is None and value and not value.isdigit():
            fallback = value
        elif key == "flags" and arch is None:
            arch = "x86_64" if "lm" in value.split() else None
        elif key == "cpu architecture" and arch is None:
            arch = {"8": "aarch64", "7": "armv7l"}.get(value)
    return model or fallback, arch


def parse_nvpmodel_status(text: str) -> int | None:
    """/var/lib/nvpmodel/status (``pmode:0002 fmode:...``) -> the power-mode id."""
    m = re.search(r"pmode:\s*(\d{1,4})", text)
    return int(m.group(1)) if m else None


def parse_nvpmodel_conf(text: str) -> dict[int, str]:
    """/etc/nvpmodel.conf -> {mode id: mode name} from its ``< POWER_MODEL ID=0 NAME=MAXN >`` lines."""
    modes: dict[int, str] = {}
    for m in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d{1,4})\s+NAME=([A-Za-z0-9_.-]+)\s*>", text):
        modes[int(m.group(1))] = m.group(2)
    return modes


# --------------------------------------------------------------------------------------------------------- readers


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_READ + 1)
    except OSError:
        return None
    if len(data) > _MAX_READ:
        return None
    return data.decode("utf-8", errors="replace")


def _sub(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def read_power(root: Path) -> PowerState:
    """Classify ``/sys/class/power_supply/*`` by ``type``; skip ``scope=Device`` (mice, pens)."""
    external: list[bool | None] = []
    battery_percent: float | None = None
    battery_status: str | None = None
    has_battery = False
    for supply in _entries(_sub(root, "/sys/class/power_supply")):
        scope = (_read(supply / "scope") or "").strip().lower()
        if scope == "device":
            continue
        kind = (_read(supply / "type") or "").strip().lower()
        if kind in ("mains", "usb", "ups"):
            online = parse_int_text(_read(supply / "online") or "")
            external.append(None if online is None else online > 0)
        elif kind == "battery":
            if has_battery:  # second battery: keep the first one's figures, it is the system battery by sort order
                continue
            has_battery = True
            cap = parse_int_text(_read(supply / "capacity") or "")
            battery_percent = float(cap) if cap is not None and 0 <= cap <= 100 else None
            status = (_read(supply / "status") or "").strip().lower()
            battery_status = status or None
    ext: bool | None
    if any(v is True for v in external):
        ext = True
    elif external and all(v is False for v in external):
        ext = False
    else:
        ext = None
    if ext is None and battery_status in ("charging", "full"):
        ext = True  # a charging battery implies external power even when the charger has no supply node
    elif ext is None and battery_status == "discharging":
        ext = False
    return PowerState(
        external_online=ext, has_battery=has_battery, battery_percent=battery_percent, battery_status=battery_status
    )


def read_throttle(root: Path) -> ThrottleState | None:
    """Raspberry Pi throttle bits from the firmware node, else bit 0 from hwmon ``rpi_volt``; None elsewhere."""
    text = _read(_sub(root, _PI_THROTTLE))
    if text is not None:
        raw = parse_throttled(text)
        return ThrottleState(raw=raw) if raw is not None else None
    for hwmon in _entries(_sub(root, "/sys/class/hwmon")):
        if (_read(hwmon / "name") or "").strip() == "rpi_volt":
            alarm = parse_int_text(_read(hwmon / "in0_lcrit_alarm") or "")
            return ThrottleState(raw=1 if alarm else 0) if alarm is not None else None
    return None


# Jetson exposes zones that do not measure the die (PMIC-Die reads a fixed 100 C) and offline zones read -256 C.
_SKIP_ZONE_TYPES = frozenset({"pmic-die"})
_MIN_VALID_C = -40.0
_MAX_VALID_C = 150.0


def read_temperature(root: Path) -> float | None:
    """The hottest valid ``/sys/class/thermal/thermal_zone*/temp`` in degrees Celsius."""
    hottest: float | None = None
    for zone in _entries(_sub(root, "/sys/class/thermal")):
        if not zone.name.startswith("thermal_zone"):
            continue
        if (_read(zone / "type") or "").strip().lower() in _SKIP_ZONE_TYPES:
            continue
        if (_read(zone / "mode") or "enabled").strip().lower() == "disabled":
            continue
        milli = parse_int_text(_read(zone / "temp") or "")
        if milli is None:
            continue
        celsius = milli / 1000.0
        if _MIN_VALID_C < celsius < _MAX_VALID_C and (hottest is None or celsius > hottest):
            hottest = celsius
    return hottest


def read_power_mode(root: Path) -> str | None:
    """Jetson nvpmodel mode: its name from ``/etc/nvpmodel.conf`` when known, else ``"mode-<id>"``."""
    text = _read(_sub(root, _NVPMODEL_STATUS))
    if text is None:
        return None
    mode = parse_nvpmodel_status(text)
    if mode is None:
        return None
    names = parse_nvpmodel_conf(_read(_sub(root, "/etc/nvpmodel.conf")) or "")
    return names.get(mode, f"mode-{mode}")


def classify_interface(root: Path, interface: str) -> NetworkKind | None:
    """Classify ``/sys/class/net/<interface>``: wireless/ -> Wi-Fi, DEVTYPE=wwan or type 519 -> cellular,
    no ``device`` link -> virtual (bridges, tunnels, VPNs), anything else with a device -> Ethernet."""
    if not interface or "/" in interface or interface in (".", ".."):
        return None
    base = _sub(root, "/sys/class/net") / interface
    if not base.exists():
        return None
    uevent = parse_uevent(_read(base / "uevent") or "")
    devtype = uevent.get("DEVTYPE", "").lower()
    if_type = parse_int_text(_read(base / "type") or "")
    if devtype == "wwan" or if_type == 519:
        return NetworkKind.CELLULAR
    if (base / "wireless").is_dir() or (base / "phy80211").exists() or devtype == "wlan":
        return NetworkKind.WIFI
    if not (base / "device").exists():
        return NetworkKind.VIRTUAL
    return NetworkKind.ETHERNET


def read_network_kind(root: Path) -> tuple[str | None, NetworkKind | None]:
    """The default-route interface (from /proc/net/route) and its kind; ``(None, NONE)`` when there is no route."""
    text = _read(_sub(root, "/proc/net/route"))
    if text is None:
        return None, None
    interface = parse_proc_net_route_default(text)
    if interface is None:
        return None, NetworkKind.NONE
    return interface, classify_interface(root, interface)


def read_mem_available(root: Path) -> int | None:
    """``MemAvailable`` from /proc/meminfo, in bytes."""
    text = _read(_sub(root, "/proc/meminfo"))
    return parse_meminfo_available(text) if text is not None else None


def read_load_per_core(root: Path) -> float | None:
    """The 1-minute load average from /proc/loadavg divided by the online CPUs."""
    text = _read(_sub(root, "/proc/loadavg"))
    cpus_text = _read(_sub(root, "/sys/devices/system/cpu/online"))
    if text is None or cpus_text is None:
        return None
    load, cpus = parse_loadavg(text), parse_cpu_list(cpus_text)
    if load is None or not cpus:
        return None
    return load / cpus


def read_board(root: Path) -> Board:
    """The device-tree model (``/proc/device-tree/model``, NUL-terminated) and the CPU from ``/proc/cpuinfo``."""
    model = (_read(_sub(root, "/proc/device-tree/model")) or "").replace("\x00", "").strip() or None
    cpu, arch = parse_cpuinfo(_read(_sub(root, "/proc/cpuinfo")) or "")
    return Board(model=model, cpu=cpu, arch=arch)


def _has_rpi_volt(root: Path) -> bool:
    return any((_read(h / "name") or "").strip() == "rpi_volt" for h in _entries(_sub(root, "/sys/class/hwmon")))


def read_absent(root: Path, *, power: PowerState | None = None, board: Board | None = None) -> frozenset[str]:
    """The signals whose hardware this device does not have: they pass instead of failing closed.

    - ``battery``: an external supply is online and no battery is listed (a mains-powered gateway). With no supply
      node at all (a Pi) nothing can be said: a battery HAT without a driver looks the same, so it stays unknown.
    - ``throttle``: no firmware throttle node and no ``rpi_volt`` hwmon, on a board that is not a Raspberry Pi
      (a Pi without them is missing its firmware driver: unknown).
    - ``temperature``: no ``/sys/class/thermal/thermal_zone*`` at all (a VM, some x86 boards).
    - ``power_mode``: no nvpmodel status on a board that is not a Jetson.
    """
    power = power if power is not None else read_power(root)
    board = board if board is not None else read_board(root)
    absent: set[str] = set()
    if not power.has_battery and power.external_online is True:
        absent.add("battery")
    if not _sub(root, _PI_THROTTLE).exists() and not _has_rpi_volt(root) and not board.is_raspberry_pi:
        absent.add("throttle")
    if not any(z.name.startswith("thermal_zone") for z in _entries(_sub(root, "/sys/class/thermal"))):
        absent.add("temperature")
    if not _sub(root, _NVPMODEL_STATUS).exists() and not board.is_jetson:
        absent.add("power_mode")
    return frozenset(absent)


def read_disk_free(path: Path) -> int | None:
    """Bytes available to an unprivileged user on the filesystem holding ``path`` (its nearest existing parent)."""
    p = path
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return int(st.f_bavail) * int(st.f_frsize)


class DeviceSignals:
    """The real :class:`SignalSource`: reads every signal below ``root``.

    ``data_dir`` is the SDK's data directory (its free space is the disk signal); it is taken below ``root`` too.
    ``metered`` answers whether the default interface is metered (NetworkManager over D-Bus, a fallback, or both
    chained); without one the state stays unknown.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] = "/",
        data_dir: str | os.PathLike[str] = "/var/lib/flclient",
        metered: MeteredSource | None = None,
    ) -> None:
        self.root = Path(root)
        self.data_dir = Path(data_dir)
        self._metered = metered

    def read(self) -> SignalSnapshot:
        """Read every signal now; unreadable ones are None, and those without hardware are listed as absent."""
        root = self.root
        interface, kind = read_network_kind(root)
        metered: Metered | None = None
        if interface is not None and self._metered is not None:
            try:
                metered = self._metered.metered(interface, kind)
            except Exception:  # a metered backend must not break the gate; unknown fails closed in the policy
                metered = None
        power = read_power(root)
        return SignalSnapshot(
            power=power,
            throttle=read_throttle(root),
            temperature_c=read_temperature(root),
            power_mode=read_power_mode(root),
            network_interface=interface,
            network_kind=kind,
            metered=metered,
            mem_available_bytes=read_mem_available(root),
            load_per_core=read_load_per_core(root),
            disk_free_bytes=read_disk_free(_sub(root, str(self.data_dir))),
            absent=read_absent(root, power=power),
        )
