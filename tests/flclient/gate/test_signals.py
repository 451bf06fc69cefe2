from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient.gate import DeviceSignals, InterfaceKindMetered, Metered, NetworkKind
from flclient.gate import _signals as sig

from .fakefs import FakeDevice, healthy_laptop_like, healthy_pi

# ------------------------------------------------------------------------------------------------ readers on trees


def test_empty_root_reads_all_unknown(tmp_path: Path) -> None:
    snap = DeviceSignals(root=tmp_path, data_dir="/nonexistent/dir").read()
    assert snap.power.external_online is None and not snap.power.has_battery
    assert snap.throttle is None and snap.temperature_c is None and snap.power_mode is None
    assert snap.network_kind is None and snap.metered is None
    assert snap.mem_available_bytes is None and snap.load_per_core is None
    # statvfs walks up to the fake root, which exists: free disk is still known
    assert snap.disk_free_bytes is not None


def test_healthy_pi(tmp_path: Path) -> None:
    healthy_pi(tmp_path)
    snap = DeviceSignals(root=tmp_path, metered=InterfaceKindMetered()).read()
    assert snap.temperature_c == 48.0
    assert snap.throttle is not None and snap.throttle.raw == 0
    assert (snap.network_interface, snap.network_kind, snap.metered) == ("eth0", NetworkKind.ETHERNET, Metered.GUESS_NO)
    assert snap.mem_available_bytes == 3_000_000 * 1024
    assert snap.load_per_core == pytest.approx(0.05)
    assert snap.power.external_online is None


def test_power_supplies_by_type_skip_device_scope(tmp_path: Path) -> None:
    healthy_laptop_like(tmp_path)
    p = sig.read_power(tmp_path)
    assert p.external_online is True and p.has_battery
    assert p.battery_percent == 85.0 and p.battery_status == "charging"


@pytest.mark.parametrize(
    ("supplies", "expected"),
    [
        ([("ac", "Mains", 0), ("usb", "USB", 1)], True),
        ([("ac", "Mains", 0), ("ups", "UPS", 0)], False),
        ([("ac", "Mains", None)], None),  # online file missing
    ],
)
def test_external_power(tmp_path: Path, supplies: list[tuple[str, str, int | None]], expected: bool | None) -> None:
    dev = FakeDevice(tmp_path)
    for name, kind, online in supplies:
        dev.supply(name, kind, online=online)
    assert sig.read_power(tmp_path).external_online is expected


def test_battery_status_implies_power_when_no_charger_node(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.supply("BAT0", "Battery", capacity=50, status="Discharging")
    assert sig.read_power(tmp_path).external_online is False
    dev.write("/sys/class/power_supply/BAT0/status", "Charging\n")
    assert sig.read_power(tmp_path).external_online is True


@pytest.mark.parametrize("capacity", ["", "abc", "150", "-3", "1e3"])
def test_malformed_battery_capacity_is_unknown(tmp_path: Path, capacity: str) -> None:
    dev = FakeDevice(tmp_path)
    dev.write("/sys/class/power_supply/BAT0/type", "Battery\n")
    dev.write("/sys/class/power_supply/BAT0/capacity", capacity)
    p = sig.read_power(tmp_path)
    assert p.has_battery and p.battery_percent is None


def test_thermal_hottest_valid_zone_with_jetson_quirks(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.zone(0, "CPU-therm", 51_500)
    dev.zone(1, "GPU-therm", 55_000)
    dev.zone(2, "PMIC-Die", 100_000)  # fixed reading on Jetson: skipped
    dev.zone(3, "AO-therm", -256_000)  # offline zone: skipped
    dev.zone(4, "thermal-fan-est", 99_000, mode="disabled")
    dev.zone(5, "broken", "garbage")
    assert sig.read_temperature(tmp_path) == 55.0


def test_thermal_only_invalid_is_unknown(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.zone(0, "AO-therm", -256_000)
    assert sig.read_temperature(tmp_path) is None


def test_throttle_firmware_node_and_hwmon_fallback(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.write("/sys/class/hwmon/hwmon0/name", "rpi_volt\n")
    dev.write("/sys/class/hwmon/hwmon0/in0_lcrit_alarm", "1\n")
    t = sig.read_throttle(tmp_path)
    assert t is not None and t.under_voltage and not t.throttled
    dev.throttled(0x50005)
    t = sig.read_throttle(tmp_path)
    assert t is not None and t.under_voltage and t.throttled and t.under_voltage_occurred
    assert not t.frequency_capped and not t.soft_temp_limit
    dev.write("/sys/devices/platform/soc/soc:firmware/get_throttled", "zz\n")
    assert sig.read_throttle(tmp_path) is None


def test_jetson_power_mode(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    assert sig.read_power_mode(tmp_path) is None
    dev.nvpmodel(1)
    assert sig.read_power_mode(tmp_path) == "mode-1"
    dev.nvpmodel(1, {0: "MAXN", 1: "5W"})
    assert sig.read_power_mode(tmp_path) == "5W"
    dev.write("/var/lib/nvpmodel/status", "nonsense")
    assert sig.read_power_mode(tmp_path) is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ethernet", NetworkKind.ETHERNET),
        ("wifi", NetworkKind.WIFI),
        ("cellular", NetworkKind.CELLULAR),
        ("cellular-519", NetworkKind.CELLULAR),
        ("virtual", NetworkKind.VIRTUAL),
    ],
)
def test_network_kind(tmp_path: Path, kind: str, expected: NetworkKind) -> None:
    dev = FakeDevice(tmp_path)
    dev.interface("if0", kind)
    dev.default_route("if0")
    assert sig.read_network_kind(tmp_path) == ("if0", expected)


def test_network_no_route_missing_interface_and_hostile_names(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.default_route(None)
    assert sig.read_network_kind(tmp_path) == (None, NetworkKind.NONE)
    dev.default_route("ghost0")
    assert sig.read_network_kind(tmp_path) == ("ghost0", None)
    assert sig.classify_interface(tmp_path, "../../etc") is None
    assert sig.classify_interface(tmp_path, "..") is None


def test_mem_load_disk_malformed_and_missing(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    assert sig.read_mem_available(tmp_path) is None
    dev.write("/proc/meminfo", "MemTotal: 1 kB\n")
    assert sig.read_mem_available(tmp_path) is None
    dev.write("/proc/meminfo", "MemAvailable: lots kB\n")
    assert sig.read_mem_available(tmp_path) is None
    dev.write("/proc/loadavg", "1.0 1.0 1.0 1/1 1\n")
    assert sig.read_load_per_core(tmp_path) is None  # no cpu list
    dev.write("/sys/devices/system/cpu/online", "0-1,3\n")
    assert sig.read_load_per_core(tmp_path) == pytest.approx(1 / 3)
    dev.write("/proc/loadavg", "x\n")
    assert sig.read_load_per_core(tmp_path) is None
    assert sig.read_disk_free(tmp_path / "not" / "there") is not None


def test_oversized_file_is_unknown(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.write("/proc/meminfo", "MemAvailable: 1 kB\n" + "x" * 100_000)
    assert sig.read_mem_available(tmp_path) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file permissions do not deny reads")
def test_unreadable_file_is_unknown(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    p = dev.write("/proc/meminfo", "MemAvailable: 1 kB\n")
    p.chmod(0)
    assert sig.read_mem_available(tmp_path) is None


def test_directory_where_file_expected_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "proc" / "meminfo").mkdir(parents=True)
    assert sig.read_mem_available(tmp_path) is None


# ------------------------------------------------------------------------------------------------ parser properties

_text = st.text(max_size=200)


@given(_text)
def test_parsers_never_raise(text: str) -> None:
    sig.parse_int_text(text)
    sig.parse_throttled(text)
    sig.parse_meminfo_available(text)
    sig.parse_loadavg(text)
    sig.parse_cpu_list(text)
    sig.parse_uevent(text)
    sig.parse_proc_net_route_default(text)
    sig.parse_nvpmodel_status(text)
    sig.parse_nvpmodel_conf(text)


@given(st.integers(min_value=-(10**18), max_value=10**18), st.sampled_from(["", "\n", " \n"]))
def test_int_round_trip(value: int, tail: str) -> None:
    assert sig.parse_int_text(f"{value}{tail}") == value


@given(st.integers(min_value=0, max_value=0xFFFFFFFF), st.booleans())
def test_throttled_round_trip(raw: int, vcgencmd: bool) -> None:
    text = f"throttled=0x{raw:x}\n" if vcgencmd else f"{raw:x}\n"
    assert sig.parse_throttled(text) == raw


@given(st.integers(min_value=0, max_value=10**12))
def test_meminfo_round_trip(kb: int) -> None:
    text = f"MemTotal: 99 kB\nMemAvailable:   {kb} kB\nBuffers: 1 kB\n"
    assert sig.parse_meminfo_available(text) == kb * 1024


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 20)), min_size=1, max_size=8))
def test_cpu_list_counts(ranges: list[tuple[int, int]]) -> None:
    parts = [f"{lo}-{lo + n}" if n else f"{lo}" for lo, n in ranges]
    assert sig.parse_cpu_list(",".join(parts)) == sum(n + 1 for _, n in ranges)


@given(st.floats(min_value=0, max_value=1000, allow_nan=False).map(lambda v: round(v, 2)))
def test_loadavg_round_trip(load: float) -> None:
    assert sig.parse_loadavg(f"{load:.2f} 0.1 0.1 1/2 3\n") == pytest.approx(load)


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True), st.booleans(), st.integers(0, 1000)),
        max_size=6,
    )
)
def test_default_route_lowest_metric(routes: list[tuple[str, bool, int]]) -> None:
    lines = ["Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask"]
    for iface, default, metric in routes:
        dest = "00000000" if default else "0000A8C0"
        lines.append(f"{iface}\t{dest}\t01010101\t0003\t0\t0\t{metric}\t00000000")
    defaults = [(m, i) for i, d, m in routes if d]
    got = sig.parse_proc_net_route_default("\n".join(lines))
    if not defaults:
        assert got is None
    else:
        best = min(m for m, _ in defaults)
        assert got in {i for m, i in defaults if m == best}


@given(st.dictionaries(st.integers(0, 99), st.from_regex(r"[A-Z0-9_]{1,10}", fullmatch=True), max_size=5))
def test_nvpmodel_conf_round_trip(modes: dict[int, str]) -> None:
    text = "".join(f"< POWER_MODEL ID={i} NAME={n} >\nCPU_ONLINE CORE_0 1\n" for i, n in modes.items())
    assert sig.parse_nvpmodel_conf(text) == modes


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z_]{0,10}", fullmatch=True), st.text("abc=12", max_size=10)))
def test_uevent_round_trip(values: dict[str, str]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in values.items() if "\n" not in v)
    assert sig.parse_uevent(text) == {k: v for k, v in values.items() if "\n" not in v}
