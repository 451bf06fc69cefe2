"""``featurec inspect``: what a module file is, without trusting it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import wasmtime

from flclient._errors import FeatureError
from flclient._json import loads_untrusted
from flclient.features._abi import ALLOWED_IMPORTS, BUILD_SECTION, MANIFEST_SECTION, MAX_MANIFEST_DEPTH
from flclient.features._host import FeatureModule
from flclient.features._wasm_binary import WasmFormatError, custom_sections

from ._errors import CrateError

__all__ = ["inspect_module"]


def _type_text(ty: Any) -> str:
    if isinstance(ty, wasmtime.FuncType):
        return f"func ({', '.join(map(str, ty.params))}) -> ({', '.join(map(str, ty.results))})"
    if isinstance(ty, wasmtime.MemoryType):
        return f"memory {ty.limits.min}..{ty.limits.max if ty.limits.max is not None else ''} pages"
    return type(ty).__name__.removesuffix("Type").lower()


def inspect_module(path: Path) -> dict[str, Any]:
    """Manifest, exports, imports, size and sha256, and the problems a host would reject it for."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CrateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    info: dict[str, Any] = {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    problems: list[str] = []
    try:
        sections = custom_sections(data)
    except WasmFormatError as exc:
        raise CrateError(f"{path} is not a WebAssembly module: {exc}") from exc
    info["custom_sections"] = [{"name": n, "size": len(p)} for n, p in sections]
    by_name = dict(sections)
    for key, section in (("manifest", MANIFEST_SECTION), ("build", BUILD_SECTION)):
        raw = by_name.get(section)
        info[key] = None
        if raw is None:
            continue
        try:
            value = loads_untrusted(raw, max_depth=MAX_MANIFEST_DEPTH)
        except ValueError as exc:
            problems.append(f"custom section {section!r} is not valid JSON: {exc}")
            continue
        if isinstance(value, dict):
            info[key] = value
        else:
            problems.append(f"custom section {section!r} is not a JSON object")
    try:
        module = wasmtime.Module(wasmtime.Engine(), data)
    except wasmtime.WasmtimeError as exc:
        raise CrateError(f"{path} is not a valid WebAssembly module: {str(exc).splitlines()[0]}") from exc
    info["exports"] = [{"name": e.name, "type": _type_text(e.type)} for e in module.exports]
    info["imports"] = [{"module": i.module, "name": i.name, "type": _type_text(i.type)} for i in module.imports]
    info["forbidden_imports"] = [
        f"{i.module}.{i.name}" for i in module.imports if (i.module, i.name) not in ALLOWED_IMPORTS
    ]
    try:
        FeatureModule.from_bytes(data, label=path.name).close()
    except FeatureError as exc:
        problems.append(exc.reason)
    info["problems"] = problems
    info["valid"] = not problems
    return info
