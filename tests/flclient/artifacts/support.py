"""Test support: a static HTTP(S) server on loopback with per-path overrides (the attacker), keys and repositories."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flclient import _signing
from flclient.artifacts import ArtifactRepository, RepositoryPolicy, key_from_pem, signer_from_pem

# An override answers a GET for a path: returns (status, body chunks) or None to serve the file as is.
Override = Callable[[str], "tuple[int, Iterator[bytes]] | None"]

# Real "now", so that metadata written by the CLI (which uses the real clock) agrees with the test clock.
T0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class StaticServer:
    """``http.server`` serving ``root`` on 127.0.0.1 in a thread; ``overrides`` replace answers for paths."""

    def __init__(self, root: Path, *, tls: ssl.SSLContext | None = None) -> None:
        self.root = root
        self.overrides: dict[str, Callable[[], tuple[int, Iterator[bytes]]]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].lstrip("/")
                server.requests.append(path)
                if path in server.overrides:
                    status, chunks = server.overrides[path]()
                    self.send_response(status)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        for chunk in chunks:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                    return
                file = (server.root / path).resolve()
                if not file.is_file() or server.root.resolve() not in file.parents:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def endless(chunk: bytes = b"x" * 65536) -> Iterator[bytes]:
    while True:
        yield chunk


@dataclass
class Keys:
    """PEM key files for every role, written with the same code path as ``featurec keygen``."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    def make(self, name: str) -> Path:
        private_pem, public_pem = _signing.generate_key_pair()
        (self.directory / f"{name}.key").write_bytes(private_pem)
        (self.directory / f"{name}.pub").write_bytes(public_pem)
        self.files[name] = self.directory / f"{name}.key"
        return self.files[name]

    def signer(self, name: str):  # type: ignore[no-untyped-def]
        return signer_from_pem(self.files[name].read_bytes())

    def key(self, name: str):  # type: ignore[no-untyped-def]
        return key_from_pem(self.files[name].read_bytes())


class Clock:
    """A settable UTC clock for the publisher and the device."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def make_keys(directory: Path) -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    keys = Keys(directory)
    for name in ("root", "targets", "online", "author", "model"):
        keys.make(name)
    return keys


def make_repository(directory: Path, keys: Keys, clock: Clock, *, policy: RepositoryPolicy | None = None):  # type: ignore[no-untyped-def]
    return ArtifactRepository.create(
        directory,
        keys={
            "root": [keys.key("root")],
            "targets": [keys.key("targets")],
            "snapshot": [keys.key("online")],
            "timestamp": [keys.key("online")],
            "modules": [keys.key("author")],
            "checkpoints": [keys.key("model")],
        },
        signers=[keys.signer(n) for n in ("root", "targets", "online", "author", "model")],
        policy=policy,
        clock=clock,
    )


@dataclass
class Pki:
    """A CA made in the test, a server certificate for 127.0.0.1/localhost and a client certificate."""

    directory: Path
    ca_pem: Path
    server_context: ssl.SSLContext
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, *, require_client_cert: bool = True) -> Pki:
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("flclient test CA", ca_key, "flclient test CA", ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        "localhost",
        srv_key,
        "flclient test CA",
        ca_key,
        ca=False,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("device-1", cli_key, "flclient test CA", ca_key, ca=False)

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM) + pem_key(srv_key))
    (directory / "client.crt").write_bytes(cli.public_bytes(serialization.Encoding.PEM))
    (directory / "client.key").write_bytes(pem_key(cli_key))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(directory / "server.pem"))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(ca_pem))
    return Pki(directory, ca_pem, ctx, directory / "client.crt", directory / "client.key")
