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


def _shortest(low: int, width: int, n: int) -> tuple[int, int]:
    """The dyadic number m / 2**k in [low, low + width) / 2**n with the fewest bits k: (m, k)."""
    if low == 0:
        return 0, 0
    # The multiples of 2**j in [low, high]: the largest j with one is one below the highest bit where
    # low - 1 and high differ, and there is exactly one (two would include a multiple of 2**(j + 1)).
    high = low + width - 1
    j = ((low - 1) ^ high).bit_length() - 1
    return high >> j, n - j


def encode(tables: FrequencyTables, symbols: np.ndarray) -> tuple[int, int]:
    """d symbols, each inside its table -> (m, k): the shortest code, the k-bit number m (m / 2**k)."""
    return _shortest(*_interval(tables, symbols), tables.bits)


def decode(tables: FrequencyTables, value: int, bits: int) -> np.ndarray:
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
    """
    q = np.clip(np.asarray(symbols, dtype=np.int64), tables.lo, tables.hi)
    low, width = _interval(tables, q)
    m, k = _shortest(low, width, tables.bits)
    steps = 0
    rows = np.arange(tables.dims)
    while k > budget:
        direction = np.sign(tables.mode - q)
        if not direction.any():
            raise ValueError(f"the most probable message needs {k} bits, more than {budget}")
        index = q - tables.lo + 1
        old = tables._padded[rows, index]
        gain = tables._padded[rows, index + direction] / old
        gain[direction == 0] = -1.0
        j = int(np.argmax(gain))
        width = width // int(old[j]) * int(tables._padded[j, index[j] + direction[j]])
        q[j] += direction[j]
        steps += 1
        if tables.bits - width.bit_length() + 1 <= budget + 3:
            m, k = encode(tables, q)
    return q, m, k, steps


def to_bytes(m: int, k: int, nbytes: int) -> bytes:
    """The k-bit code m as nbytes big-endian bytes: its bits first, most significant first, then zeros."""
    if k > 8 * nbytes:
        raise ValueError(f"a {k}-bit code does not fit in {nbytes} bytes")
    return (m << (8 * nbytes - k)).to_bytes(nbytes, "big")


def from_bytes(tables: FrequencyTables, data: bytes) -> np.ndarray:
    """Any bytes as the d symbols they code."""
    return decode(tables, int.from_bytes(data, "big"), 8 * len(data))


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
