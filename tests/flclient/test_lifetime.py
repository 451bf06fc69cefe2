"""Every flclient object that holds a native resource closes twice without error and refuses use after close
with the one :class:`~flclient.ResourceClosedError`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flclient
from flclient import (
    Client,
    DeviceConfig,
    ExampleStore,
    FeatureModule,
    FLClientError,
    PrivacyLedgerClosed,
    PrivacyLedgerError,
    ResourceClosedError,
)
from flclient._lifetime import Resource
from flclient._state import StateStore
from flclient.artifacts import ArtifactsConfig, HttpxFetcher, TrustedArtifacts
from flclient.fleet import FleetClient, HttpxTransport, MockTransport, NodeKey, TransportResponse
from flclient.secagg import SqliteSecAggStore
from flclient.update import PrivacyBudget, PrivacyLedger, SqliteResidualStore

from .features import wat

Use = Callable[[Any], object]


def _trusted_artifacts(tmp: Path) -> TrustedArtifacts:
    root = tmp / "root.json"
    root.write_bytes(b"{}")  # read at construction, parsed only by refresh()
    config = ArtifactsConfig(repository_url="http://127.0.0.1:9/fleet", trusted_root=root, cache_dir=tmp / "cache")
    return TrustedArtifacts(config)


def _client(tmp: Path) -> Client:
    raw = {"superlink": {"url": "http://127.0.0.1:9"}, "device": {"state_dir": "state", "data": "data.npz"}}
    config = DeviceConfig.from_mapping(raw, base_dir=tmp)
    return Client(config, transport=MockTransport(lambda *a: TransportResponse(500)), log=lambda rec: None)


def _silent_fleet_client() -> FleetClient:
    return FleetClient(MockTransport(lambda *a: TransportResponse(500)), NodeKey.generate())


# (what it is, how to make one, one use that needs the resource)
CASES: list[tuple[type[Resource], Callable[[Path], Any], Use]] = [
    (FeatureModule, lambda tmp: FeatureModule.from_bytes(wat.doubler()), lambda fm: fm.extract({"x": [1.0]})),
    (StateStore, lambda tmp: StateStore(tmp / "state.db"), lambda s: s.get_meta("node_id")),
    (
        PrivacyLedger,
        lambda tmp: PrivacyLedger(tmp / "ledger.db", budget=PrivacyBudget(epsilon=8.0, delta=1e-5)),
        lambda ledger: ledger.entries(),
    ),
    (SqliteResidualStore, lambda tmp: SqliteResidualStore(tmp / "residuals.db"), lambda s: s.load("w")),
    (SqliteSecAggStore, lambda tmp: SqliteSecAggStore(tmp / "secagg.db"), lambda s: s.load(b"round")),
    (HttpxTransport, lambda tmp: HttpxTransport("http://127.0.0.1:9"), lambda t: t.post("/x", b"", {}, 1.0)),
    (FleetClient, lambda tmp: _silent_fleet_client(), lambda c: c.register()),
    (HttpxFetcher, lambda tmp: HttpxFetcher(), lambda f: f.fetch("http://127.0.0.1:9/x")),
    (TrustedArtifacts, _trusted_artifacts, lambda a: a.refresh()),
    (Client, _client, lambda c: c.run_once()),
    (ExampleStore, lambda tmp: ExampleStore(tmp / "examples.sqlite"), lambda s: s.snapshot()),
]


@pytest.mark.parametrize(("kind", "make", "use"), CASES, ids=[c[0].__name__ for c in CASES])
def test_closes_twice_and_refuses_use_after_close(
    kind: type[Resource], make: Callable[[Path], Any], use: Use, tmp_path: Path
) -> None:
    resource = make(tmp_path)
    assert isinstance(resource, kind) and not resource.closed
    resource.close()
    resource.close()  # idempotent
    assert resource.closed
    with pytest.raises(ResourceClosedError, match=f"{kind.__name__}.* is closed: it was used after close"):
        use(resource)


@pytest.mark.parametrize(("kind", "make", "use"), CASES, ids=[c[0].__name__ for c in CASES])
def test_with_block_closes(kind: type[Resource], make: Callable[[Path], Any], use: Use, tmp_path: Path) -> None:
    with make(tmp_path) as resource:
        assert not resource.closed
    assert resource.closed
    with pytest.raises(ResourceClosedError):
        use(resource)


def test_every_resource_class_is_covered() -> None:
    skip = ("flclient.server", "flclient.protocol", "flclient.__main__")  # server side (flwr); the CLI's exit
    for info in pkgutil.walk_packages(flclient.__path__, "flclient."):
        if not info.name.startswith(skip):
            importlib.import_module(info.name)

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set()
        children: list[type] = cls.__subclasses__()
        for direct in children:
            found |= {direct, *subclasses(direct)}
        return found

    leaves = {c for c in subclasses(Resource) if not subclasses(c)}  # SqliteFile is a base, not a store
    assert leaves == {kind for kind, _, _ in CASES}


def test_the_closed_error_is_in_the_family_and_a_value_error() -> None:
    assert issubclass(ResourceClosedError, FLClientError) and issubclass(ResourceClosedError, ValueError)
    # the ledger's closed error is still the PrivacyLedgerError it promised before
    assert issubclass(PrivacyLedgerClosed, PrivacyLedgerError) and issubclass(PrivacyLedgerClosed, ResourceClosedError)


def test_fleet_client_closes_the_transport_it_owns() -> None:
    transport = HttpxTransport("http://127.0.0.1:9")
    FleetClient(transport, NodeKey.generate()).close()
    assert transport.closed


def test_the_privacy_ledger_raises_its_own_closed_error(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.db", budget=PrivacyBudget(epsilon=8.0, delta=1e-5))
    ledger.close()
    with pytest.raises(PrivacyLedgerClosed, match="PrivacyLedger .*ledger.db is closed"):
        ledger.charge(round_id="r", mechanism="gaussian-local", noise_multiplier=1.0, clip_norm=1.0)
