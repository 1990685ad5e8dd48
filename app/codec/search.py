"""Encode effort: search for the latent the decoder reads best (issue 16).

Level 0 is the encoder's single pass, byte for byte what the service always sent. A level
above 0 starts from the encoder's latent and searches, with the decoder and the prior
held fixed, for a latent in the same wire format that decodes closer to the digit:

1. `steps` of Adam on the latent, with straight-through rounding to what the format can
   carry (ec64: integers inside the frequency tables; mlp24: the 1/255 grid in [0, 1];
   mlp6: float32 values). The loss is log MSE; for ec64 plus `RATE_WEIGHT` per bit of a
   differentiable code length (the frozen integer tables' -log2 f / 2**16, linearly
   interpolated between integers) above `HINGE_BITS`. The best rounded point seen is kept.
2. For ec64, the exact rate control (`arith.fit`), so the code is at most 192 bits.
3. `sweeps` greedy sweeps of +-1 grid step: every single move is tried, then the best k
   improving ones together (k = 1, 2, 4, ...); a move is allowed only where a bound on the
   code length that is never exceeded says it fits (ceil(information) + 1 <= 192 bits).
4. The encoder's own latent (level 0's) is kept where the search did not beat it.

The decoder never needs to know which level made the bytes.

Determinism. A search's rounding decisions and greedy comparisons could turn a 1e-16
difference in a float64 sum (BLAS picks other kernels, and so other summation orders,
for other batch sizes) into another byte. So every sum the search makes is exact: the
left operand of every matrix product is first rounded to `ROW_BITS` significant bits
relative to its row's largest value (a power-of-two grid per row), every weight matrix
to `WEIGHT_BITS` bits relative to its largest entry, and code lengths are summed as
integers. A product of two such numbers is an integer of at most 2**(ROW_BITS +
WEIGHT_BITS) = 2**42 grid units, a sum of at most 1024 of them below 2**52: float64
holds every partial sum exactly, so any order, kernel, batch or thread count gives the
same bits. Everything else is element-wise IEEE arithmetic, the same for a row wherever
it sits. A digit's bytes thus depend on the digit, the weights and the level alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.codec import arith, latent
from app.codec.engine import Layer, backward, forward, forward_trace

ROW_BITS = 20  # significant bits of a matrix product's left operand, per row
WEIGHT_BITS = 22  # significant bits of a weight matrix
HINGE_BITS = 186  # ec64: code lengths above this are charged in the search's loss
RATE_WEIGHT = 0.1  # ec64: loss (log MSE) per bit above the hinge
FIXED = 1 << 24  # ec64: code lengths summed as integers in units of 2**-24 bit
CHUNK = 128  # digits searched together (any size gives the same bytes; this one bounds memory)
SWEEP_CHUNK = 16  # digits whose candidates are evaluated together in a sweep


@dataclass(frozen=True)
class Effort:
    level: int  # 0..E; level 0 is today's single pass, byte for byte
    steps: int  # gradient steps (0 for level 0)
    sweeps: int  # final greedy sweeps (0 if none)
    cost: int  # decoder evaluations per digit (forward and backward count as one); a request's work is items x cost
    psnr_db: float | None  # measured on the 10,000 test digits as served (None until measured)
    us_per_digit: float | None  # one digit alone, one core (None until measured)


@dataclass(frozen=True)
class Recipe:
    """What a level does: Adam's steps (step size `lr` decaying to `lr_end`, cosine), then greedy sweeps."""

    steps: int
    sweeps: int = 0
    lr: float = 0.0  # in grid steps (ec64, mlp24) or latent units (mlp6)
    lr_end: float = 0.0
    candidates: int = 1 << 30  # moves a sweep judges exactly: the ones the gradient favours (all by default)


# By latent format: the units of a step differ (ec64 integers, mlp24 1/255, mlp6 raw values).
RECIPES: dict[str, list[Recipe]] = {
    # ec64, first 200 test digits, in batch: 26.81 / 28.15 / 28.68 / 29.46 dB (tuned on them: lr 0.6 -> 0.2 was +0.6 dB)
    "24xac": [Recipe(0), Recipe(10, 0, 0.3, 0.05), Recipe(20, 0, 0.2, 0.05), Recipe(40, 2, 0.2, 0.05, 8)],
    # mlp24: 1/255 grid steps; a large step helps (lr 0.5 -> 5: +0.56 dB at 20 steps), sweeps add 0.01 dB,
    # annealed rounding and restarts nothing; steps do (first 300: 40 / 100 / 150 steps 25.09 / 25.16 / 25.18 dB)
    "24xu8": [Recipe(0), Recipe(10, 0, 5.0, 0.5), Recipe(20, 0, 5.0, 0.5), Recipe(150, 0, 6.0, 0.05)],
    "6xf32le": [Recipe(0), Recipe(10, 0, 0.5, 0.05), Recipe(30, 0, 0.5, 0.02), Recipe(100, 0, 0.5, 0.01)],
}


def cost_of(recipe: Recipe, dims: int) -> int:
    """Decoder evaluations per digit: the encoder's pass, the steps, each sweep's candidates and combinations."""
    if recipe.steps == 0 and recipe.sweeps == 0:
        return 1
    judged = 2 * dims if recipe.candidates >= 2 * dims else recipe.candidates + 1  # + 1: the gradient
    per_sweep = judged + math.ceil(math.log2(min(recipe.candidates, 2 * dims))) + 1
    return 1 + recipe.steps + 1 + recipe.sweeps * per_sweep + 1


# --------------------------------------------------------------------------- exact sums


def snap_rows(a: np.ndarray, bits: int = ROW_BITS) -> np.ndarray:
    """Each row rounded to a grid of 2**(e - bits), 2**e > its largest magnitude: at most 2**bits units.

    By adding and subtracting c = 1.5 * 2**(52 + e - bits): a + c lies in a binade whose float64
    spacing is the grid's, so the addition rounds to the grid (halves to even, as numpy's rint).
    """
    top = np.abs(a).max(axis=-1, keepdims=True)
    c = np.ldexp(1.5, np.frexp(top)[1] + (52 - bits))  # frexp: top < 2**e (e = 0 for a row of zeros)
    out: np.ndarray = a + c
    out -= c
    return out


def snap_matrix(w: np.ndarray, bits: int = WEIGHT_BITS) -> np.ndarray:
    exponent = int(np.frexp(np.max(np.abs(w)))[1])
    out: np.ndarray = np.ldexp(np.rint(np.ldexp(w, bits - exponent)), exponent - bits)
    return out


def _square_sum(d: np.ndarray) -> np.ndarray:
    """sum(d**2) per row, exactly: d is snapped first (2**40 units a square, 784 of them < 2**50)."""
    e = snap_rows(d)
    out: np.ndarray = np.maximum(np.einsum("ij,ij->i", e, e), 1e-300)
    return out


class SearchDecoder(Protocol):
    def loss(self, z: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(N, dims) decoder inputs, (N, 784) pixels in [0, 1] -> (N,) sum of squared errors."""
        ...

    def loss_grad(self, z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (the (N,) sums of squared errors, the (N, dims) gradient of their logarithm)."""
        ...


class NumpyDecoder:
    """The decoder's layers, with every product exact (module docstring): the numpy engine's search."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers: list[Layer] = [
            (snap_matrix(layer[0]), layer[1]) if isinstance(layer, tuple) else layer for layer in layers
        ]

    def loss(self, z: np.ndarray, target: np.ndarray) -> np.ndarray:
        return _square_sum(forward(self.layers, z, snap_rows) - target)

    def loss_grad(self, z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, trace = forward_trace(self.layers, z, snap_rows)
        d = snap_rows(y - target)
        s = _square_sum(d)
        return s, backward(self.layers, trace, d * (2.0 / s)[:, np.newaxis], snap_rows)


# --------------------------------------------------------------------------- what a format can carry


class Space:
    """The points a latent format carries, in search units: a grid of integers (lo..hi) or plain values."""

    def __init__(self, fmt: latent.LatentFormat) -> None:
        self.dims = fmt.dims
        self.tables: arith.FrequencyTables | None = None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.unit = 1.0  # decoder input per search unit
        if isinstance(fmt, latent.ArithmeticCodedFormat):
            self.tables = fmt.tables
            self.budget = fmt.budget
            self.lo, self.hi = fmt.tables.lo.astype(np.float64), fmt.tables.hi.astype(np.float64)
            width = max(len(t) for t in fmt.tables.freqs)
            bits = np.full((self.dims, width), np.inf)
            for i, table in enumerate(fmt.tables.freqs):
                bits[i, : len(table)] = arith.PRECISION - np.log2(np.array(table, dtype=np.float64))
            self.bits = bits  # code length of symbol s of latent i: bits[i, s - lo_i]
            self.sizes = np.array([len(t) for t in fmt.tables.freqs])
            finite = np.where(np.isfinite(bits), bits, 0.0)
            self.fixed = (np.ceil(finite * FIXED) + 1).astype(np.int64)  # rounded up: a bound
            self.rows = np.arange(self.dims)
        elif isinstance(fmt, latent.UInt8Format):
            self.lo, self.hi = np.zeros(self.dims), np.full(self.dims, float(fmt.levels))
            self.unit = 1.0 / fmt.levels
            self.levels = fmt.levels

    @property
    def grid(self) -> bool:
        return self.lo is not None

    def to_units(self, z: np.ndarray) -> np.ndarray:
        """The encoder's (N, dims) float32 output in search units."""
        u = z.astype(np.float64) / self.unit
        out: np.ndarray = u if self.lo is None else np.clip(u, self.lo, self.hi)
        return out

    def point(self, u: np.ndarray) -> np.ndarray:
        """Straight-through rounding: the point the format would carry."""
        if self.lo is None:
            return u.astype(np.float32).astype(np.float64)
        out: np.ndarray = np.clip(np.rint(u), self.lo, self.hi)
        return out

    def decoder_input(self, q: np.ndarray) -> np.ndarray:
        """What the decoder is given for a point, exactly as the format's unpacking gives it."""
        if self.tables is not None or self.lo is None:
            return q
        return (q.astype(np.float32) / np.float32(self.levels)).astype(np.float64)

    def values(self, q: np.ndarray) -> np.ndarray:
        """A point as the values the format packs (`LatentFormat.pack_many`)."""
        if self.tables is not None or self.lo is None:
            return q
        return q / self.levels

    # ec64's code length ------------------------------------------------------------------

    def code_fixed(self, q: np.ndarray) -> np.ndarray:
        """(N,) sums of the rounded-up code lengths, in 2**-24 bit (exact integers)."""
        assert self.lo is not None
        index = (q - self.lo).astype(np.int64)
        out: np.ndarray = self.fixed[self.rows, index].sum(axis=-1)
        return out

    def fits(self, q: np.ndarray) -> np.ndarray:
        """A bound never exceeded: ceil(information) + 1 <= budget bits, so the exact code fits."""
        if self.tables is None:
            return np.ones(q.shape[:-1], dtype=bool)
        out: np.ndarray = self.code_fixed(q) <= (self.budget - 1) * FIXED
        return out

    def rate_slope(self, u: np.ndarray) -> np.ndarray:
        """d(code length)/du of the code length interpolated linearly between integers."""
        assert self.lo is not None
        j = np.clip(np.floor(u) - self.lo, 0, np.maximum(self.sizes - 2, 0)).astype(np.int64)
        upper = np.minimum(j + 1, self.sizes - 1)
        out: np.ndarray = self.bits[self.rows, upper] - self.bits[self.rows, j]
        return out

    def fit(self, q: np.ndarray) -> np.ndarray:
        """The exact rate control, row by row (a no-op for the other formats)."""
        if self.tables is None:
            return q
        return arith.fit_many(self.tables, q.astype(np.int64), self.budget)[0].astype(np.float64)


# --------------------------------------------------------------------------- the search


def search(decoder: SearchDecoder, space: Space, recipe: Recipe, pixels: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, 784) uint8 digits and the encoder's (N, dims) float32 latents -> (N, dims) values to pack."""
    out = [
        _search_chunk(decoder, space, recipe, pixels[i : i + CHUNK], z[i : i + CHUNK])
        for i in range(0, len(pixels), CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros((0, space.dims))


def _search_chunk(
    decoder: SearchDecoder, space: Space, recipe: Recipe, pixels: np.ndarray, z: np.ndarray
) -> np.ndarray:
    target = pixels.astype(np.float64) / 255.0
    u0 = space.to_units(z)
    best, _ = _adam(decoder, space, recipe, target, u0)
    # Level 0's point, through the same rate control as the search's best.
    start = space.fit(space.point(u0))
    start_s = decoder.loss(space.decoder_input(start), target)
    searched = space.fit(best)
    searched_s = decoder.loss(space.decoder_input(searched), target)
    if space.grid:
        for _ in range(recipe.sweeps):
            searched, searched_s = _sweep(decoder, space, target, searched, searched_s, recipe.candidates)
    keep = (searched_s < start_s)[:, np.newaxis]
    return space.values(np.where(keep, searched, start))


def _adam(
    decoder: SearchDecoder, space: Space, recipe: Recipe, target: np.ndarray, u0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Adam on the latent with straight-through rounding; the best rounded point that fits, and its loss."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    u = u0.copy()
    m, v = np.zeros_like(u), np.zeros_like(u)
    best = space.point(u)
    best_s = np.full(len(u), np.inf)
    for t in range(recipe.steps + 1):
        q = space.point(u)
        if t == recipe.steps:  # the last update's point: judged, not followed
            s = decoder.loss(space.decoder_input(q), target)
        else:
            s, g = decoder.loss_grad(space.decoder_input(q), target)
            g = g * space.unit
            if space.tables is not None:
                over = space.code_fixed(q) > HINGE_BITS * FIXED
                g = g + RATE_WEIGHT * over[:, np.newaxis] * space.rate_slope(u)
        better = (s < best_s) & space.fits(q)
        best = np.where(better[:, np.newaxis], q, best)
        best_s = np.where(better, s, best_s)
        if t == recipe.steps:
            break
        cosine = 0.5 * (1.0 + math.cos(math.pi * t / max(recipe.steps - 1, 1)))
        lr = recipe.lr_end + (recipe.lr - recipe.lr_end) * cosine
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        m_hat = m / (1.0 - beta1 ** (t + 1))
        v_hat = v / (1.0 - beta2 ** (t + 1))
        u = u - lr * m_hat / (np.sqrt(v_hat) + eps)
        if space.lo is not None:
            u = np.clip(u, space.lo, space.hi)
    return best, best_s


def _sweep(
    decoder: SearchDecoder, space: Space, target: np.ndarray, q: np.ndarray, s: np.ndarray, candidates: int
) -> tuple[np.ndarray, np.ndarray]:
    parts = [
        _sweep_chunk(
            decoder, space, target[i : i + SWEEP_CHUNK], q[i : i + SWEEP_CHUNK], s[i : i + SWEEP_CHUNK], candidates
        )
        for i in range(0, len(q), SWEEP_CHUNK)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _sweep_chunk(
    decoder: SearchDecoder, space: Space, target: np.ndarray, q: np.ndarray, s: np.ndarray, candidates: int
) -> tuple[np.ndarray, np.ndarray]:
    """One greedy sweep: the `candidates` +-1 moves the gradient favours most, each judged exactly,
    then the best k improving ones together (k = 1, 2, 4, ...)."""
    assert space.lo is not None and space.hi is not None
    n, d = q.shape
    rows = np.arange(n)[:, np.newaxis]
    if candidates >= 2 * d:  # every move
        dims = np.tile(np.concatenate([np.arange(d), np.arange(d)]), (n, 1))
        steps = np.tile(np.concatenate([np.ones(d), -np.ones(d)]), (n, 1))
    else:  # the moves down the gradient, steepest first
        _, g = decoder.loss_grad(space.decoder_input(q), target)
        g = g * space.unit
        if space.tables is not None:
            over = space.code_fixed(q) > HINGE_BITS * FIXED
            g = g + RATE_WEIGHT * over[:, np.newaxis] * space.rate_slope(q)
        dims = np.argsort(-np.abs(g), axis=1, kind="stable")[:, :candidates]
        steps = -np.sign(np.take_along_axis(g, dims, axis=1))
        steps[steps == 0] = 1.0
    m = dims.shape[1]
    moved = np.repeat(q[:, np.newaxis, :], m, axis=1)  # (n, m, d)
    moved[rows, np.arange(m)[np.newaxis], dims] += steps
    inside = ((moved >= space.lo) & (moved <= space.hi)).all(axis=-1)
    flat = np.clip(moved, space.lo, space.hi).reshape(n * m, d)
    ok = inside.reshape(-1) & space.fits(flat)
    loss = decoder.loss(space.decoder_input(flat), np.repeat(target, m, axis=0))
    gain = s[:, np.newaxis] - np.where(ok, loss, np.inf).reshape(n, m)  # > 0: the move improves
    # Per latent only its better move, then the moves by gain.
    best_for_dim = np.full((n, d), -np.inf)
    np.maximum.at(best_for_dim, (np.repeat(np.arange(n), m), dims.reshape(-1)), gain.reshape(-1))
    gain = np.where(gain >= np.take_along_axis(best_for_dim, dims, axis=1), gain, -np.inf)
    # The first of two equal moves of one latent (+1 and -1 alike) is kept.
    order = np.argsort(-gain, axis=1, kind="stable")
    ranked_gain = np.take_along_axis(gain, order, axis=1)
    ranked_dim = np.take_along_axis(dims, order, axis=1)
    ranked_step = np.take_along_axis(steps, order, axis=1)
    first = np.ones_like(ranked_gain, dtype=bool)
    for j in range(1, m):  # a latent whose move appears twice (equal gains): only the first
        first[:, j] = ~(ranked_dim[:, :j] == ranked_dim[:, j : j + 1]).any(axis=1)
    ranked_gain = np.where(first, ranked_gain, -np.inf)
    trials, used = [], []
    k = 1
    while k <= m:
        use = (np.arange(m) < k)[np.newaxis] & (ranked_gain > 0)
        step = np.zeros_like(q)
        np.add.at(
            step, (np.repeat(np.arange(n), m), ranked_dim.reshape(-1)), np.where(use, ranked_step, 0.0).reshape(-1)
        )
        trials.append(q + step)
        used.append(use.any(axis=1))
        k *= 2
    t = len(trials)
    tried = np.stack(trials, axis=1)  # (n, t, d)
    flat = tried.reshape(-1, d)
    ok = space.fits(flat) & ((flat >= space.lo) & (flat <= space.hi)).all(axis=-1) & np.stack(used, axis=1).reshape(-1)
    tried_loss = np.where(ok, decoder.loss(space.decoder_input(flat), np.repeat(target, t, axis=0)), np.inf)
    tried_loss = tried_loss.reshape(n, t)
    pick = np.argmin(tried_loss, axis=1)
    picked_loss = tried_loss[np.arange(n), pick]
    improve = picked_loss < s
    new_q = np.where(improve[:, np.newaxis], tried[np.arange(n), pick], q)
    return new_q, np.where(improve, picked_loss, s)


def space_and_recipes(fmt: latent.LatentFormat) -> tuple[Space, list[Recipe]]:
    return Space(fmt), RECIPES[fmt.name]
