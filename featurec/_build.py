"""Build a feature crate: cargo for wasm32 (and natively), embed the manifest, write ``<name>-<version>.wasm``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flclient._atomic import atomic_write_bytes
from flclient._errors import FeatureError
from flclient.features._abi import BUILD_SECTION, MANIFEST_SECTION, Manifest
from flclient.features._host import FeatureModule, declared_manifest
from flclient.features._wasm_binary import WasmFormatError, with_custom_section

from . import __version__
from ._errors import BuildError, CrateError
from ._toolchain import WASM_TARGET, Toolchain, find_toolchain, native_toolchain

__all__ = ["BuiltModule", "build_module", "build_native", "check_crate", "embed_manifest"]


@dataclass(frozen=True, kw_only=True)
class BuiltModule:
    path: Path
    sha256: str
    manifest: Manifest
    size: int


def check_crate(crate_dir: Path) -> Path:
    """The crate's Cargo.toml, or a CrateError saying why the directory is not a feature crate."""
    cargo_toml = crate_dir / "Cargo.toml"
    if not crate_dir.is_dir():
        raise CrateError(f"{crate_dir} is not a directory")
    if not cargo_toml.is_file():
        raise CrateError(f"{crate_dir} has no Cargo.toml; create a feature crate with 'featurec new NAME'")
    text = cargo_toml.read_text(encoding="utf-8", errors="replace")
    if "cdylib" not in text:
        raise CrateError(f'{cargo_toml} must build a cdylib: add crate-type = ["cdylib", "rlib"] under [lib]')
    return cargo_toml


def _cargo(toolchain: Toolchain, cargo_toml: Path, target: str | None) -> Path:
    """Run cargo build --release; return the cdylib it produced for this crate."""
    cmd = [
        toolchain.cargo,
        "build",
        "--release",
        "--offline",
        "--lib",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
        str(cargo_toml),
    ]
    if target:
        cmd += ["--target", target]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=toolchain.env(), check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {toolchain.cargo}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise BuildError(f"cargo build failed for {cargo_toml.parent} (exit {proc.returncode}):\n{tail}")
    want_suffix = ".wasm" if target == WASM_TARGET else (".so", ".dylib", ".dll")
    resolved = cargo_toml.resolve()
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or "cdylib" not in msg.get("target", {}).get("kind", []):
            continue
        if Path(msg.get("manifest_path", "")).resolve() != resolved:
            continue
        for filename in msg.get("filenames", []):
            if filename.endswith(want_suffix):
                return Path(filename)
    raise BuildError(f"cargo built {cargo_toml.parent} but reported no cdylib artifact")


def _wasm_opt(data: bytes) -> tuple[bytes, str | None]:
    tool = shutil.which("wasm-opt")
    if tool is None:
        return data, None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wasm", Path(tmp) / "out.wasm"
        src.write_bytes(data)
        proc = subprocess.run(
            [
                tool,
                "-O3",
                "--enable-nontrapping-float-to-int",
                "--enable-bulk-memory",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                str(src),
                "-o",
                str(dst),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"wasm-opt failed: {proc.stderr.strip()[-500:]}")
        version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        return dst.read_bytes(), version or "wasm-opt"


def _source_digest(crate_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in crate_dir.rglob("*") if p.is_file() and "target" not in p.parts):
        if path.suffix in (".rs", ".toml", ".lock"):
            h.update(str(path.relative_to(crate_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def embed_manifest(
    data: bytes, *, label: str, build_info: Mapping[str, object] | None = None
) -> tuple[bytes, Manifest]:
    """Read the manifest the module's code declares and embed it as the manifest custom section."""
    manifest = declared_manifest(data, label=label)
    try:
        out = with_custom_section(data, MANIFEST_SECTION, manifest.to_bytes())
        if build_info is not None:
            out = with_custom_section(out, BUILD_SECTION, json.dumps(build_info, sort_keys=True).encode())
    except WasmFormatError as exc:
        raise BuildError(f"{label}: {exc}") from exc
    return out, manifest


def build_module(crate_dir: Path, out_dir: Path, *, optimize: bool = True) -> BuiltModule:
    """cargo build for wasm32, optional wasm-opt, embed the manifest, verify with the host, write atomically."""
    cargo_toml = check_crate(crate_dir)
    toolchain = find_toolchain()
    artifact = _cargo(toolchain, cargo_toml, WASM_TARGET)
    data = artifact.read_bytes()
    opt_version = None
    if optimize:
        data, opt_version = _wasm_opt(data)
    info = {
        "featurec": __version__,
        "rustc": toolchain.version(),
        "target": WASM_TARGET,
        "wasm_opt": opt_version,
        "source_sha256": _source_digest(crate_dir),
    }
    try:
        data, manifest = embed_manifest(data, label=crate_dir.name, build_info=info)
        FeatureModule.from_bytes(data, label=crate_dir.name).close()  # the host must accept what we ship
    except FeatureError as exc:
        raise BuildError(f"the built module is not a valid feature module: {exc}") from exc
    path = out_dir / f"{manifest.name}-{manifest.version}.wasm"
    atomic_write_bytes(path, data)
    return BuiltModule(path=path, sha256=hashlib.sha256(data).hexdigest(), manifest=manifest, size=len(data))


def build_native(crate_dir: Path) -> Path:
    """cargo build the crate for the host; returns the shared library."""
    return _cargo(native_toolchain(), check_crate(crate_dir), None)
