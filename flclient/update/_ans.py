"""Interleaved rANS with a static model, vectorised over lanes in numpy.

``lanes`` independent rANS coders take consecutive symbols round-robin, so each numpy operation advances all
lanes by one symbol and the Python loop runs ``len(symbols) / lanes`` times. States are 32-bit with 16-bit
renormalisation and 16-bit probability precision: a symbol emits at most one 16-bit word.

A lane's final state (32 bits) must be sent; its *initial* state is free to carry 31 bits of other payload,
which the decoder gets back when it finishes (the "bits back" of an rANS stack). Callers put incompressible bits
(signs) there, so many lanes cost about one bit each instead of 32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PRECISION_BITS", "AnsFormatError", "decode", "encode", "normalize_frequencies", "product_frequencies"]

PRECISION_BITS = 16
_TOTAL = 1 << PRECISION_BITS
_LOW = 1 << 16  # states live in [2^16, 2^32)
INITIAL_PAYLOAD_BITS = 31

I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]


class AnsFormatError(ValueError):
    """The coded stream is inconsistent with its header (translated to the codec error by the caller)."""


def normalize_frequencies(counts: npt.NDArray[np.integer], total: int = _TOTAL) -> I64:
    """Integer frequencies summing to ``total``: proportional to ``counts``, at least 1 where a count is > 0.

    Deterministic integer arithmetic, so encoder and decoder derive the same table from the same counts.
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or (c < 0).any() or c.sum() <= 0:
        raise AnsFormatError("frequency counts must be non-negative with a positive sum")
    if int(np.count_nonzero(c)) > total:
        raise AnsFormatError("more distinct symbols than the precision allows")
    s = int(c.sum())
    f = (c * total) // s if s < (1 << 40) else np.floor(c / s * total).astype(np.int64)
    f[(c > 0) & (f == 0)] = 1
    diff = total - int(f.sum())
    order = np.argsort(-f, kind="stable")
    i = 0
    while diff != 0:
        j = int(order[i % len(order)])
        if diff > 0:
            f[j] += diff
            diff = 0
        elif f[j] > 1:
            take = min(-diff, int(f[j]) - 1)
            f[j] -= take
            diff += take
        i += 1
        if i > 4 * len(order) and diff < 0:
            raise AnsFormatError("cannot normalise frequencies")
    return f


def product_frequencies(base: I64, group: int) -> I64:
    """Frequencies of ``group``-tuples of independent symbols (first symbol most significant)."""
    f = np.ones(1, dtype=np.int64)
    for _ in range(group):
        f = np.outer(f, base).ravel()
    return normalize_frequencies(f)


def encode(symbols: npt.NDArray[np.integer], freqs: I64, lanes: int, initial: U32) -> tuple[U32, U16]:
    """Code ``symbols`` (padded by the caller to a multiple of ``lanes``); returns final states and words.

    ``initial`` holds each lane's starting state, in ``[2^31, 2^32)``.
    """
    if len(symbols) % lanes:
        raise ValueError("symbols must be a multiple of lanes long")
    steps = len(symbols) // lanes
    grid = np.asarray(symbols).reshape(steps, lanes)
    f_tab = freqs.astype(np.float64)
    c_tab = (np.cumsum(freqs) - freqs).astype(np.float64)
    x_max = f_tab * 65536.0
    x = initial.astype(np.float64)
    out: list[npt.NDArray[np.float64]] = []
    for t in range(steps - 1, -1, -1):
        s = grid[t]
        f = f_tab[s]
        emit = x >= x_max[s]
        if emit.any():
            xe = x[emit]
            hi = np.floor(xe * (1.0 / 65536.0))
            out.append(xe - hi * 65536.0)
            x[emit] = hi
        else:
            out.append(np.empty(0))
        # float64 division is exact enough here: x < 2^32 and f < 2^16 keep floor(x / f) correct.
        q = np.floor(x / f)
        x = q * float(_TOTAL) + (x - q * f) + c_tab[s]
    out.reverse()
    words = np.concatenate(out).astype(np.uint16) if out else np.empty(0, np.uint16)
    return x.astype(np.uint32), words


def decode(states: U32, words: U16, freqs: I64, count: int, lanes: int) -> tuple[I64, U32]:
    """Inverse of :func:`encode`: ``count`` symbols (a multiple of ``lanes``) and the lanes' initial states."""
    if count % lanes or len(states) != lanes:
        raise AnsFormatError("symbol count or state count does not match the lanes")
    if int(freqs.sum()) != _TOTAL or (freqs < 0).any():
        raise AnsFormatError("frequency table does not sum to the precision")
    steps = count // lanes
    f_tab = freqs.astype(np.int64)
    c_tab = np.cumsum(f_tab) - f_tab
    sym_of_slot = np.repeat(np.arange(len(f_tab), dtype=np.int64), f_tab)
    x = states.astype(np.int64)
    if (x < _LOW).any():
        raise AnsFormatError("a final state is out of range")
    w = words.astype(np.int64)
    out = np.empty((steps, lanes), dtype=np.int64)
    pos = 0
    mask = _TOTAL - 1
    for t in range(steps):
        slot = x & mask
        s = sym_of_slot[slot]
        out[t] = s
        x = f_tab[s] * (x >> PRECISION_BITS) + slot - c_tab[s]
        need = x < _LOW
        n = int(np.count_nonzero(need))
        if n:
            if pos + n > len(w):
                raise AnsFormatError("the word stream is truncated")
            x[need] = (x[need] << 16) | w[pos : pos + n]
            pos += n
    if pos != len(w):
        raise AnsFormatError("the word stream has trailing words")
    if (x < (1 << INITIAL_PAYLOAD_BITS)).any() or (x >= (1 << 32)).any():
        raise AnsFormatError("a lane did not return to a valid initial state")
    return out.ravel(), x.astype(np.uint32)
