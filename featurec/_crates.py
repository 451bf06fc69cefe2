"""The Rust sources featurec ships: the ``flfeature`` helper crate and the reference feature crates.

In a source checkout ``featurec/crates`` is a symlink to ``wasm/rust-features``, the cargo workspace and the one
source of truth; a wheel holds a copy of its sources (never its build outputs) as package data, the way
``flclient/gate/device_profiles`` is shipped. Installed sources are read-only by intent: cargo writes its ``target/``
next to the workspace, so anything that builds them works on a copy (:func:`copy_reference_crates`).
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

from ._errors import CrateError

__all__ = ["HELPER_CRATE", "copy_crate_sources", "copy_reference_crates", "crates_dir", "helper_crate_dir"]

HELPER_CRATE = "flfeature"
"""The directory (and package) name of the helper crate every feature crate depends on."""

# Build outputs, editor and VCS files: none of it is source, and target/ can be gigabytes.
_IGNORE = shutil.ignore_patterns("target", ".*", "*.wasm", "__pycache__")


def crates_dir() -> Path:
    """The shipped cargo workspace: ``Cargo.toml``, ``flfeature/``, ``device_context/``, ``vibration/``."""
    bundled = importlib.resources.files("featurec") / "crates"
    if isinstance(bundled, Path) and (bundled / HELPER_CRATE / "Cargo.toml").is_file():
        return bundled
    raise CrateError(
        f"featurec's Rust sources are missing (looked in {bundled}); reinstall flclient from a wheel or sdist, "
        "or in a source checkout restore the symlink featurec/crates -> ../wasm/rust-features"
    )


def helper_crate_dir() -> Path:
    """Where the ``flfeature`` helper crate lives: ``FEATUREC_FLFEATURE_PATH`` when set, else the shipped one."""
    override = os.environ.get("FEATUREC_FLFEATURE_PATH")
    if override:
        path = Path(override)
        if not (path / "Cargo.toml").is_file():
            raise CrateError(f"FEATUREC_FLFEATURE_PATH={override} has no Cargo.toml; point it at the flfeature crate")
        return path
    return crates_dir() / HELPER_CRATE


def copy_crate_sources(source: Path, destination: Path) -> Path:
    """Copy a crate (or a workspace) without its build outputs; modification times are kept, so cargo's
    incremental fingerprints stay valid when the same sources are copied over again."""
    try:
        shutil.copytree(source, destination, ignore=_IGNORE, copy_function=shutil.copy2, dirs_exist_ok=True)
    except (OSError, shutil.Error) as exc:
        raise CrateError(f"cannot copy {source} to {destination}: {exc}") from exc
    # Installed package data may be read-only; the copy is the user's to edit and build.
    for path in (destination, *destination.rglob("*")):
        mode = path.stat().st_mode
        if not mode & 0o200:
            path.chmod(mode | 0o200)
    return destination


def copy_reference_crates(destination: str | os.PathLike[str]) -> Path:
    """Copy the reference workspace (``flfeature``, ``device_context``, ``vibration``) into ``destination`` and
    return it: a place to build them (``build_module(dest / "device_context", out)``) or start from them.

    Example::

        crates = copy_reference_crates("work/crates")
        built = build_module(crates / "device_context", Path("dist"))
    """
    return copy_crate_sources(crates_dir(), Path(destination))
