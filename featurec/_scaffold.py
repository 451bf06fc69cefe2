"""``featurec new``: a feature crate that builds, with a per-row function and golden vectors to start from."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import CrateError

__all__ = ["helper_crate_dir", "new_crate"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

_CARGO_TOML = """[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
description = "{name}: describe what these features are for"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
flfeature = {{ path = "{helper}" }}

# A crate of its own (not a member of a surrounding workspace), built the way featurec expects.
[workspace]

[profile.release]
panic = "abort"
lto = true
codegen-units = 1
opt-level = 3
strip = true
"""

_LIB_RS = """//! {name}: a feature module. Write the per-row logic in `row`; featurec does the rest.

use flfeature::RowStatus;

flfeature::feature! {{
    inputs {{
        x: f64 [unit = "", description = "an input value"],
    }}
    outputs {{
        x_squared: f64 [unit = "", description = "x * x"],
        is_positive: u8 [unit = "", description = "1 when x > 0"],
    }}
    row = row;
}}

fn row(input: &Inputs, out: &mut Outputs) -> RowStatus {{
    if !input.x.is_finite() {{
        return RowStatus::NonFiniteInput;
    }}
    out.x_squared = input.x * input.x;
    out.is_positive = (input.x > 0.0) as u8;
    RowStatus::Ok
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn squares_and_flags_non_finite_rows() {{
        let rows = [Inputs {{ x: -3.0 }}, Inputs {{ x: f64::NAN }}];
        let out = extract_rows(&rows).unwrap();
        assert_eq!(out[0].0, RowStatus::Ok as u8);
        assert_eq!(out[0].1.x_squared, 9.0);
        assert_eq!(out[0].1.is_positive, 0);
        assert_eq!(out[1].0, RowStatus::NonFiniteInput as u8);
        assert_eq!(out[1].1.x_squared, 0.0);
    }}
}}
"""

_GOLDEN = """{
 "inputs": {"x": [0.0, 1.5, -3.0, "NaN", "Infinity"]},
 "expected": {"x_squared": [0.0, 2.25, 9.0, 0.0, 0.0], "is_positive": [0, 1, 0, 0, 0], "status": [0, 0, 0, 2, 2]}
}
"""


def helper_crate_dir() -> Path:
    """Where the flfeature helper crate lives (FEATUREC_FLFEATURE_PATH overrides)."""
    override = os.environ.get("FEATUREC_FLFEATURE_PATH")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[1] / "wasm" / "rust-features" / "flfeature")
    for path in candidates:
        if (path / "Cargo.toml").is_file():
            return path
    raise CrateError(
        "cannot find the flfeature helper crate; set FEATUREC_FLFEATURE_PATH to its directory "
        "(wasm/rust-features/flfeature in the flclient source tree)"
    )


def new_crate(name: str, parent: Path) -> Path:
    """Create ``parent/name``: Cargo.toml, src/lib.rs and golden/vectors.json. Refuses to overwrite."""
    if not _NAME.fullmatch(name):
        raise CrateError(f"crate name {name!r} must match [a-z][a-z0-9_]{{0,63}} (it becomes the module name)")
    crate = parent / name
    if crate.exists():
        raise CrateError(f"{crate} already exists; choose another name or directory")
    helper = helper_crate_dir()
    try:
        rel = os.path.relpath(helper, crate.resolve())
    except ValueError:  # different drives on Windows
        rel = str(helper)
    files = {
        crate / "Cargo.toml": _CARGO_TOML.format(name=name, helper=Path(rel).as_posix()),
        crate / "src" / "lib.rs": _LIB_RS.format(name=name),
        crate / "golden" / "vectors.json": _GOLDEN,
    }
    tmp = parent / f".{name}.featurec-new"
    try:
        for path, text in files.items():
            target = tmp / path.relative_to(crate)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        tmp.rename(crate)  # all files appear at once, or none do
    except OSError as exc:
        raise CrateError(f"cannot create {crate}: {exc}") from exc
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return crate
