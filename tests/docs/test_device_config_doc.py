"""The device.toml reference: generated from the key table the parser reads, committed up to date, complete."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from flclient import DeviceConfigError
from flclient._config import DEVICE_TOML_KEYS, DeviceConfig, device_config_reference, table_keys
from flclient._examples import ExampleStoreConfig
from flclient.artifacts import ArtifactsConfig, SignatureConfig, TlsConfig, TlsConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"superlink": {"url": "http://127.0.0.1:9093"}, "device": {"state_dir": "state"}}


def test_committed_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "device-toml.md").read_text(encoding="utf-8")
    assert committed == device_config_reference(), (
        "docs/device-toml.md is stale: regenerate it with `python scripts/gen_device_config_doc.py`"
    )


def _accepted(parse: Callable[[], object], error: type[Exception] = DeviceConfigError) -> set[str]:
    """The keys a parser says it knows, from its unknown-key error."""
    with pytest.raises(error) as info:
        parse()
    match = re.search(r"known: (\[.*?\])", str(info.value))
    assert match, f"no list of known keys in {info.value}"
    return set(ast.literal_eval(match.group(1)))


def _device(table: str) -> Callable[[], object]:
    raw = {**BASE, table: {**BASE.get(table, {}), "not_a_key": 1}}
    return lambda: DeviceConfig.from_mapping(raw, base_dir=Path("."))


@pytest.mark.parametrize(
    ("table", "parse", "error"),
    [
        ("superlink", _device("superlink"), DeviceConfigError),
        ("device", _device("device"), DeviceConfigError),
        ("gate", _device("gate"), DeviceConfigError),
        ("privacy", _device("privacy"), DeviceConfigError),
        (
            "data",
            lambda: ExampleStoreConfig.from_mapping({"not_a_key": 1}, base_dir=Path("."), state_dir=Path(".")),
            DeviceConfigError,
        ),
        (
            "data.collections.<name>",
            lambda: ExampleStoreConfig.from_mapping(
                {"collections": {"c": {"not_a_key": 1}}}, base_dir=Path("."), state_dir=Path(".")
            ),
            DeviceConfigError,
        ),
        (
            "artifacts",
            lambda: ArtifactsConfig.from_mapping({"not_a_key": 1}, base_dir=Path("."), state_dir=Path(".")),
            DeviceConfigError,
        ),
        ("tls", lambda: TlsConfig.from_mapping({"not_a_key": 1}, base_dir=Path(".")), TlsConfigError),
        ("signatures", lambda: SignatureConfig.from_mapping({"not_a_key": 1}, base_dir=Path(".")), DeviceConfigError),
    ],
)
def test_every_table_documents_exactly_the_keys_its_parser_accepts(
    table: str, parse: Callable[[], object], error: type[Exception]
) -> None:
    accepted = _accepted(parse, error)
    documented = table_keys(table)
    assert documented == accepted, (
        f"[{table}]: parser accepts {sorted(accepted)}, DEVICE_TOML_KEYS documents {sorted(documented)}; "
        "update DEVICE_TOML_KEYS in flclient/_config.py and run `python scripts/gen_device_config_doc.py`"
    )


def test_documented_defaults_come_from_the_dataclass() -> None:
    rows = {(k.table, k.key): k for k in DEVICE_TOML_KEYS}
    assert rows[("superlink", "heartbeat_interval_s")].default == f"`{DeviceConfig(**_minimal()).heartbeat_interval_s}`"
    assert rows[("device", "reply_grace_s")].default == f"`{DeviceConfig(**_minimal()).reply_grace_s}`"


def test_every_key_has_a_meaning_and_the_page_names_it() -> None:
    page = device_config_reference()
    for k in DEVICE_TOML_KEYS:
        assert k.meaning.strip() and k.value.strip() and k.default.strip(), k
        assert f"| `{k.key}` | {k.value} |" in page


def _minimal() -> dict[str, object]:
    return {"superlink_url": "http://127.0.0.1:9093", "state_dir": Path("state")}
