"""Every bundled profile against a fake sysfs/proc tree of its board; hardware a board lacks is absent, not unknown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flclient._cli import main
from flclient.gate import (
    CheckStatus,
    DeviceSignals,
    EligibilityPolicy,
    Metered,
    NetworkKind,
    Reason,
    list_profiles,
    load_profile,
    match_profiles,
)
from flclient.gate import _signals as sig

from .fakefs import BOARDS, FakeDevice, healthy_pi

ROOT = Path(__file__).resolve().parents[3]


class KnownUnmetered:
    """What NetworkManager answers for a home Wi-Fi or a wired link: not metered."""

    def metered(self, interface: str, kind: NetworkKind | None) -> Metered | None:
        return Metered.NO


class Statuses(dict[str, CheckStatus]):
    def __repr__(self) -> str:  # readable assertion messages
        return "{" + ", ".join(f"{k}: {v.value}" for k, v in self.items()) + "}"


def statuses(root: Path, policy: EligibilityPolicy, phase: str = "start") -> Statuses:
    snap = DeviceSignals(root=root, metered=KnownUnmetered()).read()
    return Statuses({c.signal: c.status for c in policy.evaluate(snap, phase=phase).checks})


def test_every_bundled_profile_has_a_fake_board() -> None:
    assert set(BOARDS) == set(list_profiles())


@pytest.mark.parametrize("profile_id", sorted(BOARDS))
def test_the_board_is_recognised_as_its_profile(profile_id: str, tmp_path: Path) -> None:
    BOARDS[profile_id](tmp_path)
    _, matches = match_profiles(tmp_path)
    assert matches and matches[0].profile.id == profile_id and matches[0].by == "recognised", matches


@pytest.mark.parametrize("profile_id", sorted(BOARDS))
@pytest.mark.parametrize("phase", ["start", "continue"])
def test_a_healthy_board_is_eligible_under_its_profile(profile_id: str, phase: str, tmp_path: Path) -> None:
    BOARDS[profile_id](tmp_path)
    policy = load_profile(profile_id).policy()
    got = statuses(tmp_path, policy, phase)
    assert CheckStatus.UNKNOWN not in got.values(), got
    assert CheckStatus.FAILED not in got.values(), got


@pytest.mark.parametrize("profile_id", sorted(BOARDS))
def test_without_a_profile_only_what_the_profile_declares_absent_is_unknown(profile_id: str, tmp_path: Path) -> None:
    BOARDS[profile_id](tmp_path)
    got = statuses(tmp_path, EligibilityPolicy())
    unknown = {s for s, status in got.items() if status is CheckStatus.UNKNOWN}
    assert unknown <= set(load_profile(profile_id).gate.absent_signals), got
    assert CheckStatus.FAILED not in got.values(), got


# ------------------------------------------------------------------------------------- absent versus unknown


def _gateway_without(tmp_path: Path, *paths: str) -> Path:
    BOARDS["x86-ind-gateway"](tmp_path)
    for p in paths:
        target = tmp_path / p.lstrip("/")
        for child in sorted(target.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        target.rmdir()
    return tmp_path


def test_mains_online_and_no_battery_is_a_mains_board(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path)
    dev.supply("AC", "Mains", online=1)
    dev.supply("hid-mouse", "Battery", capacity=3, status="Discharging", scope="Device")  # not the system's
    assert "battery" in sig.read_absent(tmp_path)
    # mains offline and no battery: the device is not on mains, whatever powers it; nothing is absent
    (tmp_path / "sys/class/power_supply/AC/online").write_text("0\n")
    assert "battery" not in sig.read_absent(tmp_path)
    # a listed battery whose level cannot be read stays unknown
    dev.supply("BAT0", "Battery", capacity=None, status="Charging")
    snap = DeviceSignals(root=tmp_path).read()
    assert "battery" not in snap.absent and snap.power.battery_percent is None


def test_no_power_supply_node_at_all_stays_unknown(tmp_path: Path) -> None:
    # a Pi, or a board with a driverless battery HAT: only a profile can say there is no battery
    healthy_pi(tmp_path)
    got = statuses(tmp_path, EligibilityPolicy())
    assert got["external_power"] is CheckStatus.UNKNOWN and got["battery"] is CheckStatus.UNKNOWN


def test_vm_without_thermal_zones_passes_thermal(tmp_path: Path) -> None:
    root = _gateway_without(tmp_path, "/sys/class/thermal")
    for policy in (EligibilityPolicy(), load_profile("x86-ind-gateway").policy()):
        got = statuses(root, policy)
        assert got["temperature"] is CheckStatus.ABSENT and CheckStatus.FAILED not in got.values(), got
    # zones that exist but read garbage are unknown, and fail closed
    FakeDevice(root).zone(0, "acpitz", "garbage")
    assert statuses(root, EligibilityPolicy())["temperature"] is CheckStatus.UNKNOWN


def test_throttle_is_absent_off_a_pi_and_unknown_on_a_pi_without_its_firmware_node(tmp_path: Path) -> None:
    gateway = _gateway_without(tmp_path / "gw")
    assert statuses(gateway, EligibilityPolicy())["throttle"] is CheckStatus.ABSENT
    pi = tmp_path / "pi"
    BOARDS["rpi4b"](pi)
    (pi / "sys/devices/platform/soc/soc:firmware/get_throttled").unlink()
    got = statuses(pi, load_profile("rpi4b").policy())
    assert got["throttle"] is CheckStatus.UNKNOWN
    # the rpi_volt hwmon (newer kernels) still tells under-voltage
    FakeDevice(pi).write("/sys/class/hwmon/hwmon1/name", "rpi_volt\n")
    FakeDevice(pi).write("/sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n")
    snap = DeviceSignals(root=pi, metered=KnownUnmetered()).read()
    assert load_profile("rpi4b").policy().evaluate(snap).reasons == (Reason.UNDER_VOLTAGE,)


def test_power_mode_is_absent_off_a_jetson_only(tmp_path: Path) -> None:
    modes = EligibilityPolicy.from_mapping({"may_start": {"allowed_power_modes": ["MAXN"]}})
    gateway = _gateway_without(tmp_path / "gw")
    assert statuses(gateway, modes)["power_mode"] is CheckStatus.ABSENT
    jetson = tmp_path / "jetson"
    BOARDS["jetson-nano-4gb"](jetson)
    assert statuses(jetson, modes)["power_mode"] is CheckStatus.OK
    (jetson / "var/lib/nvpmodel/status").unlink()
    assert statuses(jetson, modes)["power_mode"] is CheckStatus.UNKNOWN


def test_snapshot_rejects_absent_names_that_are_not_hardware() -> None:
    with pytest.raises(ValueError, match="not hardware"):
        sig.SignalSnapshot(absent=frozenset({"network"}))


# ------------------------------------------------------------------------------------------------ cpuinfo


def test_cpuinfo_model_and_architecture() -> None:
    x86 = "processor\t: 0\nmodel name\t: Intel(R) N97\nflags\t\t: fpu lm sse\n"
    assert sig.parse_cpuinfo(x86) == ("Intel(R) N97", "x86_64")
    arm = "processor\t: 0\nCPU architecture: 8\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi\n"
    assert sig.parse_cpuinfo(arm) == ("BCM2835", "aarch64")
    assert sig.parse_cpuinfo("CPU architecture: 7\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n")[1] == "armv7l"
    assert sig.parse_cpuinfo("") == (None, None)


@given(st.text(max_size=400))
def test_cpuinfo_parser_never_raises(text: str) -> None:
    model, arch = sig.parse_cpuinfo(text)
    assert model is None or (model and model == model.strip())
    assert arch in (None, "x86_64", "aarch64", "armv7l")


# ------------------------------------------------------------------------------------------------ flclient check


def test_check_suggests_the_matching_profile_and_says_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    BOARDS["rpi5-ai-hat"](tmp_path)
    assert main(["check", "--root", str(tmp_path), "--no-dbus"]) == 3  # no profile: the Pi's power is unknown
    out = capsys.readouterr().out
    assert "profile: rpi5-ai-hat (" in out and "'flclient check --profile rpi5-ai-hat'" in out
    assert 'profile = "rpi5-ai-hat" under [gate] in device.toml' in out and "also possible: rpi5" in out
    assert "unknown external_power: no power supply says whether it is online" in out
    assert main(["check", "--root", str(tmp_path), "--no-dbus", "--json"]) == 3
    obj = json.loads(capsys.readouterr().out)
    assert obj["profiles"][0] == {"profile": "rpi5-ai-hat", "by": "recognised"}
    assert obj["device"]["model"] == "Raspberry Pi 5 Model B Rev 1.0" and obj["device"]["arch"] == "aarch64"
    assert set(obj["hints"]) == {"external_power", "battery"}
    # a profile that does not fit what is seen is pointed out
    main(["check", "--root", str(tmp_path), "--no-dbus", "--profile", "jetson-nano-4gb"])
    assert "note: this device looks like profile rpi5-ai-hat, not jetson-nano-4gb" in capsys.readouterr().out


def test_check_on_an_unrecognised_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vm = _gateway_without(tmp_path / "vm", "/sys/class/thermal")
    (vm / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu lm\n")
    main(["check", "--root", str(vm), "--no-dbus"])
    out = capsys.readouterr().out
    assert "profile: x86-ind-gateway (" in out and "is the generic x86_64 class for this device" in out
    arm = tmp_path / "arm"
    FakeDevice(arm).write("/proc/device-tree/model", "Pine64 RockPro64 v2.1\x00")
    main(["check", "--root", str(arm), "--no-dbus"])
    assert "profile: no bundled profile fits this device (model 'Pine64 RockPro64 v2.1'" in capsys.readouterr().out


def test_check_json_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    BOARDS["x86-ind-gateway"](tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`| head -1` that already exited)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "flclient", "check", "--root", str(tmp_path), "--no-dbus", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr and b"BrokenPipeError" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode == 141
