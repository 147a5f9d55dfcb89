"""Layer kernels' fast paths against their plain definitions: the float32 BLAS path of exact_matmul against
int64 sums, the sparse integer update against the dense visit of every weight, the few-row forward against
the BLAS forward, the step's cached float32 copy of W against converting it on every call."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fo_edge.device import load_device
from fo_edge.kernels.counters import COUNTERS
from fo_edge.kernels.fixed import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, ROUND_TOWARD_ZERO
from fo_edge.kernels.linear import (FLOAT32_EXACT, cached_layer_forward_, effective_macs, effective_macs_transposed,
                                   exact_matmul, layer_forward_)
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.update import _dense_update_, _integer_update_
from fo_edge.models import init_weights
from fo_edge.rules.numba_binding import make_params, to_device

from .strategies import seeds

INT8 = st.integers(-127, 127)


def sparse_int8(shape):
    """int8-range int64 arrays, about half zeros (activations after ReLU, MNIST pixels)."""
    return arrays(np.int64, shape, elements=st.one_of(st.just(0), INT8))


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(4, 9), m=st.integers(4, 9), k=st.sampled_from([4, 17, 1040]))
def test_float32_matmul_is_exact_up_to_the_bound(data, n, m, k):
    """At |a|, |b| <= 127 over 1040 terms the sums reach 16.77 M, just under 2**24: float32 BLAS stays exact."""
    a = data.draw(arrays(np.int64, (n, k), elements=st.sampled_from([-127, 127, 0, 1, -1])))
    b = data.draw(arrays(np.int8, (m, k), elements=st.sampled_from([-127, 127, 0, 3])))
    bound = 127.0 * 127.0 * k
    assert bound <= FLOAT32_EXACT
    np.testing.assert_array_equal(exact_matmul(a, b, bound), a @ b.astype(np.int64).T)


def test_float32_matmul_falls_back_past_the_bound():
    """Sums beyond 2**24 go through float64 and stay exact."""
    a = np.full((4, 8), 2**12 + 1, dtype=np.int64)
    b = np.full((4, 8), 2**12 + 1, dtype=np.int64)
    bound = float(2**12 + 1) ** 2 * 8
    np.testing.assert_array_equal(exact_matmul(a, b, bound), a @ b.T)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.sampled_from([1, 2, 3, 4, 7]),
       mode=st.sampled_from([ROUND_NEAREST_EVEN, ROUND_TOWARD_ZERO, ROUND_STOCHASTIC]),
       mul=st.integers(1, 4095), shift=st.integers(0, 20), seed=seeds)
def test_sparse_integer_update_equals_the_dense_visit(data, batch, mode, mul, shift, seed):
    """Visiting only nonzero rows and columns changes no weight, counter or random draw, with or without
    per-row exponent offsets (per-channel scales; the offsets may exceed the update's shift)."""
    d_out, d_in = 6, 9
    rs = data.draw(arrays(np.int64, d_out, elements=st.integers(0, 3)))
    delta = data.draw(sparse_int8((batch, d_out)))
    hin = data.draw(sparse_int8((batch, d_in)))
    start = data.draw(arrays(np.int8, d_out * d_in + 3, elements=INT8))
    params = make_params(load_device("mcu-int8"), "relu", "ce")._replace(upd_round=mode)
    w_fast, w_dense = start.copy(), start.copy()
    rng_fast, rng_dense = new_state(seed), new_state(seed)
    counters = np.zeros(len(COUNTERS), dtype=np.int64)
    fast = _integer_update_(w_fast, 3, d_in, delta, hin, np.int64(mul), np.int64(shift), rs, params, rng_fast,
                           None)
    dense = _dense_update_(w_dense, 3, d_out, d_in, delta, hin, np.int64(mul), np.int64(1 << shift), 0.0, rs,
                           params, counters, rng_dense, np.zeros(0))
    np.testing.assert_array_equal(w_fast, w_dense)
    assert fast == dense
    assert rng_fast[0] == rng_dense[0]


@settings(max_examples=20, deadline=None)
@given(data=st.data(), rows=st.integers(1, 6))
def test_sparse_forward_equals_the_blas_forward(data, rows):
    """The direct sums over nonzero inputs (few rows, or sparse input) give BLAS's outputs, and the effective
    MACs of the plain count."""
    profile = load_device("mcu-int8")
    net = to_device(init_weights((40, 12), seed=1), profile)
    params = make_params(profile, "relu", "ce")
    hin = data.draw(sparse_int8((rows, 40)))
    dense = np.vstack([hin, np.ones((4, 40), dtype=np.int64)])  # the same rows in a batch too dense to skip

    def run(x):
        pre, out = np.zeros((len(x), 12), dtype=np.int64), np.zeros((len(x), 12), dtype=np.int64)
        counters = np.zeros(len(COUNTERS), dtype=np.int64)
        layer_forward_(x, net.w, 0, 12, 40, net.w_one[0], False, params, pre, out, counters, new_state(0))
        return pre, counters

    pre_sparse, counted = run(hin)
    pre_blas, _ = run(dense)
    np.testing.assert_array_equal(pre_sparse, pre_blas[:rows])
    assert counted[COUNTERS.index("macs_effective")] == effective_macs(hin, net.w, 0, 12, 40)
    pairs = (hin != 0).astype(int) @ (net.w.reshape(12, 40) != 0).T.astype(int)
    assert counted[COUNTERS.index("macs_effective")] == int(pairs.sum())


def test_tanh_table_equals_the_evaluated_tanh():
    """Large batches activate tanh through the format's lookup table; each row equals the same row run alone,
    where tanh is evaluated per output."""
    profile = load_device("mcu-int8")
    net = to_device(init_weights((40, 12), seed=1), profile)
    params = make_params(profile, "tanh", "ce")
    hin = np.random.default_rng(3).integers(-127, 128, size=(32, 40)).astype(np.int64)

    def run(x):
        pre, out = np.zeros((len(x), 12), dtype=np.int64), np.zeros((len(x), 12), dtype=np.int64)
        layer_forward_(x, net.w, 0, 12, 40, net.w_one[0], False, params, pre, out,
                       np.zeros(len(COUNTERS), dtype=np.int64), new_state(0))
        return out

    whole = run(hin)  # 32 x 12 outputs >= 256 table entries: the table is used
    assert len(np.unique(whole)) > 10
    for b in range(len(hin)):
        np.testing.assert_array_equal(whole[b], run(hin[b:b + 1])[0])


def test_cached_forward_reuses_the_layer_until_cleared():
    """A forward through the step's float32 copy of W equals the uncached forward (outputs and counters); once
    W changes and the caller clears the ready flag, the next call converts the new W."""
    profile = load_device("mcu-int8")
    net = to_device(init_weights((40, 12), seed=1), profile)
    params = make_params(profile, "tanh", "ce")
    hin = np.random.default_rng(4).integers(-127, 128, size=(8, 40)).astype(np.int64)
    cache = (np.zeros((12, 40), dtype=np.float32), np.zeros(40, dtype=np.int32), np.zeros(2, dtype=np.bool_),
             np.zeros((12, 40), dtype=np.int8))

    def run(cached):
        pre, out = np.zeros((8, 12), dtype=np.int64), np.zeros((8, 12), dtype=np.int64)
        counters = np.zeros(len(COUNTERS), dtype=np.int64)
        if cached:
            cached_layer_forward_(hin, net.w, 0, 12, 40, net.w_one[0], net.row_shift, False, params, pre, out,
                                  counters, new_state(0), *cache)
        else:
            layer_forward_(hin, net.w, 0, 12, 40, net.w_one[0], False, params, pre, out, counters, new_state(0))
        return out, counters

    for _ in range(2):  # converts, then reuses
        out, counters = run(True)
        np.testing.assert_array_equal(out, run(False)[0])
        np.testing.assert_array_equal(counters, run(False)[1])
        assert cache[2][0]
    np.testing.assert_array_equal(cache[0], net.w.reshape(12, 40).astype(np.float32))  # W, row-major
    net.w[:40] = 0  # a changed row, and a zero weight in every column
    cache[2][0] = False
    np.testing.assert_array_equal(run(True)[0], run(False)[0])
    np.testing.assert_array_equal(run(True)[1], run(False)[1])
    np.testing.assert_array_equal(cache[1], (net.w.reshape(12, 40) != 0).sum(axis=0))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(1, 5), d_out=st.integers(1, 9), d_in=st.integers(1, 9), off=st.integers(0, 7))
def test_effective_macs_of_the_transpose_count_nonzero_pairs(data, batch, d_out, d_in, off):
    """delta (B, d_out) through W (d_out, d_in) at offset off: every (b, i, j) with delta[b, i] and W[i, j]
    nonzero, counted by brute force, and as effective_macs of W's transpose (the copy the kernel no longer makes)."""
    delta = data.draw(sparse_int8((batch, d_out)))
    w = data.draw(sparse_int8((off + d_out * d_in,)))
    mat = w[off:].reshape(d_out, d_in)
    pairs = sum(int(delta[b, i] != 0 and mat[i, j] != 0)
                for b in range(batch) for i in range(d_out) for j in range(d_in))
    assert effective_macs_transposed(delta, w, off, d_out, d_in) == pairs
    assert effective_macs(delta, mat.T.copy().ravel(), 0, d_in, d_out) == pairs
