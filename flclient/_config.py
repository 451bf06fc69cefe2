"""The device configuration (``device.toml``): frozen, keyword-only, validated, loaded with ``tomllib``.

Example::

    [superlink]
    url = "http://127.0.0.1:9093"
    heartbeat_interval_s = 30

    [device]
    state_dir = "state"                       # SQLite state, telemetry log, module cache
    data = "data.npz"                         # local records (feature-module inputs, label, optional x)
    feature_modules = ["modules/device_context-1.0.0.wasm"]
    backbones = ["models/backbone.onnx"]      # optional: frozen backbones, found by the sha256 a task pins
    activation_cache_mib = 256                # backbone outputs kept under state_dir/activations across rounds
    device_class = "rpi4b"                    # optional: evaluation is reported per device class

    [gate]                                    # optional: without it the device trains whenever asked
    profile = "rpi4b"                         # a device-class profile (id or .toml path), and/or
    policy = "gate.toml"                      # an EligibilityPolicy file overlaid on it

    [privacy]                                 # optional: the device's lifetime DP budget (privacy ledger)
    epsilon = 8.0                             # rounds with DP noise are refused once they would exceed it
    delta = 1e-5

    [artifacts]                               # optional: feature modules and models through TUF
    repository_url = "https://artifacts.example:8443/fleet"
    trusted_root = "trust/root.json"          # the TUF trust anchor shipped with this file
    cache_max_mib = 256                       # verified-artifact cache under state_dir/artifacts

    [tls]                                     # optional: the coordinator connection (https superlink.url)
    ca_bundle = "trust/fleet-ca.pem"          # only this CA is trusted; a mismatch fails closed
    client_cert = "trust/device.crt"
    client_key = "trust/device.key"

    [signatures]                              # optional: signed models and signed updates
    model_keys = ["trust/model.pub"]          # the server plugin's checkpoint key(s); required when given

Relative paths are resolved against the directory of the configuration file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ._errors import DeviceConfigError, GateError
from ._tables import check_keys, config_path
from .gate import EligibilityPolicy, load_profile
from .update import PrivacyBudget

if TYPE_CHECKING:  # the artifacts package imports tuf: only loaded when a device configures it
    from .artifacts import ArtifactsConfig, SignatureConfig, TlsConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DeviceConfig"]


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """Everything a device node needs to take part in rounds.

    ``heartbeat_interval_s`` must be within SuperLink's accepted [10, 1800] s; ``poll_interval_s`` is the pause
    between ``pull-messages`` calls when there is nothing to do; ``reply_grace_s`` is how long a stopping node
    keeps heartbeating after its last push so that the ServerApp can collect the reply before it deactivates.
    """

    superlink_url: str
    state_dir: Path
    data: Path
    feature_modules: tuple[Path, ...] = ()
    backbones: tuple[Path, ...] = ()
    activation_cache_mib: int = 256
    heartbeat_interval_s: float = 30.0
    poll_interval_s: float = 1.0
    reply_grace_s: float = 10.0
    request_timeout_s: float = 30.0
    max_backoff_s: float = 20.0
    telemetry_log: Path | None = None
    gate_policy: EligibilityPolicy | None = None
    device_class: str | None = None
    privacy_budget: PrivacyBudget | None = None
    artifacts: ArtifactsConfig | None = None
    tls: TlsConfig | None = None
    signatures: SignatureConfig | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = urlparse(self.superlink_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise DeviceConfigError(
                f"superlink.url must be an http(s) URL like http://host:9093, got {self.superlink_url!r}"
            )
        if not 10 <= self.heartbeat_interval_s <= 1800:
            raise DeviceConfigError(
                f"superlink.heartbeat_interval_s must be within [10, 1800] s, got {self.heartbeat_interval_s}"
            )
        for name in ("poll_interval_s", "request_timeout_s", "max_backoff_s"):
            if not getattr(self, name) > 0:
                raise DeviceConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.device_class is not None and not (
            0 < len(self.device_class) <= 64 and all(c.isalnum() or c in "._-" for c in self.device_class)
        ):
            raise DeviceConfigError(
                f"device.device_class must be 1-64 letters, digits, '.', '_' or '-', got {self.device_class!r}"
            )
        if self.tls is not None and url.scheme != "https":
            raise DeviceConfigError(f"a [tls] table needs an https superlink.url, got {self.superlink_url!r}")
        if self.reply_grace_s < 0:
            raise DeviceConfigError(f"device.reply_grace_s must not be negative, got {self.reply_grace_s}")

    @property
    def state_path(self) -> Path:
        """The SQLite database."""
        return self.state_dir / "state.db"

    @property
    def privacy_ledger_path(self) -> Path:
        """The privacy ledger (SQLite): every DP participation of this device."""
        return self.state_dir / "privacy.sqlite"

    @property
    def telemetry_path(self) -> Path:
        """The JSON-lines telemetry log."""
        return self.telemetry_log or self.state_dir / "telemetry.jsonl"

    @classmethod
    def from_toml(cls, path: str | Path) -> DeviceConfig:
        """Load and validate a configuration file; every mistake is one :class:`~flclient.DeviceConfigError`."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DeviceConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise DeviceConfigError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_mapping(raw, base_dir=path.parent)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base_dir: Path) -> DeviceConfig:
        """Build from parsed TOML tables ``[superlink]`` and ``[device]``."""
        unknown = set(raw) - set(_TABLES)
        if unknown:
            expected = ", ".join(f"[{t}]" for t in _TABLES)
            raise DeviceConfigError(f"unknown table(s) {sorted(unknown)}; expected {expected}")
        link = _table(raw, "superlink", {"url", "heartbeat_interval_s", "request_timeout_s", "max_backoff_s"})
        dev = _table(
            raw,
            "device",
            {
                "state_dir",
                "data",
                "feature_modules",
                "backbones",
                "activation_cache_mib",
                "poll_interval_s",
                "reply_grace_s",
                "telemetry_log",
                "device_class",
            },
        )

        def path(table: Mapping[str, Any], key: str, where: str) -> Path:
            return config_path(table.get(key), f"{where}.{key}", base_dir)

        url = link.get("url")
        if not isinstance(url, str):
            raise DeviceConfigError('superlink.url is required (e.g. "http://127.0.0.1:9093")')
        modules = dev.get("feature_modules", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise DeviceConfigError("device.feature_modules must be a list of module file paths")
        backbones = dev.get("backbones", [])
        if not isinstance(backbones, list) or not all(isinstance(b, str) for b in backbones):
            raise DeviceConfigError("device.backbones must be a list of backbone file paths (.onnx or .tflite)")
        cache_mib = dev.get("activation_cache_mib", 256)
        if isinstance(cache_mib, bool) or not isinstance(cache_mib, int) or cache_mib < 0:
            raise DeviceConfigError(f"device.activation_cache_mib must be a whole number >= 0, got {cache_mib!r}")
        numbers: dict[str, float] = {}
        for table, where, keys in (
            (link, "superlink", ("heartbeat_interval_s", "request_timeout_s", "max_backoff_s")),
            (dev, "device", ("poll_interval_s", "reply_grace_s")),
        ):
            for key in keys:
                if key in table:
                    value = table[key]
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise DeviceConfigError(f"{where}.{key} must be a number, got {value!r}")
                    numbers[key] = float(value)
        device_class = dev.get("device_class")
        if device_class is not None and not isinstance(device_class, str):
            raise DeviceConfigError(f"device.device_class must be a string, got {device_class!r}")
        gate_policy = None
        if "gate" in raw:
            gate = _table(raw, "gate", {"profile", "policy"})
            try:
                policy = load_profile(str(gate["profile"])).policy() if "profile" in gate else EligibilityPolicy()
                if "policy" in gate:
                    policy = EligibilityPolicy.from_toml(path(gate, "policy", "gate"), base=policy)
            except (GateError, ValueError, OSError) as exc:
                raise DeviceConfigError(f"[gate]: {exc}") from exc
            gate_policy = policy
        privacy_budget = None
        if "privacy" in raw:
            priv = _table(raw, "privacy", {"epsilon", "delta"})
            values = {k: priv.get(k) for k in ("epsilon", "delta")}
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DeviceConfigError(f"privacy.{key} is required and must be a number, got {value!r}")
            try:
                privacy_budget = PrivacyBudget(epsilon=float(values["epsilon"]), delta=float(values["delta"]))  # type: ignore[arg-type]
            except ValueError as exc:
                raise DeviceConfigError(f"[privacy]: {exc}") from exc
        trust = _trust_tables(raw, base_dir=base_dir, state_dir=path(dev, "state_dir", "device"))
        return cls(
            superlink_url=url,
            **trust,  # type: ignore[arg-type]
            privacy_budget=privacy_budget,
            gate_policy=gate_policy,
            device_class=device_class,
            state_dir=path(dev, "state_dir", "device"),
            data=path(dev, "data", "device"),
            feature_modules=tuple(path({"m": m}, "m", "device.feature_modules") for m in modules),
            backbones=tuple(path({"b": b}, "b", "device.backbones") for b in backbones),
            activation_cache_mib=cache_mib,
            telemetry_log=path(dev, "telemetry_log", "device") if "telemetry_log" in dev else None,
            **numbers,  # type: ignore[arg-type]
        )


_TABLES = ("superlink", "device", "gate", "privacy", "artifacts", "tls", "signatures")


def _trust_tables(raw: Mapping[str, Any], *, base_dir: Path, state_dir: Path) -> dict[str, object]:
    """``[artifacts]`` (TUF), ``[tls]`` (the coordinator connection) and ``[signatures]`` (model keys, update key)."""
    if not any(t in raw for t in ("artifacts", "tls", "signatures")):
        return {}
    from ._errors import TlsError
    from .artifacts import ArtifactsConfig, SignatureConfig, TlsConfig

    out: dict[str, object] = {}
    for name in ("artifacts", "tls", "signatures"):
        if name in raw and not isinstance(raw[name], dict):
            raise DeviceConfigError(f"[{name}] must be a table")
    if "artifacts" in raw:
        out["artifacts"] = ArtifactsConfig.from_mapping(raw["artifacts"], base_dir=base_dir, state_dir=state_dir)
    if "tls" in raw:
        try:
            out["tls"] = TlsConfig.from_mapping(raw["tls"], base_dir=base_dir, where="tls")
        except TlsError as exc:
            raise DeviceConfigError(str(exc)) from exc
    if "signatures" in raw:
        out["signatures"] = SignatureConfig.from_mapping(raw["signatures"], base_dir=base_dir)
    return out


def _table(raw: Mapping[str, Any], name: str, keys: set[str]) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise DeviceConfigError(f"[{name}] must be a table")
    check_keys(table, name, keys)
    return table
