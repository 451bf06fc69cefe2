"""Is the network metered? NetworkManager over D-Bus (``jeepney``, optional) with a conservative fallback.

NetworkManager's ``Device.Metered`` property is an NMMetered value: 0 unknown, 1 yes, 2 no, 3 guess-yes, 4 guess-no.
Without NetworkManager the only honest answer comes from the interface kind: cellular is metered, Ethernet is
probably not, and Wi-Fi cannot be told from a phone hotspot, so it stays unknown (the policy fails closed on it).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import GateError
from ._signals import Metered, MeteredSource, NetworkKind

__all__ = ["ChainedMetered", "DBusConnection", "InterfaceKindMetered", "NetworkManagerMetered"]

_NM_BUS = "org.freedesktop.NetworkManager"
_NM_PATH = "/org/freedesktop/NetworkManager"
_NM_DEVICE = "org.freedesktop.NetworkManager.Device"
_NM_METERED = {1: Metered.YES, 2: Metered.NO, 3: Metered.GUESS_YES, 4: Metered.GUESS_NO}


class DBusConnection(Protocol):
    """The two methods of a ``jeepney.io.blocking.DBusConnection`` that this module uses."""

    def send_and_get_reply(self, message: Any, *, timeout: float | None = None) -> Any:
        """Send a method call and return its reply message."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def _jeepney() -> Any:
    try:
        return importlib.import_module("jeepney")
    except ImportError as exc:
        raise GateError("NetworkManager metered detection needs jeepney: pip install 'flclient[dbus]'") from exc


def _open_system_bus() -> DBusConnection:
    blocking = importlib.import_module("jeepney.io.blocking")
    conn: DBusConnection = blocking.open_dbus_connection(bus="SYSTEM")
    return conn


class NetworkManagerMetered:
    """Ask NetworkManager over the system D-Bus whether an interface is metered.

    The connection is opened on first use and kept (a check must stay cheap); ``connect`` opens it, so tests and
    other buses can pass their own. Any D-Bus failure answers None (unknown) and drops the connection so the next
    call reconnects. Needs the optional ``jeepney`` package; without it, construction raises :class:`GateError`.
    """

    def __init__(self, *, connect: Callable[[], DBusConnection] | None = None, timeout_s: float = 0.5) -> None:
        self._jeepney = _jeepney()
        self._connect = connect if connect is not None else _open_system_bus
        self._timeout_s = timeout_s
        self._conn: DBusConnection | None = None

    def _call(self, message: Any) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        reply = self._conn.send_and_get_reply(message, timeout=self._timeout_s)
        if reply.header.message_type != self._jeepney.MessageType.method_return:
            raise self._jeepney.DBusErrorResponse(reply)
        return reply.body

    def metered(self, interface: str, kind: NetworkKind | None) -> Metered | None:
        """NetworkManager's metered state of ``interface``; None when NM is absent, unreachable or says unknown."""
        j = self._jeepney
        try:
            nm = j.DBusAddress(_NM_PATH, bus_name=_NM_BUS, interface=_NM_BUS)
            (device_path,) = self._call(j.new_method_call(nm, "GetDeviceByIpIface", "s", (interface,)))
            device = j.DBusAddress(device_path, bus_name=_NM_BUS, interface=_NM_DEVICE)
            ((signature, value),) = self._call(j.Properties(device).get("Metered"))
        except Exception:  # any bus, auth or protocol failure: unknown, and reconnect next time
            self.close()
            return None
        if signature != "u" or not isinstance(value, int):
            return None
        return _NM_METERED.get(value)

    def close(self) -> None:
        """Close the D-Bus connection if one is open (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken socket must not raise out of a gate check
                conn.close()


class InterfaceKindMetered:
    """The conservative fallback: cellular -> guess-yes, Ethernet -> guess-no, anything else -> unknown."""

    def metered(self, interface: str, kind: NetworkKind | None) -> Metered | None:
        """Guess from the interface kind only."""
        if kind is NetworkKind.CELLULAR:
            return Metered.GUESS_YES
        if kind is NetworkKind.ETHERNET:
            return Metered.GUESS_NO
        return None


class ChainedMetered:
    """Ask each source in order; the first that knows answers."""

    def __init__(self, *sources: MeteredSource) -> None:
        if not sources:
            raise ValueError("ChainedMetered needs at least one source")
        self._sources = sources

    def metered(self, interface: str, kind: NetworkKind | None) -> Metered | None:
        """The first known answer, or None."""
        for source in self._sources:
            answer = source.metered(interface, kind)
            if answer is not None:
                return answer
        return None
