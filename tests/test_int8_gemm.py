"""The int8 GEMM path of the integer kernels: the product against int64 sums, and the forward and update that use
it against the serial references and the float32 path, bit for bit (weights, outputs and counters)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fo_edge.device import load_device
from fo_edge.kernels.counters import COUNTERS
from fo_edge.kernels.int8_gemm import INT8_BATCH, MIN_TERMS, int8_matmul_
from fo_edge.kernels.linear import cached_layer_forward_, no_weight_cache
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.update import int8_outer_update_, outer_update_
from fo_edge.models import init_weights
from fo_edge.rules.numba_binding import make_params, to_device

from .strategies import seeds
from .test_kernels_parallel import MODES, assert_batch_forward_equals_direct, assert_update_equals_reference

INT8 = st.integers(-128, 127)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), m=st.integers(1, 40), k=st.integers(MIN_TERMS, 300), n=st.integers(1, 40),
       transposed=st.booleans())
def test_int8_product_equals_the_int64_sums(data, m, k, n, transposed):
    """out = a @ b in int32 equals the int64 product over shapes, the full int8 range (-128 included) and b
    given as (K, N) or as the transpose of an (N, K) array (the weights' layout)."""
    a = data.draw(arrays(np.int8, (m, k), elements=INT8))
    b = data.draw(arrays(np.int8, (n, k) if transposed else (k, n), elements=INT8))
    b_kn = b.T if transposed else b
    out = np.full((m, n), 7, dtype=np.int32)
    int8_matmul_(a, b_kn, out)
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b_kn.astype(np.int64))


def test_int8_product_extremes():
    """The largest sums (-128 x -128 over 784 terms, 12.8 million) are exact."""
    a = np.full((3, 784), -128, dtype=np.int8)
    out = np.zeros((3, 2), dtype=np.int32)
    int8_matmul_(a, a[:2].T, out)
    assert (out == 128 * 128 * 784).all()


@settings(max_examples=20, deadline=None)
@given(data=st.data(), batch=st.sampled_from([INT8_BATCH, 33]), d_out=st.integers(1, 12),
       d_in=st.integers(MIN_TERMS, 60), act=st.sampled_from(["relu", "tanh"]), linear=st.booleans(),
       threads=st.sampled_from([1, 2]))
def test_int8_forward_equals_the_direct_forward(data, batch, d_out, d_in, act, linear, threads):
    """From INT8_BATCH samples on, an int8 device's forward forms its sums by the int8 GEMM; its outputs and
    counters equal the direct int64 sums of one sample at a time."""
    profile = load_device("mcu-int8")
    net = to_device(init_weights((d_in, d_out), seed=data.draw(seeds)), profile)
    P = make_params(profile, act, "ce")
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=st.one_of(st.just(0), st.integers(int(P.a_lo),
                                                                                               int(P.a_hi)))))
    assert_batch_forward_equals_direct(hin, net, P, linear, threads)


def test_cached_int8_forward_fills_the_int8_copy_only():
    """A cached forward of INT8_BATCH samples on mcu-int8 converts W to the int8 copy (its flag set, the
    float32 copy untouched), and equals the uncached forward."""
    profile = load_device("mcu-int8")
    net = to_device(init_weights((40, 12), seed=1), profile)
    P = make_params(profile, "tanh", "ce")
    hin = np.random.default_rng(4).integers(-127, 128, size=(INT8_BATCH, 40)).astype(np.int64)
    cache = (np.zeros((12, 40), dtype=np.float32), np.zeros(40, dtype=np.int32), np.zeros(2, dtype=np.bool_),
             np.zeros((12, 40), dtype=np.int8))
    outs = []
    for weights in (cache, no_weight_cache()):
        pre, out = np.zeros((INT8_BATCH, 12), dtype=np.int64), np.zeros((INT8_BATCH, 12), dtype=np.int64)
        C = np.zeros(len(COUNTERS), dtype=np.int64)
        cached_layer_forward_(hin, net.w, 0, 12, 40, net.w_one[0], net.row_shift, False, P, pre, out, C,
                              new_state(0), *weights)
        outs.append((out, C))
    assert list(cache[2]) == [False, True]
    np.testing.assert_array_equal(cache[3], net.w.reshape(12, 40))
    assert not cache[0].any()
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@settings(max_examples=25, deadline=None)
@given(data=st.data(), batch=st.sampled_from([INT8_BATCH, 40]), d_out=st.integers(1, 12), d_in=st.integers(1, 40),
       mode=MODES, mul=st.integers(1, 4095), shift=st.integers(0, 20), threads=st.sampled_from([1, 2]),
       wide=st.booleans(), gemm8=st.booleans(), seed=seeds)
def test_int8_and_float32_updates_equal_the_serial_reference(data, batch, d_out, d_in, mode, mul, shift, threads,
                                                            wide, gemm8, seed):
    """The update's product through the int8 GEMM (``int8_outer_update_`` on int8 formats) and through float32
    BLAS (``outer_update_``, or the same operands under a 16-bit activation format, ``wide``) leave the weights
    and counters of the one-weight-at-a-time reference."""
    delta = data.draw(arrays(np.int64, (batch, d_out), elements=st.one_of(st.just(0), st.integers(-127, 127))))
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=st.one_of(st.just(0), st.integers(-127, 127))))
    start = data.draw(arrays(np.int8, d_out * d_in, elements=st.integers(-127, 127)))
    assert_update_equals_reference(start, 0, delta, hin, 127, mode, mul, shift, threads, seed,
                                   a_bits=16 if wide else 8, update=int8_outer_update_ if gemm8 else outer_update_)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), d_out=st.integers(1, 8), d_in=st.integers(1, 20), mode=MODES, seed=seeds)
def test_update_of_operands_beyond_int8_falls_back_exactly(data, d_out, d_in, mode, seed):
    """Inputs beyond int8 on an int8 device (spike counts up to 1000) take the float32 product: still equal to
    the reference."""
    delta = data.draw(arrays(np.int64, (32, d_out), elements=st.integers(-127, 127)))
    hin = data.draw(arrays(np.int64, (32, d_in), elements=st.integers(0, 1000)))
    start = data.draw(arrays(np.int8, d_out * d_in, elements=st.integers(-127, 127)))
    assert_update_equals_reference(start, 0, delta, hin, 127, mode, 1, 16, 2, seed, update=int8_outer_update_)
