"""device_profiles/ ships as package data of flclient.gate (a symlink in the checkout, copied into the wheel)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from flclient.gate import default_profiles_dir, list_profiles, load_profile

ROOT = Path(__file__).resolve().parents[3]


def test_profiles_are_found_as_package_data() -> None:
    bundled = importlib.resources.files("flclient.gate") / "device_profiles"
    assert (bundled / "profiles").is_dir() and (bundled / "policies" / "default.toml").is_file()
    assert default_profiles_dir() == bundled
    assert sorted(list_profiles()) == sorted(p.stem for p in (ROOT / "device_profiles" / "profiles").glob("*.toml"))
    assert load_profile("rpi4b").id == "rpi4b"


def test_package_data_is_the_repository_directory_not_a_copy() -> None:
    # one source of truth: the checkout's package data resolves to device_profiles/ itself
    bundled = importlib.resources.files("flclient.gate") / "device_profiles"
    assert isinstance(bundled, Path) and bundled.resolve() == (ROOT / "device_profiles").resolve()


def test_shipped_files_point_at_nothing_outside_the_package() -> None:
    # comments in the installed policy and profiles must not send a reader to a file the wheel does not carry
    bundled = importlib.resources.files("flclient.gate") / "device_profiles"
    assert isinstance(bundled, Path)
    for path in [*bundled.glob("policies/*.toml"), *bundled.glob("profiles/*.toml"), bundled / "README.md"]:
        text = path.read_text()
        assert "../" not in text and "shared/reference" not in text, path.name
