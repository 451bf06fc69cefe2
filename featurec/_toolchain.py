"""Find a Rust toolchain that builds wasm32-unknown-unknown (the same rules as scripts/ensure-wasm-toolchain.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ._errors import ToolchainError

__all__ = ["WASM_TARGET", "Toolchain", "find_toolchain"]

WASM_TARGET = "wasm32-unknown-unknown"
_DEBIAN_PACKAGES = "rustc cargo libstd-rust-dev-wasm32 lld-14"


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    """How to invoke cargo so that it can build for wasm32."""

    cargo: str
    rustc: str
    source: str  # "rustup" or "debian"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUSTC"] = self.rustc
        if self.source == "debian":
            # A rustup toolchain earlier on PATH lacks the wasm32 std; make Debian's tools win.
            env["PATH"] = "/usr/bin:" + env.get("PATH", "")
        return env

    def version(self) -> str:
        out = subprocess.run([self.rustc, "--version"], capture_output=True, text=True, env=self.env(), check=False)
        return out.stdout.strip() or "unknown"


def _rustup_has_wasm() -> Toolchain | None:
    rustup, cargo, rustc = shutil.which("rustup"), shutil.which("cargo"), shutil.which("rustc")
    if not (rustup and cargo and rustc):
        return None
    try:
        out = subprocess.run([rustup, "target", "list", "--installed"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if WASM_TARGET in out.stdout.split():
        return Toolchain(cargo=cargo, rustc=rustc, source="rustup")
    return None


def _debian_has_wasm(prefix: Path = Path("/usr")) -> Toolchain | None:
    cargo, rustc = prefix / "bin" / "cargo", prefix / "bin" / "rustc"
    if cargo.exists() and rustc.exists() and (prefix / "lib" / "rustlib" / WASM_TARGET).is_dir():
        return Toolchain(cargo=str(cargo), rustc=str(rustc), source="debian")
    return None


def find_toolchain() -> Toolchain:
    """The rustup toolchain when it has the wasm32 target, else Debian's; else a ToolchainError."""
    found = _rustup_has_wasm() or _debian_has_wasm()
    if found is None:
        raise ToolchainError(
            "no Rust toolchain that can target wasm32-unknown-unknown was found; install one with "
            f"'apt-get install -y --no-install-recommends {_DEBIAN_PACKAGES}' (Debian/Ubuntu) or "
            "'rustup target add wasm32-unknown-unknown', or run scripts/ensure-wasm-toolchain.sh"
        )
    return found


def native_toolchain() -> Toolchain:
    """A toolchain for host builds (used to cross-check modules against the crate's native build)."""
    wasm = _rustup_has_wasm() or _debian_has_wasm()
    if wasm is not None:
        return wasm
    cargo, rustc = shutil.which("cargo"), shutil.which("rustc")
    if cargo and rustc:
        return Toolchain(cargo=cargo, rustc=rustc, source="path")
    raise ToolchainError("no cargo/rustc found; install Rust (Debian: apt-get install -y rustc cargo)")
