"""Small ABI v1 modules written as WAT, for testing the host without a Rust toolchain.

``doubler()`` is a well-behaved module: input ``x: f64``, output ``y: f64 = 2x``, rows with NaN flagged.
Hostile variants replace one piece of it (an export, the extract body, an import, the manifest).
"""

from __future__ import annotations

import json
from typing import Any

import wasmtime

from flclient.features._abi import MANIFEST_SECTION
from flclient.features._wasm_binary import with_custom_section

X_COLUMNS: dict[str, Any] = {
    "inputs": [{"name": "x", "dtype": "f64", "shape": [], "unit": "", "description": "a number"}],
    "outputs": [{"name": "y", "dtype": "f64", "shape": [], "unit": "", "description": "twice x"}],
}


def manifest(name: str = "doubler", version: str = "1.0.0", abi: int = 1, **columns: Any) -> dict[str, Any]:
    cols = {**X_COLUMNS, **columns}
    return {
        "abi_version": abi,
        "name": name,
        "version": version,
        "description": "test module",
        "inputs": cols["inputs"],
        "outputs": cols["outputs"],
    }


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


# Row loop of the doubler: table = [x_ptr, y_ptr, status_ptr].
DOUBLER_EXTRACT = """
  (func (export "flf1_extract") (param $n i32) (param $t i32) (result i32)
    (local $i i32) (local $x i32) (local $y i32) (local $s i32) (local $v f64)
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 1))))
    (local.set $x (i32.load (local.get $t)))
    (local.set $y (i32.load offset=4 (local.get $t)))
    (local.set $s (i32.load offset=8 (local.get $t)))
    (block $done (loop $rows
      (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
      (local.set $v (f64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))
      (if (f64.ne (local.get $v) (local.get $v))
        (then
          (i32.store8 (i32.add (local.get $s) (local.get $i)) (i32.const 2))
          (f64.store (i32.add (local.get $y) (i32.shl (local.get $i) (i32.const 3))) (f64.const 0)))
        (else
          (i32.store8 (i32.add (local.get $s) (local.get $i)) (i32.const 0))
          (f64.store (i32.add (local.get $y) (i32.shl (local.get $i) (i32.const 3)))
                     (f64.mul (local.get $v) (f64.const 2)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows)))
    (i32.const 0))
"""


def doubler_wat(
    *,
    code_manifest: dict[str, Any] | bytes | None = None,
    extract: str = DOUBLER_EXTRACT,
    abi_version_body: str = "(i32.const 1)",
    imports: str = "",
    extra: str = "",
    omit: tuple[str, ...] = (),
    memory_pages: int = 2,
) -> str:
    """WAT text of the doubler, with any piece replaced (``code_manifest`` as bytes: the exact text)."""
    if isinstance(code_manifest, bytes):
        text = code_manifest  # raw, possibly not even JSON
    else:
        text = json.dumps(code_manifest or manifest(), separators=(",", ":")).encode()
    parts = {
        "flf_abi_version": f'(func (export "flf_abi_version") (result i32) {abi_version_body})',
        "flf1_manifest_ptr": '(func (export "flf1_manifest_ptr") (result i32) (i32.const 1024))',
        "flf1_manifest_len": f'(func (export "flf1_manifest_len") (result i32) (i32.const {len(text)}))',
        # Bump allocator: 8-aligned, grows memory on demand, 0 when memory.grow fails; free is a no-op.
        "flf1_alloc": """
  (func (export "flf1_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $need i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $need (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                              (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))""",
        "flf1_free": '(func (export "flf1_free") (param i32 i32))',
        "flf1_extract": extract,
        "memory": f'(memory (export "memory") {memory_pages})',
    }
    body = "\n".join(v for k, v in parts.items() if k not in omit)
    return f"""(module
  {imports}
  {body}
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{_wat_bytes(text)}")
  {extra}
)"""


def build(wat: str, embedded_manifest: dict[str, Any] | None = None, *, embed: bool = True) -> bytes:
    """Assemble WAT and embed a manifest section (the code's own manifest unless another is given)."""
    binary = wasmtime.wat2wasm(wat)
    if not embed:
        return bytes(binary)
    text = json.dumps(embedded_manifest or manifest(), separators=(",", ":")).encode()
    return with_custom_section(bytes(binary), MANIFEST_SECTION, text)


def doubler(**kwargs: Any) -> bytes:
    embedded = kwargs.pop("embedded_manifest", None)
    return build(doubler_wat(**kwargs), embedded or kwargs.get("code_manifest"))


def hostile_alloc(rule: str) -> str:
    """An ``flf1_alloc`` that bump-allocates but first applies ``rule``, which may return another address.

    ``$calls`` counts the calls (1-based); the host allocates the input, output and status columns, then the
    column table, so for the doubler call 4 is the table. Use with ``doubler(omit=("flf1_alloc",), extra=...)``.
    """
    return f"""
  (global $calls (mut i32) (i32.const 0))
  (func (export "flf1_alloc") (param $size i32) (result i32)
    (local $p i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    {rule}
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))"""


def alloc_returns_on_call(call: int, address: int) -> str:
    """A :func:`hostile_alloc` rule: call number ``call`` returns ``address`` instead of a fresh block."""
    return f"(if (i32.eq (global.get $calls) (i32.const {call})) (then (return (i32.const {address}))))"
