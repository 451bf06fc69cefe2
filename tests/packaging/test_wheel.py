"""The release works outside the repository: an sdist, a wheel built from it, installed into a fresh venv and run
from an empty directory.

What this proves is what the wheel carries (Rust sources, scaffold templates, device profiles, entry points), so the
dependencies are not downloaded again: the fresh venv sees the test environment's site-packages through a ``.pth``
line (a plain path: the checkout's editable-install hook in there is not run), and the wheel is installed into it
with ``--no-deps``. Every command runs with no PYTHONPATH, from a directory outside the checkout, and the test
checks that the imported packages are the installed ones.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flclient.gate._config import load_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Not part of the package sources; copying them would only slow the build.
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "target", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache"
)


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout_s: float = 240.0) -> str:
        proc = subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FEATUREC_FLFEATURE_PATH")}
    # Build from a clean copy: stale build/ output in the checkout must not leak into the wheel under test.
    src = base / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_SKIP)
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # The sdist first, then the wheel from the sdist, as pip does for a source release: both must carry the crates.
    backend = base / "backend"
    build_requires = load_toml(ROOT / "pyproject.toml")["build-system"]["requires"]
    subprocess.run([*pip, "install", "-q", "--target", str(backend), *build_requires], check=True, timeout=300, env=env)
    sdist_name = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"],
        check=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(backend)},
        cwd=src,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(dist / sdist_name)],
        check=True,
        timeout=300,
        env=env,
        cwd=base,
    )
    (wheel,) = dist.glob("flclient-*.whl")

    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120, env=env, cwd=base
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    # Installed before the dependencies become visible: pip would otherwise see the checkout's editable install.
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
        env=env,
        cwd=base,
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_test_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))

    _console_scripts(python, "flwr")
    work = base / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield Installed(venv=venv, work=work, env=env)


def _console_scripts(python: Path, distribution: str) -> None:
    """What pip writes when it installs ``distribution``: its console scripts, run by the fresh venv's python (the
    SuperLink starts the ServerApp processes through them, and those must import the installed flclient)."""
    for ep in importlib.metadata.distribution(distribution).entry_points:
        if ep.group == "console_scripts":
            script = python.parent / ep.name
            module, _, attr = ep.value.partition(":")
            script.write_text(f"#!{python}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n")
            script.chmod(0o755)


def test_the_installed_packages_are_imported_not_the_checkout(installed: Installed) -> None:
    out = installed.run("python", "-c", "import featurec, flclient; print(flclient.__file__); print(featurec.__file__)")
    for line in out.splitlines():
        assert Path(line).is_relative_to(installed.venv), line
    meta = installed.run(
        "python",
        "-c",
        "import importlib.metadata as m; d = m.distribution('flclient'); "
        "print(d.metadata['License-Expression']); print(d.metadata['Requires-Python']); "
        "print(sorted(str(f) for f in d.files if 'LICENSE' in str(f)))",
    ).splitlines()
    assert meta[0] == "Apache-2.0" and meta[1] == ">=3.10" and "LICENSE" in meta[2], meta
    assert installed.run("flclient", "--version").strip() == "flclient 0.1.0"
    assert installed.run("python", "-m", "featurec", "--version").strip() == "featurec 0.1.0"


def test_feature_author_workflow(installed: Installed) -> None:
    w = installed
    w.run("featurec", "new", "my_feature")
    # moved after creation: the crate carries its helper crate with it
    (w.work / "moved").mkdir()
    crate = w.work / "moved" / "my_feature"
    (w.work / "my_feature").rename(crate)
    out = w.run("featurec", "build", str(crate), "-o", "dist")
    module = w.work / out.splitlines()[0]
    assert module == w.work / "dist" / "my_feature-0.1.0.wasm" and module.is_file()
    assert "ok   wasm vs golden expected" in w.run("featurec", "test", str(crate), "--random-rows", "200")
    for name in ("root", "targets", "online", "author"):
        w.run("featurec", "keygen", "--out", name)
    assert "key id" in w.run("featurec", "sign", str(module), "--key", "author.key")
    assert module.with_name(module.name + ".sig").is_file()
    w.run(
        "featurec", "repo", "init", "--repo", "repo",
        "--root", "root.key", "--targets", "targets.key", "--snapshot", "online.key", "--timestamp", "online.key",
        "--modules", "author.pub", "--checkpoints", "author.pub",
    )  # fmt: skip
    out = w.run("featurec", "publish", str(module), "--repo", "repo", "--key", "author.key", "--key", "online.key")
    assert 'feature-module = "my_feature@0.1.0"' in out
    assert not (crate / "vendor" / "flfeature" / "target").exists()


def test_flclient_demo_runs_from_any_directory(installed: Installed) -> None:
    out = installed.run("flclient", "demo", "--devices", "2", "--rounds", "1", "--out", "demo", timeout_s=300)
    assert "demo: accuracy" in out, out
    assert (installed.work / "demo" / "run.png").is_file()
    # the shipped sources were built from a copy, never inside site-packages
    site = installed.venv / "lib"
    assert not any(site.rglob("target")), "cargo wrote build outputs into the installed package"
