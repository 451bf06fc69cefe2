"""The Rust crates' own unit tests (`cargo test`, native), run as part of the one test command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from featurec._toolchain import native_toolchain

WORKSPACE = Path(__file__).resolve().parents[2] / "wasm" / "rust-features"


def test_cargo_test_passes_for_every_crate() -> None:
    toolchain = native_toolchain()
    proc = subprocess.run(
        [toolchain.cargo, "test", "--offline", "--workspace", "--quiet"],
        cwd=WORKSPACE,
        env=toolchain.env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "test result: ok" in proc.stdout
