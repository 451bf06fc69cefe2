"""Interleaved rANS with a static model, vectorised over lanes in numpy.

``lanes`` independent rANS coders take consecutive symbols round-robin, so each numpy operation advances all
lanes by one symbol and the Python loop runs ``len(symbols) / lanes`` times. States are 32-bit with 16-bit
renormalisation and 16-bit probability precision: a symbol emits at most one 16-bit word.

Everything that does not depend on the running state (each symbol's frequency and cumulative frequency on the
encoder side; the slot -> symbol, frequency and offset tables on the decoder side) is gathered in bulk before
the loop, and the emitted words are collected in a (steps, lanes) grid and compacted once at the end, so the
loop body is a dozen ufunc calls on ``lanes`` values.

A lane's final state (32 bits) must be sent; its *initial* state is free to carry 31 bits of other payload,
which the decoder gets back when it finishes (the "bits back" of an rANS stack). Callers put incompressible bits
(signs) there, so many lanes cost a few bits each instead of 32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "INITIAL_PAYLOAD_BITS",
    "PRECISION_BITS",
    "AnsFormatError",
    "decode",
    "encode",
    "normalize_frequencies",
    "product_frequencies",
]

PRECISION_BITS = 16
_TOTAL = 1 << PRECISION_BITS
_LOW = 1 << 16  # states live in [2^16, 2^32)
INITIAL_PAYLOAD_BITS = 31
MAX_SYMBOLS = 1 << 12
"""Largest alphabet (after grouping) the coder accepts."""

I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]


class AnsFormatError(ValueError):
    """The coded stream is inconsistent with its header (translated to the codec error by the caller)."""


def _quantize(p: npt.NDArray[np.float64], total: int) -> I64:
    """Integer frequencies summing to ``total`` from probabilities ``p`` (at least 1 where ``p > 0``).

    Only IEEE-exact operations (products, floor, integer sums), so encoder and decoder agree bit for bit.
    """
    f = np.floor(p * total).astype(np.int64)
    f[(p > 0) & (f == 0)] = 1
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


def normalize_frequencies(counts: npt.NDArray[np.integer], total: int = _TOTAL) -> I64:
    """Integer frequencies summing to ``total``: proportional to ``counts``, at least 1 where a count is > 0."""
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or c.size == 0 or (c < 0).any() or c.sum() <= 0:
        raise AnsFormatError("frequency counts must be non-negative with a positive sum")
    if int(np.count_nonzero(c)) > total:
        raise AnsFormatError("more distinct symbols than the precision allows")
    return _quantize(c / float(c.sum()), total)


def product_frequencies(base: I64, group: int) -> I64:
    """Frequencies of ``group``-tuples of independent symbols; the first symbol is the least significant digit.

    A tuple ``(k_0, ..., k_{g-1})`` is symbol ``sum_j k_j * len(base)^j``.
    """
    if len(base) ** group > MAX_SYMBOLS:
        raise AnsFormatError("grouped alphabet is too large")
    p = np.asarray(base, np.float64) / float(np.sum(base))
    joint = p
    for _ in range(group - 1):
        joint = np.outer(p, joint).ravel()
    return _quantize(joint, _TOTAL)


def encode(symbols: npt.NDArray[np.integer], freqs: I64, lanes: int, initial: U32) -> tuple[U32, U16]:
    """Code ``symbols`` (padded by the caller to a multiple of ``lanes``); returns final states and words.

    ``initial`` holds each lane's starting state, in ``[2^31, 2^32)``. Every symbol must have a frequency > 0.
    """
    if len(symbols) % lanes:
        raise ValueError("symbols must be a multiple of lanes long")
    steps = len(symbols) // lanes
    grid = np.asarray(symbols).reshape(steps, lanes)
    f_tab = freqs.astype(np.float64)
    c_tab = (np.cumsum(freqs) - freqs).astype(np.float64)
    f_all = f_tab.take(grid)
    if steps and float(f_all.min()) <= 0.0:
        raise ValueError("a symbol to encode has frequency 0")
    c_all = c_tab.take(grid)
    grow = float(_TOTAL) - f_all  # x' = x + q * (M - f) + c  with  q = floor(x / f)
    before = np.empty((steps, lanes))
    emitted = np.empty((steps, lanes), bool)
    x = initial.astype(np.float64)
    hi = np.empty(lanes)
    q = np.empty(lanes)
    for t in range(steps - 1, -1, -1):
        before[t] = x
        np.multiply(x, 1.0 / 65536.0, out=hi)
        np.floor(hi, out=hi)
        emit = emitted[t]
        np.greater_equal(hi, f_all[t], out=emit)  # x >= f * 2^16: the state would overflow, emit 16 bits
        np.copyto(x, hi, where=emit)
        # float64 division is exact enough here: x < 2^32 and f <= 2^16 keep floor(x / f) correct.
        np.divide(x, f_all[t], out=q)
        np.floor(q, out=q)
        q *= grow[t]
        x += q
        x += c_all[t]
    # The low 16 bits of each emitting lane's state, in (step, lane) order: uint32 -> uint16 keeps the low half.
    words = np.compress(emitted.ravel(), before.ravel()).astype(np.uint32).astype(np.uint16)
    return x.astype(np.uint32), words


def decode(states: U32, words: U16, freqs: I64, count: int, lanes: int) -> tuple[npt.NDArray[np.uint16], U32]:
    """Inverse of :func:`encode`: ``count`` symbols (a multiple of ``lanes``) and the lanes' initial states.

    Raises :class:`AnsFormatError` when the stream is inconsistent: a final state out of range, too few or too
    many words, or a lane that does not end in a valid initial state.
    """
    if lanes <= 0 or count % lanes or len(states) != lanes:
        raise AnsFormatError("symbol count or state count does not match the lanes")
    if len(freqs) > MAX_SYMBOLS or int(freqs.sum()) != _TOTAL or (freqs < 0).any():
        raise AnsFormatError("frequency table does not sum to the precision")
    steps = count // lanes
    f_tab = freqs.astype(np.int64)
    c_tab = np.cumsum(f_tab) - f_tab
    sym_of_slot = np.repeat(np.arange(len(f_tab), dtype=np.uint16), f_tab)
    # x' = f * (x >> 16) + (slot - c): both per-slot numbers in one row, so one gather fetches them
    f_and_d = np.stack([f_tab[sym_of_slot], np.arange(_TOTAL, dtype=np.int64) - c_tab[sym_of_slot]], axis=1)
    x = states.astype(np.int64)
    if (x < _LOW).any():
        raise AnsFormatError("a final state is out of range")
    w = words.astype(np.int64)
    out = np.empty((steps, lanes), dtype=np.uint16)
    slot = np.empty(lanes, np.int64)
    gathered = np.empty((lanes, 2), np.int64)
    f_now, d_now = gathered[:, 0], gathered[:, 1]
    need = np.empty(lanes, bool)
    pos = 0
    mask = _TOTAL - 1
    for t in range(steps):
        np.bitwise_and(x, mask, out=slot)
        # mode="clip" skips the bounds pass (slot < 2^16 by construction), half the cost of a checked take
        sym_of_slot.take(slot, out=out[t], mode="clip")
        np.right_shift(x, PRECISION_BITS, out=x)
        f_and_d.take(slot, axis=0, out=gathered, mode="clip")
        x *= f_now
        x += d_now
        np.less(x, _LOW, out=need)
        idx = need.nonzero()[0]
        n = idx.size
        if n:
            if pos + n > len(w):
                raise AnsFormatError("the word stream is truncated")
            x[idx] = (x[idx] << 16) | w[pos : pos + n]
            pos += n
    if pos != len(w):
        raise AnsFormatError("the word stream has trailing words")
    if (x < (1 << INITIAL_PAYLOAD_BITS)).any() or (x >= (1 << 32)).any():
        raise AnsFormatError("a lane did not return to a valid initial state")
    return out.ravel(), x.astype(np.uint32)
