from __future__ import annotations

from typing import Any

import pytest

from flclient.gate import ChainedMetered, InterfaceKindMetered, Metered, NetworkKind, NetworkManagerMetered

jeepney = pytest.importorskip("jeepney", reason="jeepney (the optional D-Bus library) is not installed")


class FakeNetworkManager:
    """A D-Bus connection double that answers like NetworkManager, with real jeepney messages."""

    def __init__(self, metered: dict[str, int]) -> None:
        self.metered = metered
        self.paths = {f"/org/freedesktop/NetworkManager/Devices/{i}": n for i, n in enumerate(metered)}
        self.calls = 0
        self.closed = False

    def send_and_get_reply(self, message: Any, *, timeout: float | None = None) -> Any:
        self.calls += 1
        fields = message.header.fields
        member = fields[jeepney.HeaderFields.member]
        if member == "GetDeviceByIpIface":
            (iface,) = message.body
            for path, name in self.paths.items():
                if name == iface:
                    return jeepney.new_method_return(message, "o", (path,))
            return jeepney.new_error(message, "org.freedesktop.NetworkManager.UnknownDevice")
        if member == "Get":
            interface, prop = message.body
            assert (interface, prop) == ("org.freedesktop.NetworkManager.Device", "Metered")
            name = self.paths[fields[jeepney.HeaderFields.path]]
            return jeepney.new_method_return(message, "v", (("u", self.metered[name]),))
        raise AssertionError(f"unexpected call {member}")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, None), (1, Metered.YES), (2, Metered.NO), (3, Metered.GUESS_YES), (4, Metered.GUESS_NO), (9, None)],
)
def test_networkmanager_values(value: int, expected: Metered | None) -> None:
    nm = NetworkManagerMetered(connect=lambda: FakeNetworkManager({"wlan0": value}))
    assert nm.metered("wlan0", NetworkKind.WIFI) == expected


def test_unknown_device_and_reconnect() -> None:
    conns: list[FakeNetworkManager] = []

    def connect() -> FakeNetworkManager:
        conns.append(FakeNetworkManager({"eth0": 2}))
        return conns[-1]

    nm = NetworkManagerMetered(connect=connect)
    assert nm.metered("wlan9", None) is None  # error reply: unknown, connection dropped
    assert conns[0].closed
    assert nm.metered("eth0", None) is Metered.NO
    assert nm.metered("eth0", None) is Metered.NO
    assert len(conns) == 2  # reconnected once, then kept


def test_bus_unreachable_is_unknown() -> None:
    def connect() -> Any:
        raise ConnectionRefusedError("no system bus")

    assert NetworkManagerMetered(connect=connect).metered("eth0", None) is None


def test_fallback_and_chain() -> None:
    fb = InterfaceKindMetered()
    assert fb.metered("wwan0", NetworkKind.CELLULAR) is Metered.GUESS_YES
    assert fb.metered("eth0", NetworkKind.ETHERNET) is Metered.GUESS_NO
    assert fb.metered("wlan0", NetworkKind.WIFI) is None
    nm = NetworkManagerMetered(connect=lambda: FakeNetworkManager({"wlan0": 1}))
    chain = ChainedMetered(nm, fb)
    assert chain.metered("wlan0", NetworkKind.WIFI) is Metered.YES
    assert chain.metered("eth1", NetworkKind.ETHERNET) is Metered.GUESS_NO  # NM does not know it
    with pytest.raises(ValueError):
        ChainedMetered()
