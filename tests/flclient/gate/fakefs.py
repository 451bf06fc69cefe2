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


# ------------------------------------------------------------------------------------------------ boards, one a profile


def _arm_cpuinfo(cores: int, part: str, hardware: str | None = None, model: str | None = None) -> str:
    cpu = "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n"
        for i in range(cores)
    )
    tail = (f"Hardware\t: {hardware}\n" if hardware else "") + (f"Model\t\t: {model}\n" if model else "")
    return cpu + tail


def _x86_cpuinfo(cores: int, model_name: str) -> str:
    return "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model_name}\n"
        "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov lm constant_tsc\n\n"
        for i in range(cores)
    )


def _common(dev: FakeDevice, *, cores: int, ram_mib: int, network: str) -> None:
    iface = "wlan0" if network == "wifi" else "eth0"
    dev.interface(iface, network)
    dev.interface("lo", "virtual")
    dev.default_route(iface)
    dev.meminfo(int(ram_mib * 1024 * 0.8))  # an idle board: most of its RAM available
    dev.load(0.1 * cores, f"0-{cores - 1}")
    dev.data_dir()


def _pi(root: Path, model: str, part: str, *, cores: int = 4, ram_mib: int, network: str = "ethernet") -> FakeDevice:
    dev = FakeDevice(root)
    dev.write("/proc/device-tree/model", model + "\x00")
    dev.write("/proc/cpuinfo", _arm_cpuinfo(cores, part, hardware="BCM2835", model=model))
    dev.zone(0, "cpu-thermal", 52_000)
    dev.throttled(0)
    _common(dev, cores=cores, ram_mib=ram_mib, network=network)
    return dev


def _jetson(root: Path, model: str, *, cores: int, ram_mib: int, modes: dict[int, str]) -> FakeDevice:
    dev = FakeDevice(root)
    dev.write("/proc/device-tree/model", model + "\x00")
    dev.write("/proc/cpuinfo", _arm_cpuinfo(cores, "0xd42"))
    dev.write("/etc/nv_tegra_release", "# R36 (release), REVISION: 3.0\n")
    dev.zone(0, "CPU-therm", 41_000)
    dev.zone(1, "GPU-therm", 40_500)
    dev.zone(2, "PMIC-Die", 100_000)  # not the die: the reader skips it
    dev.zone(3, "Tboard_tegra", -256_000)  # an offline zone
    dev.nvpmodel(0, modes)
    _common(dev, cores=cores, ram_mib=ram_mib, network="ethernet")
    return dev


def _x86_gateway(root: Path) -> FakeDevice:
    dev = FakeDevice(root)
    dev.write("/proc/cpuinfo", _x86_cpuinfo(4, "Intel(R) N97"))
    dev.supply("ADP1", "Mains", online=1)  # ACPI AC adapter; no battery: the battery is absent
    dev.zone(0, "acpitz", 27_800)
    dev.zone(1, "x86_pkg_temp", 44_000)
    _common(dev, cores=4, ram_mib=8192, network="ethernet")
    return dev


def _android(root: Path) -> FakeDevice:
    dev = FakeDevice(root)
    dev.write("/system/build.prop", "ro.build.version.release=14\nro.product.model=Pixel 8\n")
    dev.write("/proc/cpuinfo", _arm_cpuinfo(8, "0xd44", hardware="Tensor G3"))
    dev.supply("usb", "USB", online=1)
    dev.supply("battery", "Battery", capacity=80, status="Charging")
    dev.zone(0, "skin-therm", 31_000)
    dev.zone(1, "cpu-0-0-usr", 36_000)  # idle, charging: below the 38 C resume point
    _common(dev, cores=8, ram_mib=8192, network="wifi")
    return dev


BOARDS = {
    "rpi3bplus": lambda r: _pi(r, "Raspberry Pi 3 Model B Plus Rev 1.3", "0xd03", ram_mib=1024),
    "rpi4b": lambda r: _pi(r, "Raspberry Pi 4 Model B Rev 1.4", "0xd08", ram_mib=4096),
    "rpi5": lambda r: _pi(r, "Raspberry Pi 5 Model B Rev 1.0", "0xd0b", ram_mib=8192),
    "rpi5-ai-hat": lambda r: _hailo(_pi(r, "Raspberry Pi 5 Model B Rev 1.0", "0xd0b", ram_mib=8192)),
    "rpi-zero2w": lambda r: _pi(r, "Raspberry Pi Zero 2 W Rev 1.0", "0xd03", ram_mib=512, network="wifi"),
    "jetson-nano-4gb": lambda r: _jetson(
        r, "NVIDIA Jetson Nano Developer Kit", cores=4, ram_mib=4096, modes={0: "MAXN", 1: "5W"}
    ),
    "jetson-orin-nano-8gb": lambda r: _jetson(
        r, "NVIDIA Jetson Orin Nano Developer Kit", cores=6, ram_mib=8192, modes={0: "15W", 1: "7W"}
    ),
    "jetson-agx-orin-64gb": lambda r: _jetson(
        r, "NVIDIA Jetson AGX Orin Developer Kit", cores=12, ram_mib=65536, modes={0: "MAXN", 3: "50W"}
    ),
    "x86-ind-gateway": _x86_gateway,
    "android-phone": _android,
}
"""A fake sysfs/proc tree of each bundled profile's board, as its kernel lays the files out."""


def _hailo(dev: FakeDevice) -> FakeDevice:
    dev.write("/dev/hailo0", "")
    return dev
