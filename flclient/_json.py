"""JSON from untrusted peers: nesting depth bounded before parsing, strict numbers, no duplicate keys.

``json.loads`` recurses once per nesting level (a 200k-deep ``[[[...`` raises ``RecursionError``), reads
``Infinity``/``NaN`` and turns ``1e999`` into ``inf``, and keeps the last of duplicate keys. Decoders of
hostile input parse with :func:`loads_untrusted` instead, which raises only ``ValueError`` (callers translate it
into their package's error).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["loads_untrusted", "nesting_depth"]

# One string literal, as an unrolled loop (plain runs, then escape + plain run): every byte has one way to match, so
# it never backtracks (Python 3.10 has no possessive quantifiers); an unterminated one runs to the end. Every match
# starts where the previous ended, so substituting them is linear in the input.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BLOCK = 1 << 20


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in ``data`` (brackets inside string literals do not count)."""
    bare = np.frombuffer(_STRING.sub(b'""', data), np.uint8)
    deepest, level = 0, 0
    for start in range(0, len(bare), _BLOCK):  # in blocks, so the running sum stays a few MiB
        block = bare[start : start + _BLOCK]
        step = (block == ord("[")).astype(np.int32)
        step += block == ord("{")
        step -= block == ord("]")
        step -= block == ord("}")
        running = np.cumsum(step, out=step)
        running += level
        deepest = max(deepest, int(running.max()))
        level = int(running[-1])
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON holds {name}, which is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"JSON number {text[:40]} is out of the float range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dupes = sorted(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise ValueError(f"JSON object repeats the key(s) {dupes[:5]}")
    return out


def loads_untrusted(data: bytes | str, *, max_depth: int) -> Any:
    """Parse JSON whose nesting is at most ``max_depth`` deep, with finite numbers and unique keys only.

    Raises ``ValueError`` (``json.JSONDecodeError`` included) naming the problem; never ``RecursionError``.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # Fewer brackets than the limit cannot nest deeper than it: the common case skips the scan.
    if raw.count(b"[") + raw.count(b"{") > max_depth and (depth := nesting_depth(raw)) > max_depth:
        raise ValueError(f"JSON is nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"JSON is not valid UTF-8: {exc}") from exc
    return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float, object_pairs_hook=_unique_keys)
