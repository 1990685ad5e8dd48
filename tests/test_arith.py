"""The arithmetic coder of the "24xac" format (`app.codec.arith`): exact round trips, shortest codes,
any bytes decode, and lengths checked against a library coder (constriction's range coder)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec import arith


def random_tables(rng: np.random.Generator, dims: int, max_symbols: int = 40) -> arith.FrequencyTables:
    offsets, freqs = [], []
    for _ in range(dims):
        n = int(rng.integers(1, max_symbols + 1))
        pmf = rng.dirichlet(np.full(n, 0.5))
        offsets.append(int(rng.integers(-30, 10)))
        freqs.append(arith.quantise(pmf))
    return arith.FrequencyTables(offsets, freqs)


def random_symbols(rng: np.random.Generator, tables: arith.FrequencyTables) -> np.ndarray:
    return np.array(
        [o + rng.choice(len(f), p=np.array(f) / arith.TOTAL) for o, f in zip(tables.offsets, tables.freqs, strict=True)]
    )


def ideal_bits(tables: arith.FrequencyTables, symbols: np.ndarray) -> float:
    return float(
        sum(
            arith.PRECISION - np.log2(t[int(s) - o])
            for o, t, s in zip(tables.offsets, tables.freqs, symbols, strict=True)
        )
    )


@given(seed=st.integers(0, 2**32 - 1), dims=st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_round_trip_is_exact_and_the_code_is_at_most_one_bit_over_the_information(seed: int, dims: int) -> None:
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, dims)
    symbols = random_symbols(rng, tables)
    m, k = arith.encode_symbols(tables, symbols)
    assert k == 0 or m % 2 == 1  # the shortest code ends in a 1
    assert k <= ideal_bits(tables, symbols) + 1 + 1e-9
    nbytes = (k + 7) // 8 + int(rng.integers(0, 3))
    data = arith.code_to_bytes(m, k, nbytes)
    np.testing.assert_array_equal(arith.symbols_from_bytes(tables, data), symbols)


@given(data=st.binary(min_size=24, max_size=24))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_symbols_inside_the_tables(data: bytes) -> None:
    tables = random_tables(np.random.default_rng(7), 64)
    symbols = arith.symbols_from_bytes(tables, data)
    assert symbols.shape == (64,)
    assert ((symbols >= tables.lo) & (symbols <= tables.hi)).all()
    # and the symbols' own code decodes to them again
    m, k = arith.encode_symbols(tables, symbols)
    np.testing.assert_array_equal(
        arith.symbols_from_bytes(tables, arith.code_to_bytes(m, k, max(24, (k + 7) // 8))), symbols
    )


ENUMERABLE_BITS = 12  # every shorter bit string is tried: 2**12 decodes at most per length


def test_the_shortest_code_is_the_shortest() -> None:
    rng = np.random.default_rng(3)
    tables = random_tables(rng, 3, max_symbols=5)
    checked = 0
    for _ in range(200):
        symbols = random_symbols(rng, tables)
        _m, k = arith.encode_symbols(tables, symbols)
        if k > ENUMERABLE_BITS:
            continue  # 2**k strings to try: too many
        checked += 1
        # no shorter bit string decodes to the same symbols
        for shorter in range(k):
            assert not any((arith.decode_symbols(tables, v, shorter) == symbols).all() for v in range(1 << shorter)), (
                f"{symbols}: a {shorter}-bit string codes them, the coder sent {k} bits"
            )
    assert checked >= 150, f"only {checked} of 200 codes were short enough to check"


def test_lengths_against_constriction_range_coder() -> None:
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(11)
    ours, theirs = [], []
    for _ in range(300):
        tables = random_tables(rng, 64, max_symbols=16)
        symbols = random_symbols(rng, tables)
        probs = np.zeros((64, 16))
        for i, f in enumerate(tables.freqs):
            probs[i, : len(f)] = np.array(f) / arith.TOTAL
        encoder = constriction.stream.queue.RangeEncoder()
        model = constriction.stream.model.Categorical(perfect=False)
        index = (symbols - tables.lo).astype(np.int32)
        encoder.encode(index, model, probs)
        compressed = encoder.get_compressed()
        decoder = constriction.stream.queue.RangeDecoder(compressed)
        np.testing.assert_array_equal(decoder.decode(model, probs), index)
        ours.append(arith.encode_symbols(tables, symbols)[1])
        theirs.append(32 * len(compressed))
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    assert (ours_a <= theirs_a + 1).all()  # never more than a bit longer than the library's code
    assert theirs_a.mean() - ours_a.mean() > 8  # and on average far shorter: no 32-bit words to finish


def test_rate_control_moves_toward_the_modes_until_the_code_fits() -> None:
    rng = np.random.default_rng(5)
    tables = random_tables(rng, 64, max_symbols=20)
    mode_bits = arith.encode_symbols(tables, tables.mode)[1]
    budget = mode_bits + 20
    far = tables.hi.copy()  # the least probable end of every table, typically
    q, m, k, steps = arith.fit(tables, far, budget)
    assert k <= budget and steps > 0
    assert (np.abs(q - tables.mode) <= np.abs(far - tables.mode)).all()
    np.testing.assert_array_equal(arith.symbols_from_bytes(tables, arith.code_to_bytes(m, k, (budget + 7) // 8)), q)
    again = arith.fit(tables, far, budget)
    assert again[1:] == (m, k, steps) and (again[0] == q).all()  # deterministic


def test_rate_control_clamps_values_outside_the_tables() -> None:
    tables = arith.FrequencyTables([-1, 0], [arith.quantise(np.array([0.2, 0.6, 0.2])), [arith.TOTAL]])
    q, _m, _k, _steps = arith.fit(tables, np.array([100, -100]), 16)
    np.testing.assert_array_equal(q, [1, 0])


@pytest.mark.parametrize(
    ("offsets", "freqs", "message"),
    [
        ([0], [[arith.TOTAL - 1]], "sum to"),
        ([0], [[0, arith.TOTAL]], ">= 1"),
        ([0, 1], [[arith.TOTAL]], "one offset per table"),
    ],
)
def test_bad_tables_are_refused(offsets: list[int], freqs: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arith.FrequencyTables(offsets, freqs)


def fit_stepwise(tables: arith.FrequencyTables, symbols: np.ndarray, budget: int) -> tuple[np.ndarray, int, int, int]:
    """The rate control as it was until issue 16, one step at a time: the reference `fit` must agree with."""
    q = np.clip(np.asarray(symbols, dtype=np.int64), tables.lo, tables.hi)
    low, width = arith._interval(tables, q)
    m, k = arith._shortest(low, width, tables.bits)
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
            m, k = arith.encode_symbols(tables, q)
    return q, m, k, steps


@pytest.mark.parametrize("seed", range(6))
def test_planned_rate_control_takes_the_same_steps_as_the_stepwise_one(seed: int) -> None:
    """Random tables (ties among gains included: few symbols, repeated tables), rows far off the modes."""
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, 64, max_symbols=int(rng.integers(3, 40)))
    if seed % 2:  # identical tables: equal gains in many dimensions, so the tie rule matters
        tables = arith.FrequencyTables([tables.offsets[0]] * 64, [tables.freqs[0]] * 64)
    budget = arith.encode_symbols(tables, tables.mode)[1] + int(rng.integers(0, 40))
    rows = rng.integers(tables.lo - 5, tables.hi + 6, (40, 64))
    q, ms, ks, steps, evaluations = arith.fit_many(tables, rows, budget)
    for i, row in enumerate(rows):
        want = fit_stepwise(tables, row, budget)
        assert (q[i] == want[0]).all() and (ms[i], ks[i], int(steps[i])) == want[1:]
        assert (arith.fit(tables, row, budget)[0] == want[0]).all()
    assert (evaluations >= 1).all()


def test_rate_control_cost_is_bounded_for_hostile_latents() -> None:
    """The committed ec64 on noise: ~100 steps a digit, but the exact code length is computed only
    where the width bound allows a fit (a count, not a time: at most 16 evaluations a digit)."""
    from pathlib import Path

    from app.codec.codecs import load_codec

    codec = load_codec(Path(__file__).parent.parent / "model_weights" / "ec64" / "ec64.safetensors", "cpu")
    tables = codec.format.tables  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 784), dtype=np.uint8)
    noise[::2] = (noise[::2] > 127) * 255
    z = np.rint(codec.engine.forward_encoder(noise).astype(np.float64)).astype(np.int64)
    q, _ms, ks, steps, evaluations = arith.fit_many(tables, z, 192)
    assert max(ks) <= 192 and steps.mean() > 50  # hostile indeed: the old loop took every one of these steps
    assert evaluations.max() <= 16 and evaluations.mean() < 8
    for i in range(0, 200, 20):
        assert (fit_stepwise(tables, z[i], 192)[0] == q[i]).all()
