"""featurec new: the crate it writes refers to the helper crate in a way that survives moving it."""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import pytest

from featurec import CrateError, build_module, copy_reference_crates
from featurec._crates import crates_dir, helper_crate_dir
from featurec._scaffold import new_crate
from flclient.gate._config import load_toml

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_crates_are_the_repository_workspace_not_a_copy() -> None:
    # one source of truth: in the checkout the package data resolves to wasm/rust-features itself
    assert crates_dir().resolve() == (ROOT / "wasm" / "rust-features").resolve()
    assert helper_crate_dir().resolve() == (ROOT / "wasm" / "rust-features" / "flfeature").resolve()


def test_every_workspace_source_is_declared_as_package_data() -> None:
    # the wheel holds exactly what pyproject's package-data patterns name: a new source file must be listed there
    patterns = load_toml(ROOT / "pyproject.toml")["tool"]["setuptools"]["package-data"]["featurec"]
    base = importlib.resources.files("featurec")
    assert isinstance(base, Path)
    declared = {p.relative_to(base) for pattern in patterns for p in base.glob(pattern)}
    workspace = ROOT / "wasm" / "rust-features"
    sources = {
        Path("crates") / p.relative_to(workspace)
        for p in workspace.rglob("*")
        if p.is_file() and "target" not in p.relative_to(workspace).parts
    }
    assert sources, "the workspace has no sources?"
    assert sources <= declared, f"not shipped in the wheel: {sorted(map(str, sources - declared))}"
    assert not any("target" in p.parts for p in declared)


def test_new_crate_vendors_the_helper_and_builds_after_moving(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    crate = new_crate("moved_feature", tmp_path / "a")
    cargo = (crate / "Cargo.toml").read_text()
    assert 'flfeature = { path = "vendor/flfeature" }' in cargo
    assert (crate / "vendor" / "flfeature" / "src" / "lib.rs").read_text() == (
        helper_crate_dir() / "src" / "lib.rs"
    ).read_text()
    assert "{{" not in cargo and "{{" not in (crate / "src" / "lib.rs").read_text()
    moved = tmp_path / "elsewhere" / "deeper" / "moved_feature"
    moved.parent.mkdir(parents=True)
    shutil.move(str(crate), moved)
    built = build_module(moved, tmp_path / "dist")
    assert built.manifest.name == "moved_feature"


def test_new_crate_beside_the_helper_refers_to_its_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = copy_reference_crates(tmp_path / "ws")
    assert (workspace / "device_context" / "golden" / "vectors.json").is_file()
    assert not (workspace / "target").exists()
    monkeypatch.setenv("FEATUREC_FLFEATURE_PATH", str(workspace / "flfeature"))
    crate = new_crate("sibling", workspace)
    assert 'flfeature = { path = "../flfeature" }' in (crate / "Cargo.toml").read_text()
    assert not (crate / "vendor").exists()


def test_a_wrong_helper_override_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREC_FLFEATURE_PATH", str(tmp_path))
    with pytest.raises(CrateError, match="FEATUREC_FLFEATURE_PATH=.* has no Cargo.toml"):
        new_crate("x", tmp_path)
    assert not (tmp_path / "x").exists()
