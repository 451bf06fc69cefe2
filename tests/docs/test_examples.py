"""The worked example of each audience's guide (docs/examples/*.py) runs and does what the guide says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from flclient import DeviceConfig, ExampleStore, FeatureModule
from flclient._signing import load_public_key

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
# Reused between runs (git-ignored): the helper crate is compiled once, not per test run.
CARGO_TARGET = ROOT / "wasm" / "rust-features" / "target" / "docs-examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.py")} == {"gateway", "feature_author", "operator"}


def test_gateway_example_appends_to_the_store_of_its_device_toml(tmp_path: Path) -> None:
    rows = _example("gateway").main(tmp_path)
    assert rows == {"vibration": 1000}
    config = DeviceConfig.from_toml(tmp_path / "device.toml")
    assert config.example_store is not None
    assert config.example_store.store == tmp_path / "state" / "examples.sqlite"
    with ExampleStore.from_config(config.example_store) as store:
        data = store.load()
    assert len(data.labels) == 1000 and set(data.columns) == {"samples", "sample_rate_hz"}


def test_operator_example_writes_a_flower_app_with_its_run_config(tmp_path: Path) -> None:
    example = _example("operator")
    config = example.main(tmp_path)
    assert (config.rounds, config.target, config.over_selection) == (5, 8, 0.25)
    pyproject = (tmp_path / "app" / "pyproject.toml").read_text()
    assert "over-selection = 0.25" in pyproject and "flclient_app" in pyproject


@pytest.mark.slow
def test_feature_author_example_builds_tests_and_signs_a_new_crate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARGO_TARGET_DIR", str(CARGO_TARGET))
    module_path = _example("feature_author").main(tmp_path)
    key = load_public_key((tmp_path / "publisher.pub").read_bytes())
    with FeatureModule.load(module_path, trusted_keys=[key]) as module:
        assert module.manifest.name == "my_feature"
