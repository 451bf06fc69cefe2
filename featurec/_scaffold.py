"""``featurec new``: a feature crate that builds, with a per-row function and golden vectors to start from.

The files come from the templates shipped in ``featurec/templates``. The crate must find the ``flfeature`` helper
crate wherever it is moved, so the helper is vendored into ``<crate>/vendor/flfeature`` (a copy that travels with
the crate and is committed with it). The one exception is a crate created beside ``flfeature`` in its own
workspace (``featurec new NAME --dir wasm/rust-features`` in the source tree): it refers to ``../flfeature``, which
moves together with it.
"""

from __future__ import annotations

import importlib.resources
import re
import shutil
from pathlib import Path

from . import __version__
from ._crates import HELPER_CRATE, copy_crate_sources, helper_crate_dir
from ._errors import CrateError

__all__ = ["new_crate"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
# template file -> where it goes in the new crate
_FILES = {"Cargo.toml.in": "Cargo.toml", "lib.rs.in": "src/lib.rs", "vectors.json.in": "golden/vectors.json"}
_VENDOR = f"vendor/{HELPER_CRATE}"


def _render(template: str, values: dict[str, str]) -> str:
    text = (importlib.resources.files("featurec") / "templates" / template).read_text(encoding="utf-8")

    def value(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise CrateError(f"template {template} uses {{{{{m.group(1)}}}}}, which featurec does not fill in")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(value, text)


def new_crate(name: str, parent: Path) -> Path:
    """Create ``parent/name``: Cargo.toml, src/lib.rs, golden/vectors.json and (usually) vendor/flfeature.

    Refuses to overwrite; all files appear at once, or none do."""
    if not _NAME.fullmatch(name):
        raise CrateError(f"crate name {name!r} must match [a-z][a-z0-9_]{{0,63}} (it becomes the module name)")
    crate = parent / name
    if crate.exists():
        raise CrateError(f"{crate} already exists; choose another name or directory")
    helper = helper_crate_dir()
    beside_helper = parent.resolve() == helper.resolve().parent
    if beside_helper:
        dep = f"../{helper.resolve().name}"
        note = "the helper crate of this workspace (moves with it)"
    else:
        dep = _VENDOR
        note = f"the ABI helper crate, vendored by featurec {__version__}: this crate builds wherever it is moved"
    values = {"name": name, "helper": dep, "helper_note": note}
    tmp = parent / f".{name}.featurec-new"
    try:
        for template, relative in _FILES.items():
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_render(template, values), encoding="utf-8")
        if not beside_helper:
            copy_crate_sources(helper, tmp / _VENDOR)
        tmp.rename(crate)
    except OSError as exc:
        raise CrateError(f"cannot create {crate}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return crate
