from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path

import pytest

from flclient import PolicyError
from flclient.gate import DeviceProfile, default_profiles_dir, list_profiles, load_profile
from flclient.gate._config import load_toml

REQUIRED = {
    "rpi3bplus",
    "rpi4b",
    "rpi5",
    "rpi-zero2w",
    "jetson-nano-4gb",
    "jetson-orin-nano-8gb",
    "jetson-agx-orin-64gb",
    "rpi5-ai-hat",
    "x86-ind-gateway",
    "android-phone",
}
FILES = list_profiles()
CLASSES_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "device-classes.csv"


def test_at_least_the_required_profiles() -> None:
    assert set(FILES) >= REQUIRED and len(FILES) >= 10


@pytest.mark.parametrize("name", sorted(FILES))
def test_profile_validates(name: str) -> None:
    p = load_profile(name)
    assert p.id == name and p.sources
    top = {f.name for f in fields(DeviceProfile)}
    for est in p.estimates:
        assert est.split(".")[0] in top, f"{name}: estimate {est!r} names no field"
    p.policy()  # the profile's gate defaults build a valid policy
    budget = p.training_budget()
    assert budget.ram_bytes == p.training.ram_budget_mib * 1024 * 1024
    assert p.training.thermal_resume_c < p.training.thermal_ceiling_c


@pytest.mark.parametrize("name", sorted(FILES))
def test_profile_cites_the_reference_table(name: str) -> None:
    if not CLASSES_CSV.exists():
        print(f"{CLASSES_CSV} is not beside this checkout: source ids not cross-checked")
        return
    with open(CLASSES_CSV, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    p = load_profile(name)
    assert f"device-classes.csv:{name}" in p.sources
    row = rows[name]
    for src in p.sources[1:]:
        assert src in row["sources"].split(";"), f"{name}: source {src} not in device-classes.csv"
    if row["estimates"]:
        assert p.estimates, f"{name}: the reference marks estimates, the profile must too"


def test_broken_profile_is_rejected(tmp_path: Path) -> None:
    good = load_toml(FILES["rpi4b"])
    good["training"]["ram_budget_mib"] = 4000
    with pytest.raises(PolicyError, match="at most half"):
        DeviceProfile.from_mapping(good, source="x")
    good = load_toml(FILES["rpi4b"])
    good["availability"]["on_power_by_hour"] = [0.5] * 23
    with pytest.raises(PolicyError, match="24 probabilities"):
        DeviceProfile.from_mapping(good, source="x")
    good = load_toml(FILES["rpi4b"])
    good["hardware"]["gpu"] = "yes"
    with pytest.raises(PolicyError, match="unknown key gpu in hardware"):
        DeviceProfile.from_mapping(good, source="x")
    wrong_name = tmp_path / "other.toml"
    wrong_name.write_bytes(FILES["rpi4b"].read_bytes())
    with pytest.raises(PolicyError, match="file name must be the profile id"):
        load_profile(wrong_name)


def test_default_dir_is_the_checkout() -> None:
    assert (default_profiles_dir() / "policies" / "default.toml").is_file()


def test_recognise_table_is_validated() -> None:
    good = load_toml(FILES["rpi4b"])
    good["recognise"]["files"] = ["dev/hailo0"]
    with pytest.raises(PolicyError, match="absolute paths"):
        DeviceProfile.from_mapping(good, source="x")
    good = load_toml(FILES["rpi4b"])
    good["recognise"]["device_tree_model"] = [" "]
    with pytest.raises(PolicyError, match="empty strings"):
        DeviceProfile.from_mapping(good, source="x")
    good = load_toml(FILES["rpi4b"])
    good["recognise"]["model"] = ["Raspberry Pi"]
    with pytest.raises(PolicyError, match="unknown key model in recognise"):
        DeviceProfile.from_mapping(good, source="x")
