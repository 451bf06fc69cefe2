"""The device configuration (``device.toml``): frozen, keyword-only, validated, loaded with ``tomllib``.

Example::

    [superlink]
    url = "http://127.0.0.1:9093"
    heartbeat_interval_s = 30

    [device]
    state_dir = "state"                       # SQLite state, telemetry log, module cache
    data = "data.npz"                         # local records in a file (feature-module inputs, label, optional x)
    feature_modules = ["modules/device_context-1.0.0.wasm"]
    backbones = ["models/backbone.onnx"]      # optional: frozen backbones, found by the sha256 a task pins
    activation_cache_mib = 256                # backbone outputs kept under state_dir/activations across rounds
    device_class = "rpi4b"                    # optional: evaluation is reported per device class

    [data]                                    # or: the on-device example store a daemon appends to
    store = "examples.sqlite"                 # default state_dir/examples.sqlite; every key: docs/device-toml.md
    max_examples = 5000                       # a task reads at most this many (least used first)
    max_age_s = 604800                        # retention, enforced on append

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

Relative paths are resolved against the directory of the configuration file. ``[device] data`` and ``[data]``
exclude each other; with neither, the program passes its own data source (``Client(config, data=...)``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ._errors import DeviceConfigError, GateError
from ._examples import ExampleStoreConfig
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
    between ``pull-messages`` calls right after an instruction (an idle node doubles it up to the heartbeat
    interval); ``reply_grace_s`` is how long a stopping node keeps heartbeating after its last push so that the
    ServerApp can collect the reply before it deactivates. ``flower_version`` (``superlink.flower_version``) is the
    SuperLink's Flower release the device declares, within :data:`flclient.fleet.FLOWER_RELEASES` (default: the
    test environment's, :data:`flclient.fleet.FLEET_PROTOCOL_VERSION`).
    Local records come from ``data`` (an ``.npz`` file), ``example_store`` (the ``[data]`` table: the on-device
    :class:`~flclient.ExampleStore`), or, with neither, the data source the program gives ``Client``.
    """

    superlink_url: str
    state_dir: Path
    data: Path | None = None
    example_store: ExampleStoreConfig | None = None
    feature_modules: tuple[Path, ...] = ()
    backbones: tuple[Path, ...] = ()
    activation_cache_mib: int = 256
    heartbeat_interval_s: float = 30.0
    poll_interval_s: float = 1.0
    reply_grace_s: float = 10.0
    request_timeout_s: float = 30.0
    max_backoff_s: float = 20.0
    flower_version: str | None = None
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
        for name, hi in _INTERVALS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= hi):  # inf or nan would make the loop spin or hang
                raise DeviceConfigError(f"{name} must be a finite number of seconds in (0, {hi:g}], got {value}")
        if self.device_class is not None and not (
            0 < len(self.device_class) <= 64 and all(c.isalnum() or c in "._-" for c in self.device_class)
        ):
            raise DeviceConfigError(
                f"device.device_class must be 1-64 letters, digits, '.', '_' or '-', got {self.device_class!r}"
            )
        if self.tls is not None and url.scheme != "https":
            raise DeviceConfigError(f"a [tls] table needs an https superlink.url, got {self.superlink_url!r}")
        if self.flower_version is not None:
            from .fleet._client import flower_version_problem

            problem = flower_version_problem(self.flower_version)
            if problem is not None:
                raise DeviceConfigError(f"superlink.{problem}")
        if not (math.isfinite(self.reply_grace_s) and 0 <= self.reply_grace_s <= _MAX_GRACE_S):
            raise DeviceConfigError(
                f"device.reply_grace_s must be a finite number of seconds in [0, {_MAX_GRACE_S:g}], "
                f"got {self.reply_grace_s}"
            )
        if self.data is not None and self.example_store is not None:
            raise DeviceConfigError(
                "device.data and a [data] table both say where the examples are: keep one "
                "(flclient data import --config device.toml FILE.npz moves an .npz file into the store)"
            )

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
    def from_toml(cls, path: str | Path, *, check_paths: bool = True) -> DeviceConfig:
        """Load and validate a configuration file; every mistake is one :class:`~flclient.DeviceConfigError`.

        ``check_paths=False`` skips :meth:`check_paths` (for commands that read no data, e.g. enrolling the key)."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DeviceConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise DeviceConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
        except tomllib.TOMLDecodeError as exc:
            raise DeviceConfigError(f"{path} is not valid TOML: {exc}") from exc
        except RecursionError:
            raise DeviceConfigError(f"{path} nests tables or arrays too deeply to be a device configuration") from None
        config = cls.from_mapping(raw, base_dir=path.parent)
        if check_paths:
            config.check_paths()
        return config

    def check_paths(self) -> None:
        """The files the device reads exist (the data and every feature module) and ``state_dir`` is (or can
        become) a directory; called for a configuration file at load, so a typo fails at startup in one line."""
        if self.data is not None and not self.data.is_file():
            raise DeviceConfigError(f"device.data: {self.data} is not a file; fix the path or create the data")
        for module in self.feature_modules:
            if not module.is_file():
                raise DeviceConfigError(f"device.feature_modules: {module} is not a file; fix the path")
        existing = next((p for p in (self.state_dir, *self.state_dir.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise DeviceConfigError(f"device.state_dir: {existing} exists and is not a directory")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base_dir: Path) -> DeviceConfig:
        """Build from parsed TOML tables: ``[superlink]``, ``[device]`` and the optional ones (``[data]``, ...)."""
        unknown = set(raw) - set(_TABLES)
        if unknown:
            expected = ", ".join(f"[{t}]" for t in _TABLES)
            raise DeviceConfigError(f"unknown table(s) {sorted(unknown)}; expected {expected}")
        link = _table(raw, "superlink", table_keys("superlink"))
        dev = _table(raw, "device", table_keys("device"))

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
        flower_version = link.get("flower_version")
        if flower_version is not None and not isinstance(flower_version, str):
            raise DeviceConfigError(f'superlink.flower_version must be a string like "1.42.0", got {flower_version!r}')
        device_class = dev.get("device_class")
        if device_class is not None and not isinstance(device_class, str):
            raise DeviceConfigError(f"device.device_class must be a string, got {device_class!r}")
        gate_policy = None
        if "gate" in raw:
            gate = _table(raw, "gate", table_keys("gate"))
            try:
                policy = load_profile(str(gate["profile"])).policy() if "profile" in gate else EligibilityPolicy()
                if "policy" in gate:
                    policy = EligibilityPolicy.from_toml(path(gate, "policy", "gate"), base=policy)
            except (GateError, ValueError, OSError) as exc:
                raise DeviceConfigError(f"[gate]: {exc}") from exc
            gate_policy = policy
        privacy_budget = None
        if "privacy" in raw:
            priv = _table(raw, "privacy", table_keys("privacy"))
            values = {k: priv.get(k) for k in ("epsilon", "delta")}
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DeviceConfigError(f"privacy.{key} is required and must be a number, got {value!r}")
            try:
                privacy_budget = PrivacyBudget(epsilon=float(values["epsilon"]), delta=float(values["delta"]))  # type: ignore[arg-type]
            except ValueError as exc:
                raise DeviceConfigError(f"[privacy]: {exc}") from exc
        state_dir = path(dev, "state_dir", "device")
        trust = _trust_tables(raw, base_dir=base_dir, state_dir=state_dir)
        example_store = (
            ExampleStoreConfig.from_mapping(raw["data"], base_dir=base_dir, state_dir=state_dir)
            if "data" in raw
            else None
        )
        return cls(
            superlink_url=url,
            **trust,  # type: ignore[arg-type]
            privacy_budget=privacy_budget,
            gate_policy=gate_policy,
            device_class=device_class,
            flower_version=flower_version,
            state_dir=state_dir,
            data=path(dev, "data", "device") if "data" in dev else None,
            example_store=example_store,
            feature_modules=tuple(path({"m": m}, "m", "device.feature_modules") for m in modules),
            backbones=tuple(path({"b": b}, "b", "device.backbones") for b in backbones),
            activation_cache_mib=cache_mib,
            telemetry_log=path(dev, "telemetry_log", "device") if "telemetry_log" in dev else None,
            **numbers,  # type: ignore[arg-type]
        )


_INTERVALS = {"poll_interval_s": 3600.0, "request_timeout_s": 3600.0, "max_backoff_s": 3600.0}
_MAX_GRACE_S = 3600.0

_TABLES = ("superlink", "device", "data", "gate", "privacy", "artifacts", "tls", "signatures")


@dataclass(frozen=True, kw_only=True)
class ConfigKey:
    """One key of ``device.toml``: its table, what it takes, its default and what it means.

    :data:`DEVICE_TOML_KEYS` is the single source of the keys the parser accepts for ``[superlink]``,
    ``[device]``, ``[gate]`` and ``[privacy]`` and of the reference page ``docs/device-toml.md``
    (``python scripts/gen_device_config_doc.py``); a test checks that every other table's parser accepts exactly
    the keys listed here.
    """

    table: str
    key: str
    value: str
    default: str
    meaning: str


def _default(name: str) -> str:
    value = DeviceConfig.__dataclass_fields__[name].default
    return f"`{value}`"


_K = ConfigKey
DEVICE_TOML_KEYS: tuple[ConfigKey, ...] = (
    _K(table="superlink", key="url", value="an http(s) URL", default="required",
       meaning="The Flower SuperLink's Fleet API, e.g. `http://127.0.0.1:9093`; `https` is needed with `[tls]`."),
    _K(table="superlink", key="heartbeat_interval_s", value="a number in [10, 1800]",
       default=_default("heartbeat_interval_s"),
       meaning="Seconds between heartbeats; SuperLink accepts only this range."),
    _K(table="superlink", key="request_timeout_s", value="a number > 0", default=_default("request_timeout_s"),
       meaning="Timeout of one Fleet API request."),
    _K(table="superlink", key="max_backoff_s", value="a number > 0", default=_default("max_backoff_s"),
       meaning="The longest pause between reconnection attempts (the daemon reconnects forever)."),
    _K(table="superlink", key="flower_version", value="a version string", default="the tested release",
       meaning="The SuperLink's Flower release this device declares (within the supported range)."),
    _K(table="device", key="state_dir", value="a path", default="required",
       meaning="SQLite state (node identity, instructions, unsent replies), telemetry log, caches, example store."),
    _K(table="device", key="data", value="a path (.npz)", default="none",
       meaning="Local records in a file: feature-module inputs, `label`, optional `x`. Excludes `[data]`."),
    _K(table="device", key="feature_modules", value="a list of paths", default="`[]`",
       meaning="Signed WASM feature modules run over the records before training."),
    _K(table="device", key="backbones", value="a list of paths", default="`[]`",
       meaning="Frozen ONNX/TFLite backbones, found by the sha256 a task pins (else fetched through TUF)."),
    _K(table="device", key="activation_cache_mib", value="a whole number >= 0", default="`256`",
       meaning="Backbone outputs kept under `state_dir/activations` across rounds (LRU, this cap)."),
    _K(table="device", key="poll_interval_s", value="a number > 0", default=_default("poll_interval_s"),
       meaning="Pause between `pull-messages` calls when there is nothing to do."),
    _K(table="device", key="reply_grace_s", value="a number >= 0", default=_default("reply_grace_s"),
       meaning="How long a stopping node keeps heartbeating after its last push, so the reply is collected."),
    _K(table="device", key="telemetry_log", value="a path", default="`state_dir/telemetry.jsonl`",
       meaning="The JSON-lines per-round telemetry log."),
    _K(table="device", key="device_class", value="1-64 of `[A-Za-z0-9._-]`", default="none",
       meaning="Reported with evaluation results, which the ServerApp breaks down per device class."),
    _K(table="data", key="store", value="a path", default="`state_dir/examples.sqlite`",
       meaning="The on-device example store (SQLite, WAL) a daemon appends to. Excludes `[device] data`."),
    _K(table="data", key="collection", value="a collection name", default="every collection",
       meaning="The collection a task reads; without it every collection (they must have the same columns)."),
    _K(table="data", key="window_s", value="a number > 0", default="no window",
       meaning="A task reads only examples of the last `window_s` seconds."),
    _K(table="data", key="max_examples", value="a whole number > 0", default="`10000`",
       meaning="A task reads at most this many examples (bounds the memory of a round)."),
    _K(table="data", key="unused_first", value="true or false", default="`true`",
       meaning="Examples no round has used come first (newest first among equals); else the newest."),
    _K(table="data", key="max_age_s", value="a number > 0", default="no limit",
       meaning="Retention of the whole store, enforced on append: older examples go."),
    _K(table="data", key="max_rows", value="a whole number > 0", default="no limit",
       meaning="Retention: beyond this many examples the oldest go."),
    _K(table="data", key="max_bytes", value="a whole number > 0", default="no limit",
       meaning="Retention: beyond this many bytes of encoded examples the oldest go (the file is 10-30 % larger)."),
    _K(table="data", key="collections", value="tables `[data.collections.<name>]`", default="none",
       meaning="Retention of one collection: `max_age_s`, `max_rows`, `max_bytes` as above."),
    _K(table="data.collections.<name>", key="max_age_s", value="a number > 0", default="no limit",
       meaning="Examples of this collection older than this go."),
    _K(table="data.collections.<name>", key="max_rows", value="a whole number > 0", default="no limit",
       meaning="At most this many examples of this collection."),
    _K(table="data.collections.<name>", key="max_bytes", value="a whole number > 0", default="no limit",
       meaning="At most this many bytes of encoded examples of this collection."),
    _K(table="gate", key="profile", value="a profile id or .toml path", default="none",
       meaning="A device-class profile (`flclient check` names the one that matches the board)."),
    _K(table="gate", key="policy", value="a path", default="none",
       meaning="An eligibility policy file overlaid on the profile's: train only when allowed."),
    _K(table="privacy", key="epsilon", value="a number", default="required in the table",
       meaning="The device's lifetime epsilon; a DP round that would exceed it is refused."),
    _K(table="privacy", key="delta", value="a number", default="required in the table",
       meaning="The device's lifetime delta."),
    _K(table="artifacts", key="repository_url", value="an http(s) URL", default="required in the table",
       meaning="The TUF repository (`metadata/` and `targets/` on any static web server)."),
    _K(table="artifacts", key="trusted_root", value="a path", default="required in the table",
       meaning="The `root.json` shipped with the device configuration: the trust anchor."),
    _K(table="artifacts", key="cache_dir", value="a path", default="`state_dir/artifacts`",
       meaning="TUF metadata and verified artifacts."),
    _K(table="artifacts", key="cache_max_mib", value="a number > 0", default="`256`",
       meaning="The most the verified-artifact cache holds, in MiB."),
    _K(table="artifacts", key="timeout_s", value="a number > 0", default="`30.0`",
       meaning="Bounds connecting and each read."),
    _K(table="artifacts", key="deadline_s", value="a number > 0", default="`600.0`",
       meaning="Bounds a whole download."),
    _K(table="artifacts", key="tls", value="a table `[artifacts.tls]`", default="none",
       meaning="Keys as in `[tls]`, for the artifact server."),
    _K(table="tls", key="ca_bundle", value="a path (PEM)", default="the system store",
       meaning="Only these CA certificates are trusted; a mismatch fails closed. Needs an https `superlink.url`."),
    _K(table="tls", key="client_cert", value="a path (PEM)", default="none",
       meaning="Certificate chain presented for mutual TLS."),
    _K(table="tls", key="client_key", value="a path (PEM)", default="none",
       meaning="Its unencrypted private key (may be left out when it is in `client_cert`)."),
    _K(table="signatures", key="model_keys", value="a list of paths", default="`[]`",
       meaning="Public keys of the server plugin's checkpoint signer."),
    _K(table="signatures", key="require_signed_models", value="true or false", default="true when `model_keys`",
       meaning="Refuse unsigned models."),
    _K(table="signatures", key="update_key", value="a path", default="none",
       meaning="The device's Ed25519 update-signing key, created (mode 0600) on first use; updates go back signed."),
)  # fmt: skip
del _K


def table_keys(table: str) -> set[str]:
    """The keys of ``[table]`` in :data:`DEVICE_TOML_KEYS`."""
    return {k.key for k in DEVICE_TOML_KEYS if k.table == table}


def device_config_reference() -> str:
    """The ``device.toml`` reference page (Markdown), rendered from :data:`DEVICE_TOML_KEYS`."""
    lines = [
        "# device.toml reference",
        "",
        "<!-- Generated from flclient/_config.py by `python scripts/gen_device_config_doc.py`; "
        "do not edit by hand. -->",
        "",
        "`flclient run --config device.toml` and `DeviceConfig.from_toml` read these tables. Relative paths are "
        "resolved against the directory of the file; an unknown table or key, or a bad value, is one "
        "`DeviceConfigError` naming it. `[device] data` and `[data]` exclude each other; with neither, the program "
        "passes its own data source (`Client(config, data=...)`).",
    ]
    for table in dict.fromkeys(k.table for k in DEVICE_TOML_KEYS):
        lines += ["", f"## [{table}]", "", "| key | value | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{k.key}` | {k.value} | {k.default} | {k.meaning} |" for k in DEVICE_TOML_KEYS if k.table == table
        ]
    lines += ["", "## Example", "", "```toml", _EXAMPLE.strip("\n"), "```", ""]
    return "\n".join(lines)


_EXAMPLE = __doc__.split("Example::", 1)[1].split("\nRelative paths", 1)[0] if __doc__ else ""
_EXAMPLE = "\n".join(line[4:] for line in _EXAMPLE.splitlines())


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
