"""TLS for the device's connections: a pinned CA bundle and an optional client certificate, failing closed.

One :class:`TlsConfig` builds the ``ssl.SSLContext`` that both the artifact fetcher and the coordinator
transport hand to httpx (``httpx.Client(verify=context)``). With a CA bundle configured, only that bundle is
trusted (the system store is not loaded), hostnames are checked and TLS 1.2 is the floor.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import TlsConfigError, TlsVerificationFailed
from .._tables import check_keys, config_path

__all__ = ["TlsConfig", "tls_failure"]


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """How to verify the server and (optionally) present a client certificate.

    ``ca_bundle``: PEM file of the CA certificates to trust, and only those (``None``: the system store).
    ``client_cert`` / ``client_key``: PEM certificate chain and its unencrypted private key for mutual TLS
    (``client_key`` may be left out when the key is in ``client_cert``).

    Example::

        tls = TlsConfig(ca_bundle=Path("fleet-ca.pem"), client_cert=Path("device.crt"), client_key=Path("device.key"))
        client = httpx.Client(base_url="https://coordinator:9093", verify=tls.ssl_context())
    """

    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca_bundle", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                raise TypeError(f"TlsConfig.{name} must be a pathlib.Path or None, got {type(value).__name__}")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("TlsConfig.client_key needs client_cert: a key alone cannot authenticate the device")

    @property
    def pinned(self) -> bool:
        """Whether only the configured CA bundle is trusted."""
        return self.ca_bundle is not None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: the pinned CA (or the system store), hostname checks, TLS >= 1.2, client cert.

        Raises :class:`~flclient.TlsConfigError` when a file cannot be read or is not what it should be.
        """
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_bundle) if self.ca_bundle else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load the CA bundle {self.ca_bundle}: {exc}") from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if self.client_cert is not None:
            try:
                ctx.load_cert_chain(str(self.client_cert), str(self.client_key) if self.client_key else None)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(f"cannot load the client certificate {self.client_cert}: {exc}") from exc
        return ctx

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base_dir: Path, where: str = "tls") -> TlsConfig:
        """Build from a TOML table with keys ``ca_bundle``, ``client_cert``, ``client_key`` (paths, relative
        to ``base_dir``); a mistake is one :class:`~flclient.TlsConfigError` sentence naming the key."""
        known = {"ca_bundle", "client_cert", "client_key"}
        check_keys(raw, where, known, TlsConfigError)
        paths = {key: config_path(raw[key], f"{where}.{key}", base_dir, TlsConfigError) for key in known & set(raw)}
        try:
            return cls(**paths)
        except ValueError as exc:
            raise TlsConfigError(f"[{where}]: {exc}") from exc


def tls_failure(exc: BaseException, *, host: str) -> TlsVerificationFailed | None:
    """The :class:`~flclient.TlsVerificationFailed` hidden in an exception chain (httpx wraps ssl's errors).

    Transports call it on a connection error so that a certificate mismatch is reported as what it is
    rather than as an unreachable server; ``None`` when the failure was not certificate verification.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            detail = cur.verify_message or cur.reason or cur
            return TlsVerificationFailed(f"{host}: certificate verify failed ({detail}); the connection was not used")
        if isinstance(cur, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return TlsVerificationFailed(f"{host}: certificate verify failed ({cur}); the connection was not used")
        cur = cur.__cause__ or cur.__context__
    return None
