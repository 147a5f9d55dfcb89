"""Formats and rounding: property tests against numpy's definitions, stochastic rounding unbiased,
saturation counted exactly, affine formats and fixed-point multipliers."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fo_edge.kernels.fixed import (ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, ROUND_TOWARD_ZERO, affine_params,
                                   dequantize_affine, fixed_multiplier, log2_exact, quantize_affine, quantize_array,
                                   round_div, round_shift, saturate, wrap)
from fo_edge.kernels.rng import new_state

from .strategies import mantissas, pow2, seeds


@given(x=mantissas, d=pow2)
def test_nearest_even_matches_numpy_rint(x, d):
    assert round_div(np.int64(x), np.int64(d), ROUND_NEAREST_EVEN, new_state(0)) == int(np.rint(x / d))


@given(x=mantissas, d=pow2)
def test_toward_zero_truncates_magnitude(x, d):
    assert round_div(np.int64(x), np.int64(d), ROUND_TOWARD_ZERO, new_state(0)) == int(np.trunc(x / d))


@given(x=mantissas, d=pow2, seed=seeds)
def test_stochastic_rounds_to_a_neighbour(x, d, seed):
    out = round_div(np.int64(x), np.int64(d), ROUND_STOCHASTIC, new_state(seed))
    assert out in (x // d, x // d + 1)
    if x % d == 0:
        assert out == x // d


@given(x=mantissas, d=pow2, mode=st.sampled_from([ROUND_NEAREST_EVEN, ROUND_TOWARD_ZERO, ROUND_STOCHASTIC]),
       seed=seeds)
def test_round_shift_equals_round_div_and_draws_the_same(x, d, mode, seed):
    """The shift-and-mask rounding of the hot loops gives round_div's result and leaves the RNG where it does."""
    state = new_state(seed)
    q, s = round_shift(np.int64(x), np.int64(log2_exact(np.int64(d))), mode, state[0])
    assert q == round_div(np.int64(x), np.int64(d), mode, state)
    assert s == state[0]


@given(d=st.integers(-5, 2**40))
def test_log2_exact_finds_powers_of_two_only(d):
    k = log2_exact(np.int64(d))
    assert (k >= 0) == (d > 0 and d & (d - 1) == 0)
    if k >= 0:
        assert 1 << k == d


@settings(max_examples=25, deadline=None)
@given(x=st.integers(-1000, 1000), k=st.integers(1, 8), seed=seeds)
def test_stochastic_rounding_is_unbiased(x, k, seed):
    d = 1 << k
    state = new_state(seed)
    n = 4000
    draws = np.array([round_div(np.int64(x), np.int64(d), ROUND_STOCHASTIC, state) for _ in range(n)])
    # mean of a Bernoulli(p) offset: standard error <= 0.5 / sqrt(n); allow 5 of them
    assert abs(draws.mean() - x / d) < 5 * 0.5 / np.sqrt(n)


@given(seed=seeds)
def test_stochastic_rounding_is_reproducible(seed):
    state = new_state(seed)
    a = [round_div(np.int64(7), np.int64(16), ROUND_STOCHASTIC, state) for _ in range(50)]
    state = new_state(seed)
    b = [round_div(np.int64(7), np.int64(16), ROUND_STOCHASTIC, state) for _ in range(50)]
    assert a == b


@given(values=st.lists(st.integers(-300, 300), min_size=1, max_size=64), bits=st.integers(2, 9))
def test_saturation_counts_are_exact(values, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    counters = np.zeros(9, dtype=np.int64)
    out = [saturate(np.int64(v), np.int64(lo), np.int64(hi), counters, 1) for v in values]
    assert out == [min(max(v, lo), hi) for v in values]
    assert counters[1] == sum(v < lo or v > hi for v in values)
    assert counters.sum() == counters[1]


@given(x=st.integers(-(2**20), 2**20), bits=st.integers(4, 16))
def test_wrap_is_twos_complement(x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    counters = np.zeros(9, dtype=np.int64)
    out = wrap(np.int64(x), np.int64(lo), np.int64(hi), counters, 2)
    expected = ((x - lo) % (1 << bits)) + lo
    assert out == expected and counters[2] == int(not lo <= x <= hi)


@given(values=st.lists(st.floats(-3, 3), min_size=1, max_size=50), frac=st.integers(0, 7))
def test_quantize_array_nearest_and_saturating(values, frac):
    x = np.array(values)
    out = np.zeros(len(x), dtype=np.int64)
    counters = np.zeros(9, dtype=np.int64)
    quantize_array(x, float(2**frac), -128, 127, ROUND_NEAREST_EVEN, new_state(0), out, counters, 0)
    expected = np.clip(np.rint(x * 2**frac), -128, 127)
    np.testing.assert_array_equal(out, expected)
    assert counters[0] == int(((np.rint(x * 2**frac) < -128) | (np.rint(x * 2**frac) > 127)).sum())


@given(values=st.lists(st.floats(-5, 5), min_size=2, max_size=50), symmetric=st.booleans())
def test_affine_roundtrip_within_half_a_step(values, symmetric):
    x = np.array(values)
    scale, zero_point = affine_params(float(x.min()), float(x.max()), 8, symmetric)
    q = quantize_affine(x, scale, zero_point, -128, 127)
    assert q.min() >= -128 and q.max() <= 127
    if symmetric:
        assert zero_point == 0
    np.testing.assert_allclose(dequantize_affine(q, scale, zero_point), x, atol=scale / 2 + 1e-12)


@given(factor=st.floats(1e-9, 1e3))
def test_fixed_multiplier_relative_precision(factor):
    m, k = fixed_multiplier(factor, bits=12)
    assert 2**11 <= m < 2**12
    assert abs(m / 2.0**k - factor) <= factor * 2.0**-11
