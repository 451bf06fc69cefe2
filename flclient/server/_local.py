"""A local Flower federation on loopback: a SuperLink subprocess and runs of the flclient ServerApp.

Everything lives in a private directory (``FLWR_HOME``, the SuperLink database, the Flower app), nothing is
downloaded (runtime dependency installation is off: the app's dependencies are this environment's), and every
process started is stopped again by :meth:`LocalSuperLink.close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["LocalSuperLink", "SuperLinkTls", "free_port", "write_flower_app"]

_APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flclient-fleet-app"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "flclient"

[tool.flwr.app.components]
serverapp = "flclient_app:app"
clientapp = "flclient_app:clientapp"

[tool.flwr.app.config]
{config}
"""

_APP_MODULE = """\
# The flclient ServerApp; devices are flclient nodes speaking the Fleet API, so the ClientApp is unused.
from flclient.server import app as _server_app

app = _server_app.app
clientapp = None
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_flower_app(directory: Path, run_config: Mapping[str, object]) -> Path:
    """Write a Flower app (pyproject + module) whose ServerApp is :data:`flclient.server.app.app`."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    # Flower accepts run-config overrides only for keys the app declares: declare `resume` (off) so that
    # LocalSuperLink.run_to_completion can resume a run of any app written here.
    for key, value in {"resume": False, **run_config}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    (directory / "pyproject.toml").write_text(_APP_PYPROJECT.format(config="\n".join(lines)))
    (directory / "flclient_app.py").write_text(_APP_MODULE)
    return directory


@dataclass(frozen=True, kw_only=True)
class SuperLinkTls:
    """The SuperLink's TLS files: its certificate (chain), its private key and the CA that issued it."""

    certfile: Path
    keyfile: Path
    ca_certfile: Path


class LocalSuperLink:
    """``flower-superlink --insecure`` on a free loopback port, with its own ``FLWR_HOME``.

    With ``tls`` the SuperLink serves https (and the ``flwr`` commands trust ``tls.ca_certfile``); with
    ``supernode_auth`` as well it runs with ``--enable-supernode-auth``: only keys registered with
    :meth:`register_node_key` (``flwr supernode register``) may connect. Flower requires TLS for that.

    Example::

        with LocalSuperLink(tmp) as link:
            run_id = link.submit(app_dir, {"num-server-rounds": 3})
            link.wait(run_id, timeout_s=120)
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        database: Path | None = None,
        bin_dir: Path | None = None,
        tls: SuperLinkTls | None = None,
        supernode_auth: bool = False,
    ) -> None:
        if supernode_auth and tls is None:
            raise ValueError("supernode_auth needs tls: flower-superlink --enable-supernode-auth requires TLS")
        self.home = Path(home)
        self.port = port or free_port()
        self.database = database
        self.bin_dir = bin_dir or Path(sys.executable).parent
        self.tls = tls
        self.supernode_auth = supernode_auth
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.home.mkdir(parents=True, exist_ok=True)
        transport = "insecure = true" if tls is None else f"root-certificates = {json.dumps(str(tls.ca_certfile))}"
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "local-http"\n\n'
            f'[superlink.local-http]\naddress = "127.0.0.1:{self.port}"\n{transport}\n'
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "superlink.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment every Flower command here runs in."""
        env = dict(os.environ)
        env.update(
            FLWR_HOME=str(self.home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the SuperLink and wait until ``/health`` answers 200."""
        if self.tls is None:
            security = ["--insecure"]
        else:
            security = [
                "--ssl-certfile",
                str(self.tls.certfile),
                "--ssl-keyfile",
                str(self.tls.keyfile),
                "--ssl-ca-certfile",
                str(self.tls.ca_certfile),
            ]
        if self.supernode_auth:
            security.append("--enable-supernode-auth")
        cmd = [
            str(self.bin_dir / "flower-superlink"),
            *security,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
        ]
        if self.database is not None:
            cmd += ["--database", str(self.database)]
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
        )
        log.close()
        context = None if self.tls is None else ssl.create_default_context(cafile=str(self.tls.ca_certfile))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with {self._proc.returncode}; see {self.log_path}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"flower-superlink did not become healthy in {timeout_s} s; see {self.log_path}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the SuperLink (and its process group: superexec, serverapp); SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the SuperLink's whole process group at once (a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        """Stop everything; idempotent."""
        self.stop()

    def __enter__(self) -> LocalSuperLink:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _flwr(self, *args: str, timeout_s: float = 60.0) -> str:
        r = subprocess.run(
            [str(self.bin_dir / "flwr"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"flwr {' '.join(args[:1])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}"
            )
        return r.stdout

    def register_node_key(self, public_key: Path) -> None:
        """Let a node's key in (``flwr supernode register``; the file is OpenSSH format, see ``flclient node-key``)."""
        self._flwr("supernode", "register", str(public_key), "local-http")

    def submit(self, app_dir: Path, run_config: Mapping[str, object] | None = None) -> int:
        """Submit a run of the Flower app in ``app_dir``; returns the run id."""
        args = ["run", str(app_dir), "local-http", "--format", "json"]
        if run_config:
            args += ["--run-config", " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())]
        out = self._flwr(*args)
        match = re.search(r'"run-id"\s*:\s*"?(\d+)', out) or re.search(r"run[_ -]id\D+(\d+)", out, re.IGNORECASE)
        if not match:
            raise RuntimeError(f"flwr run printed no run id: {out.strip()[-300:]}")
        return int(match.group(1))

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it (e.g. ``running``, ``finished:completed``)."""
        out = self._flwr("ls", "local-http", "--run-id", str(run_id), "--format", "json")
        match = re.search(r'"status"\s*:\s*"([^"]+)"', out)
        return match.group(1) if match else "unknown"

    def wait(self, run_id: int, *, timeout_s: float, poll_s: float = 1.0) -> str:
        """Wait until the run finishes; returns its final status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(poll_s)
        raise TimeoutError(f"run {run_id} did not finish in {timeout_s} s")

    def run_to_completion(
        self,
        app_dir: Path,
        run_config: Mapping[str, object] | None = None,
        *,
        timeout_s: float,
        max_resumes: int = 5,
        poll_s: float = 1.0,
    ) -> tuple[list[int], str]:
        """Run the app until a run of it finishes ``completed``, without an operator: a run that ends
        ``finished:failed`` (SuperLink restarted under it: SuperLink fails the runs it finds in progress) is
        submitted again with ``resume = true``, which continues from its last recorded round. SuperLink being
        unreachable meanwhile (restarting) is waited out. Returns every run id and the last status."""
        deadline = time.monotonic() + timeout_s
        cfg = dict(run_config or {})
        run_ids: list[int] = []
        status, submit = "unsubmitted", True
        while time.monotonic() < deadline:
            try:
                if submit:
                    run_ids.append(self.submit(app_dir, {**cfg, "resume": True} if run_ids else cfg or None))
                    submit = False
                status = self.status(run_ids[-1])
            except (RuntimeError, subprocess.TimeoutExpired):
                status = "unreachable"  # SuperLink is down or restarting: ask again
            if status == "finished:failed" and len(run_ids) <= max_resumes:
                submit = True
            elif status.startswith("finished"):
                return run_ids, status
            time.sleep(poll_s)
        raise TimeoutError(f"runs {run_ids} did not complete in {timeout_s} s (last status {status})")

    def logs(self, run_id: int) -> str:
        """The ServerApp's log of a run (as ``flwr log`` prints it)."""
        try:
            return self._flwr("log", str(run_id), "local-http", "--show", timeout_s=30)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no log: {exc})"

    def stop_run(self, run_id: int) -> None:
        """Ask SuperLink to stop a run."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._flwr("stop", str(run_id), "local-http", timeout_s=20)
