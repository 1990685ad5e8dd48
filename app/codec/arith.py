"""An exact arithmetic coder over integer frequency tables, for short fixed-size messages.

Written for the "24xac" latent format (`app.codec.latent`): d integer symbols, one per
latent dimension, each under its own frequency table, coded into at most 192 bits.

The tables. Dimension i has `n_i` symbols, the values `offset_i .. offset_i + n_i - 1`,
with integer frequencies f_i[s] >= 1 that sum to 2**PRECISION (16 bits). The cumulative
frequency c_i[s] is the sum of f_i below s. Every table is fixed when the model is
trained and stored, as integers, in its checkpoint: no floating point touches the coder.

The code. The symbols s_0 .. s_{d-1} pick, one after the other, a sub-interval of [0, 1):
with n = PRECISION * d,

    low   = sum_i c_i[s_i] * prod_{j<i} f_j[s_j] * 2**(PRECISION * (d - 1 - i))
    width = prod_i f_i[s_i]

and the message is the interval [low, low + width) / 2**n. Python's integers are exact,
so the interval is kept whole (no renormalisation, no carries, no precision loss). The
code is the dyadic number m / 2**k in that interval with the fewest bits k; it is unique
and, for k > 0, m is odd, so the code's last bit is a 1. Its length is never more than
ceil(-log2(width / 2**n)) + 1 bits: the information content under the tables, plus at
most one. (A coder that emits whole 32-bit words, like constriction's range coder, spends
17 more bits on average at this size, and up to 33.)

Decoding reads the number v / 2**B (B = 8 * the number of bytes) and, for i = 0 .. d-1,
finds the symbol whose sub-interval holds it: t = floor((v / 2**B - low) / width * 2**16)
in exact integers, then the s with c_i[s] <= t < c_i[s + 1]. Every number in [0, 1) lies
in exactly one sub-interval at every step, so any B bits decode to d symbols, in exactly
d steps: there is no end marker and nothing to search for.
"""

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

PRECISION = 16  # bits of every frequency table: the frequencies of a dimension sum to 2**16
TOTAL = 1 << PRECISION


class FrequencyTables:
    """The d integer frequency tables of a model, checked; the coder's only input besides the symbols."""

    def __init__(self, offsets: Sequence[int], freqs: Sequence[Sequence[int]]) -> None:
        if len(offsets) != len(freqs) or not freqs:
            raise ValueError(f"expected one offset per table, got {len(offsets)} offsets and {len(freqs)} tables")
        self.offsets = [int(o) for o in offsets]
        self.freqs = [[int(f) for f in table] for table in freqs]
        self.cums: list[list[int]] = []
        for i, table in enumerate(self.freqs):
            if not table or min(table) < 1 or sum(table) != TOTAL:
                raise ValueError(f"table {i}: frequencies must be >= 1 and sum to 2**{PRECISION}")
            cum = [0]
            for f in table:
                cum.append(cum[-1] + f)
            self.cums.append(cum)
        self.pairs = [list(zip(cum, table, strict=False)) for cum, table in zip(self.cums, self.freqs, strict=True)]
        self.dims = len(self.freqs)
        self.bits = PRECISION * self.dims
        self.lo = np.array(self.offsets, dtype=np.int64)
        self.hi = np.array([o + len(t) - 1 for o, t in zip(self.offsets, self.freqs, strict=True)], dtype=np.int64)
        # The most probable value of each dimension (the lowest, if several are).
        self.mode = np.array([o + t.index(max(t)) for o, t in zip(self.offsets, self.freqs, strict=True)], np.int64)
        # Frequencies as float64, padded with a 0 column either side: index [i, s + 1] for symbol s.
        width = max(len(t) for t in self.freqs)
        self._padded = np.zeros((self.dims, width + 2), dtype=np.float64)
        for i, table in enumerate(self.freqs):
            self._padded[i, 1 : len(table) + 1] = table

    @classmethod
    def from_arrays(cls, offsets: np.ndarray, freqs: np.ndarray) -> "FrequencyTables":
        """From a (d,) offset array and a (d, W) frequency array whose rows end in zero padding."""
        rows = [[int(f) for f in row[: int(np.count_nonzero(row))]] for row in np.asarray(freqs)]
        return cls([int(o) for o in np.asarray(offsets)], rows)


def _interval(tables: FrequencyTables, symbols: np.ndarray) -> tuple[int, int]:
    """The message's interval [low, low + width) / 2**(16 d), exactly."""
    index = np.asarray(symbols, dtype=np.int64) - tables.lo
    if index.shape != (tables.dims,) or (index < 0).any() or (index > tables.hi - tables.lo).any():
        raise ValueError(f"expected {tables.dims} symbols, each inside its table")
    low, width = 0, 1
    for s, cum, freqs in zip(index.tolist(), tables.cums, tables.freqs, strict=True):
        low = (low << PRECISION) + cum[s] * width
        width *= freqs[s]
    return low, width


def _interval_of(tables: FrequencyTables, symbols: np.ndarray) -> tuple[int, int]:
    """`_interval` for symbols known to lie inside their tables (the hot path of rate control)."""
    low, width = 0, 1
    for s, pairs in zip((symbols - tables.lo).tolist(), tables.pairs, strict=True):
        c, f = pairs[s]
        low = (low << PRECISION) + c * width
        width *= f
    return low, width


def _shortest(low: int, width: int, n: int) -> tuple[int, int]:
    """The dyadic number m / 2**k in [low, low + width) / 2**n with the fewest bits k: (m, k)."""
    if low == 0:
        return 0, 0
    # The multiples of 2**j in [low, high]: the largest j with one is one below the highest bit where
    # low - 1 and high differ, and there is exactly one (two would include a multiple of 2**(j + 1)).
    high = low + width - 1
    j = ((low - 1) ^ high).bit_length() - 1
    return high >> j, n - j


def encode_symbols(tables: FrequencyTables, symbols: np.ndarray) -> tuple[int, int]:
    """d symbols, each inside its table -> (m, k): the shortest code, the k-bit number m (m / 2**k)."""
    return _shortest(*_interval(tables, symbols), tables.bits)


def decode_symbols(tables: FrequencyTables, value: int, bits: int) -> np.ndarray:
    """The d symbols of the number value / 2**bits, for any 0 <= value < 2**bits."""
    if not 0 <= value < (1 << bits):
        raise ValueError(f"value must be a {bits}-bit number")
    # With x = value / 2**bits and the interval so far [low, low + width) / 2**(16 i):
    # rest = (x - low / 2**(16 i)) * 2**(16 i + bits), in [0, width * 2**bits), and the next
    # table's cumulative target is t = floor(rest * 2**16 / (width * 2**bits)), in [0, 2**16).
    rest, scaled_width = value, 1 << bits
    out = []
    for cum, freqs in zip(tables.cums, tables.freqs, strict=True):
        rest <<= PRECISION
        s = bisect_right(cum, rest // scaled_width) - 1
        out.append(s)
        rest -= cum[s] * scaled_width
        scaled_width *= freqs[s]
    return np.array(out, dtype=np.int64) + tables.lo


def fit(tables: FrequencyTables, symbols: np.ndarray, budget: int) -> tuple[np.ndarray, int, int, int]:
    """Rate control: the symbols, clamped to the tables and moved toward the modes until the code fits.

    Each step moves one dimension one value toward its mode: the dimension whose step multiplies
    the message's probability most, f[new] / f[old] (a correctly rounded float64 division of two
    integers below 2**16, so the same everywhere; ties go to the lowest dimension). Before the
    first step, and after any step that leaves the interval's width w with n - bitlen(w) + 1
    <= budget + 3 (n = 16 d; the code is never longer than n - bitlen(w) + 1 bits), the exact
    code length is computed; the steps stop as soon as it is at most `budget` bits, at the latest
    at the all-mode message, which the caller guarantees fits. Returns (symbols, m, k, steps).

    The steps are planned, not taken one by one (`fit_many`): same result, bounded cost.
    """
    q, m, k, steps, _ = fit_many(tables, np.asarray(symbols)[np.newaxis], budget)
    return q[0], m[0], k[0], int(steps[0])


PLAN_ROWS = 64  # rows whose moves are planned together (bounds the planning arrays' memory)


def fit_many(
    tables: FrequencyTables, symbols: np.ndarray, budget: int
) -> tuple[np.ndarray, list[int], list[int], np.ndarray, np.ndarray]:
    """`fit` for (N, d) symbols: (symbols, codes m, lengths k, steps, exact code-length evaluations), per row.

    The order in which `fit`'s steps move the dimensions is known in advance: dimension i's
    moves toward its mode have the gains g_i1, g_i2, ... and the greedy takes, at each step,
    the largest gain among the dimensions' next moves (ties: the lowest dimension). That is the
    order of all moves sorted by the running minimum of each dimension's gains, largest first,
    then by dimension, then by position (a move never precedes the ones before it on its
    dimension, and after a small gain a dimension's larger gains follow it at once). The code
    length is then computed exactly only at the steps where the width bound allows a fit,
    found from the running sum of log2 gains (with a margin, so no such step is missed).
    """
    q = np.clip(np.asarray(symbols, dtype=np.int64), tables.lo, tables.hi)
    out = q.copy()
    ms, ks = [0] * len(q), [0] * len(q)
    steps = np.zeros(len(q), dtype=np.int64)
    evaluations = np.ones(len(q), dtype=np.int64)
    widths: dict[int, int] = {}
    if q.ndim != 2 or q.shape[1] != tables.dims:
        raise ValueError(f"expected rows of {tables.dims} symbols, got an array of shape {q.shape}")
    for r, row in enumerate(q):
        low, width = _interval_of(tables, row)
        ms[r], ks[r] = _shortest(low, width, tables.bits)
        if ks[r] > budget:
            widths[r] = width
    need = np.array(sorted(widths), dtype=np.int64)
    for start in range(0, len(need), PLAN_ROWS):
        rows = need[start : start + PLAN_ROWS]
        dims, direction, log_gain = _plan(tables, q[rows])
        for j, r in enumerate(rows.tolist()):
            out[r], ms[r], ks[r], steps[r], checks = _first_fit(
                tables, q[r], direction[j], dims[j], log_gain[j], widths[r], budget
            )
            evaluations[r] += checks
    return out, ms, ks, steps, evaluations


def _plan(tables: FrequencyTables, q: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """For each row: the dimensions in the order `fit` moves them, the direction of each dimension,
    and the log2 gain of each move, in that order."""
    rows, dims = q.shape
    direction = np.sign(tables.mode - q)  # (R, d)
    length = np.abs(tables.mode - q).reshape(-1)
    owner = np.repeat(np.arange(rows * dims), length)  # each move's (row, dimension), row-major
    start = np.cumsum(length) - length
    position = np.arange(len(owner)) - start[owner] + 1  # 1 for a dimension's first move
    dim = owner % dims
    step = direction.reshape(-1)[owner]
    after = q.reshape(-1)[owner] + step * position - tables.lo[dim] + 1  # index into the padded table
    gain = tables._padded[dim, after] / tables._padded[dim, after - step]
    # The running minimum of each dimension's gains, then the moves by it (largest first), by row: two
    # stable sorts, from the moves' order by (row, dimension, position), which breaks the ties as `fit` does.
    most = int(length.max())
    table = np.full((rows * dims, most), np.inf)
    table[owner, position - 1] = gain
    running = np.minimum.accumulate(table, axis=1)[owner, position - 1]
    by_gain = np.argsort(-running, kind="stable")
    order = by_gain[np.argsort(owner[by_gain] // dims, kind="stable")]
    counts = np.cumsum(length.reshape(rows, dims).sum(axis=1))[:-1]
    return (
        np.split(dim[order], counts),
        direction,
        np.split(np.log2(gain)[order], counts),
    )


def _first_fit(
    tables: FrequencyTables,
    q: np.ndarray,
    direction: np.ndarray,
    dims: np.ndarray,
    log_gain: np.ndarray,
    width: int,
    budget: int,
) -> tuple[np.ndarray, int, int, int, int]:
    """The first step of the plan at which `fit` would stop: (symbols, m, k, steps, exact evaluations)."""
    threshold = tables.bits - budget - 3  # fit checks when log2(width) >= this (bitlen(w) >= n - budget - 2)
    estimate = math.log2(width) + np.cumsum(log_gain)
    k = budget + 1
    for checks, t in enumerate(np.flatnonzero(estimate >= threshold - 1e-6).tolist(), 1):
        moved = q + direction * np.bincount(dims[: t + 1], minlength=tables.dims)
        low, width = _interval_of(tables, moved)
        if tables.bits - width.bit_length() + 1 <= budget + 3:
            m, k = _shortest(low, width, tables.bits)
            if k <= budget:
                return moved, m, k, t + 1, checks
    raise ValueError(f"the most probable message needs {k} bits, more than {budget}")


def code_to_bytes(m: int, k: int, nbytes: int) -> bytes:
    """The k-bit code m as nbytes big-endian bytes: its bits first, most significant first, then zeros."""
    if k > 8 * nbytes:
        raise ValueError(f"a {k}-bit code does not fit in {nbytes} bytes")
    return (m << (8 * nbytes - k)).to_bytes(nbytes, "big")


def symbols_from_bytes(tables: FrequencyTables, data: bytes) -> np.ndarray:
    """Any bytes as the d symbols they code."""
    return decode_symbols(tables, int.from_bytes(data, "big"), 8 * len(data))


def quantise(pmf: np.ndarray) -> list[int]:
    """Probabilities (summing to 1) -> integer frequencies >= 1 summing to 2**PRECISION.

    Each symbol gets 1 + floor(p * (2**16 - n)); what is left goes to the most probable symbol.
    """
    n = len(pmf)
    if not 1 <= n <= TOTAL // 2:
        raise ValueError(f"cannot quantise {n} symbols to {PRECISION} bits")
    freqs = 1 + np.floor(np.clip(pmf, 0.0, 1.0) * (TOTAL - n)).astype(np.int64)
    freqs[int(np.argmax(freqs))] += TOTAL - int(freqs.sum())
    return [int(f) for f in freqs]
