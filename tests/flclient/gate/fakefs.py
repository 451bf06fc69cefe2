"""Build fake sysfs/proc trees in a temporary directory: the signal readers run against these unchanged."""

from __future__ import annotations

from pathlib import Path


class FakeDevice:
    """A fake device root. Each method writes the files a real kernel would expose for that piece of hardware."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, path: str, text: str) -> Path:
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def supply(
        self,
        name: str,
        kind: str,
        *,
        online: int | None = None,
        capacity: int | None = None,
        status: str | None = None,
        scope: str | None = None,
    ) -> None:
        base = f"/sys/class/power_supply/{name}"
        self.write(f"{base}/type", f"{kind}\n")
        if online is not None:
            self.write(f"{base}/online", f"{online}\n")
        if capacity is not None:
            self.write(f"{base}/capacity", f"{capacity}\n")
        if status is not None:
            self.write(f"{base}/status", f"{status}\n")
        if scope is not None:
            self.write(f"{base}/scope", f"{scope}\n")

    def zone(self, index: int, kind: str, milli_c: int | str, *, mode: str | None = None) -> None:
        base = f"/sys/class/thermal/thermal_zone{index}"
        self.write(f"{base}/type", f"{kind}\n")
        self.write(f"{base}/temp", f"{milli_c}\n")
        if mode is not None:
            self.write(f"{base}/mode", f"{mode}\n")

    def interface(self, name: str, kind: str) -> None:
        """kind: ethernet, wifi, cellular (DEVTYPE=wwan), cellular-519 (type 519) or virtual."""
        base = self.root / "sys/class/net" / name
        base.mkdir(parents=True, exist_ok=True)
        self.write(f"/sys/class/net/{name}/type", "519\n" if kind == "cellular-519" else "1\n")
        self.write(
            f"/sys/class/net/{name}/uevent", f"INTERFACE={name}\n" + ("DEVTYPE=wwan\n" if kind == "cellular" else "")
        )
        if kind != "virtual":
            (base / "device").mkdir(exist_ok=True)
        if kind == "wifi":
            (base / "wireless").mkdir(exist_ok=True)

    def default_route(self, interface: str | None) -> None:
        lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
        if interface is not None:
            lines.append(f"{interface}\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0")
            lines.append(f"{interface}\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0")
        self.write("/proc/net/route", "\n".join(lines) + "\n")

    def meminfo(self, available_kb: int) -> None:
        self.write(
            "/proc/meminfo",
            f"MemTotal:        4000000 kB\nMemFree:          100000 kB\nMemAvailable:   {available_kb} kB\n",
        )

    def load(self, one_minute: float, cpus: str = "0-3") -> None:
        self.write("/proc/loadavg", f"{one_minute:.2f} 0.50 0.40 1/234 5678\n")
        self.write("/sys/devices/system/cpu/online", f"{cpus}\n")

    def throttled(self, raw: int) -> None:
        self.write("/sys/devices/platform/soc/soc:firmware/get_throttled", f"{raw:x}\n")

    def nvpmodel(self, mode: int, names: dict[int, str] | None = None) -> None:
        self.write("/var/lib/nvpmodel/status", f"pmode:{mode:04d} fmode:quiet\n")
        if names:
            self.write(
                "/etc/nvpmodel.conf",
                "".join(f"< POWER_MODEL ID={i} NAME={n} >\nCPU_ONLINE CORE_0 1\n" for i, n in names.items()),
            )

    def data_dir(self, path: str = "/var/lib/flclient") -> None:
        (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)


def healthy_pi(root: Path) -> FakeDevice:
    """A Raspberry Pi 4 on Ethernet: cool, idle, no power-supply nodes, throttle bits clear."""
    dev = FakeDevice(root)
    dev.zone(0, "cpu-thermal", 48_000)
    dev.throttled(0)
    dev.interface("eth0", "ethernet")
    dev.interface("lo", "virtual")
    dev.default_route("eth0")
    dev.meminfo(3_000_000)
    dev.load(0.2)
    dev.data_dir()
    return dev


def healthy_laptop_like(root: Path) -> FakeDevice:
    """A battery device (phone-class) on Wi-Fi, charging."""
    dev = FakeDevice(root)
    dev.supply("AC", "Mains", online=1)
    dev.supply("BAT0", "Battery", capacity=85, status="Charging")
    dev.supply("hid-mouse-battery", "Battery", capacity=5, status="Discharging", scope="Device")
    dev.zone(0, "x86_pkg_temp", 35_000)
    dev.interface("wlan0", "wifi")
    dev.default_route("wlan0")
    dev.meminfo(3_000_000)
    dev.load(0.1, "0-7")
    dev.data_dir()
    return dev
