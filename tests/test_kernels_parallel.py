"""The order-independent random draw and the parallel updates built on it: the generator against SplitMix64's
published outputs and its statistics, and the parallel integer and momentum updates against a plain serial
reference of the same arithmetic, bit for bit, at one and two threads."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fo_edge.device import load_device
from fo_edge.kernels.counters import COUNTERS, PHASES, new_counters
from fo_edge.kernels.fixed import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, ROUND_TOWARD_ZERO, round_shift_at
from fo_edge.kernels.update import momentum_update_, outer_update_
from fo_edge.kernels.rng import counter_u53, new_state, next_u53
from fo_edge.rules.numba_binding import make_params

from .strategies import seeds

MASK64 = (1 << 64) - 1
MODES = st.sampled_from([ROUND_NEAREST_EVEN, ROUND_TOWARD_ZERO, ROUND_STOCHASTIC])


def splitmix_u53(key: int, index: int) -> int:
    """SplitMix64's output for counter index + 1 under seed key, top 53 bits (plain Python integers)."""
    z = (key + (index + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) >> 11


def u53_many(key: int, n: int) -> np.ndarray:
    return np.array([counter_u53(np.uint64(key), i) for i in range(n)], dtype=np.int64)


def test_counter_draw_is_splitmix64():
    """Seed 0's first outputs of SplitMix64 (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, the
    reference sequence of Vigna's splitmix64.c), top 53 bits."""
    published = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert [counter_u53(np.uint64(0), i) for i in range(3)] == [v >> 11 for v in published]


@settings(max_examples=50, deadline=None)
@given(key=st.integers(0, MASK64), index=st.integers(0, 2**40))
def test_counter_draw_depends_on_key_and_index_only(key, index):
    assert counter_u53(np.uint64(key), index) == splitmix_u53(key, index)


@pytest.mark.parametrize("key", [0, 1, 0x5DEECE66D, MASK64])
def test_counter_draws_are_uniform_and_neighbours_uncorrelated(key):
    """2**16 draws: each of 16 bins of the low 12 bits (the bits a rounding by 2**12 compares) holds its
    expected 4096 within a chi-square bound (df 15, p = 0.001: 37.7); neighbouring indices and neighbouring
    keys correlate below 4 / sqrt(n)."""
    n = 1 << 16
    u = u53_many(key, n)
    low = u & 4095
    counts = np.bincount(low >> 8, minlength=16)
    chi2 = float(((counts - n / 16) ** 2 / (n / 16)).sum())
    assert chi2 < 37.7
    x = u / 2.0**53
    bound = 4 / np.sqrt(n)
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < bound
    other = u53_many((key + 1) & MASK64, n) / 2.0**53
    assert abs(np.corrcoef(x, other)[0, 1]) < bound


@settings(max_examples=30, deadline=None)
@given(x=st.integers(-(2**30), 2**30), k=st.integers(1, 16), key=st.integers(0, MASK64))
def test_counter_stochastic_rounding_is_unbiased(x, k, key):
    """Over 4000 indices the mean of round(x / 2**k) is x / 2**k within 4.5 standard errors of a coin flip."""
    n = 4000
    q = np.array([round_shift_at(np.int64(x), np.int64(k), ROUND_STOCHASTIC, np.uint64(key), i) for i in range(n)])
    assert set(np.unique(q)) <= {x >> k, (x >> k) + 1}
    p = (x & ((1 << k) - 1)) / 2**k
    assert abs(q.mean() - x / 2**k) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-12


def reference_update(w, off, d_out, d_in, delta, hin, mul, shift, mode, key, w_lo, w_hi):
    """The integer update one weight at a time in plain Python: g = sum_b delta[b, i] hin[b, j], scaled = mul g,
    step = floor(scaled / 2**shift) + up (up from the mode; stochastic: the draw's low bits < remainder),
    w <- clip(w - step); returns (writes, lost, clipped)."""
    writes = lost = clipped = 0
    mask = (1 << shift) - 1
    for i in range(d_out):
        for j in range(d_in):
            scaled = int(sum(int(delta[b, i]) * int(hin[b, j]) for b in range(delta.shape[0]))) * mul
            q, rem = scaled >> shift, scaled & mask
            if mode == ROUND_NEAREST_EVEN:
                up = 2 * rem > mask + 1 or (2 * rem == mask + 1 and q % 2 == 1)
            elif mode == ROUND_TOWARD_ZERO:
                up = rem != 0 and scaled < 0
            else:
                up = (splitmix_u53(key, i * d_in + j) & mask) < rem
            step = q + int(up)
            k = off + i * d_in + j
            old = int(w[k])
            new = min(max(old - step, w_lo), w_hi)
            lost += step == 0 and scaled != 0
            clipped += new != old - step
            writes += new != old
            w[k] = new
    return writes, lost, clipped


def with_threads(n, call):
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        return call()
    finally:
        numba.set_num_threads(before)


def assert_update_equals_reference(start, off, delta, hin, hi, mode, mul, shift, threads, seed, a_bits=8,
                                   update=outer_update_):
    """``update`` (``outer_update_`` or ``int8_outer_update_``) of the weights ``start`` (layer at ``off``,
    mantissas in [-hi, hi]) at ``threads`` threads leaves the weights and counters of ``reference_update``;
    returns the stream's state after it. ``a_bits``: the activation format's width (above 8 the update's product
    leaves the int8 GEMM)."""
    d_out, d_in = delta.shape[1], hin.shape[1]
    a_hi = (1 << (a_bits - 1)) - 1
    P = make_params(load_device("mcu-int8"), "relu", "ce")._replace(upd_round=mode, w_lo=np.int64(-hi),
                                                                   w_hi=np.int64(hi), a_lo=np.int64(-a_hi),
                                                                   a_hi=np.int64(a_hi))
    rng = new_state(seed)
    key = int(next_u53(rng.copy()))
    expected_w = start.astype(np.int64)
    expected = reference_update(expected_w, off, d_out, d_in, delta, hin, mul, shift, mode, key, -hi, hi)
    w, C = start.copy(), new_counters(1)
    with_threads(threads, lambda: update(w, off, d_out, d_in, delta, hin, np.int64(mul),
                                                np.int64(1 << shift), 0.0, np.zeros(d_out, dtype=np.int64), P,
                                                C[0, 0], rng, np.zeros(0)))
    np.testing.assert_array_equal(w.astype(np.int64), expected_w)
    names = ("weight_writes", "updates_lost", "saturation_events")
    assert tuple(int(C[0, 0, COUNTERS.index(n)]) for n in names) == expected
    return rng


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.sampled_from([1, 2, 3, 4, 9]), d_out=st.integers(1, 12), d_in=st.integers(1, 12),
       bits=st.sampled_from([8, 16]), mode=MODES, mul=st.integers(1, 4095), shift=st.integers(0, 20),
       threads=st.sampled_from([1, 2]), seed=seeds)
def test_parallel_integer_update_equals_the_serial_reference(data, batch, d_out, d_in, bits, mode, mul, shift,
                                                             threads, seed):
    """Weights, counters and the stream's state after ``outer_update_`` equal the serial reference, for int8
    and int16 weights, every rounding mode, one and two threads."""
    hi = (1 << (bits - 1)) - 1
    dtype = np.int8 if bits == 8 else np.int16
    values = st.one_of(st.just(0), st.integers(-127, 127))
    delta = data.draw(arrays(np.int64, (batch, d_out), elements=values))
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=values))
    start = data.draw(arrays(dtype, d_out * d_in + 2, elements=st.integers(-hi, hi)))
    rng = assert_update_equals_reference(start, 2, delta, hin, hi, mode, mul, shift, threads, seed)
    check = new_state(seed)
    next_u53(check)
    assert rng[0] == check[0]  # one draw of the stream per update


@settings(max_examples=25, deadline=None)
@given(data=st.data(), d_out=st.integers(1, 9), d_in=st.integers(1, 9), mode=MODES, seed=seeds)
def test_parallel_momentum_update_is_the_same_at_one_and_two_threads(data, d_out, d_in, mode, seed):
    batch = 3
    values = st.integers(-60, 60)
    delta = data.draw(arrays(np.int64, (batch, d_out), elements=values))
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=values))
    start = data.draw(arrays(np.int8, d_out * d_in, elements=st.integers(-127, 127)))
    vel0 = data.draw(arrays(np.int64, d_out * d_in, elements=st.integers(-(2**20), 2**20)))
    P = make_params(load_device("mcu-int8"), "relu", "ce")._replace(upd_round=mode)
    mom = np.array([3.0, 8.0, 7.0, 8.0, 1.0, 64.0, 5.0, 256.0])
    results = []
    for threads in (1, 2):
        w, vel, C, rng = start.copy(), vel0.copy(), new_counters(1), new_state(seed)
        with_threads(threads, lambda: momentum_update_(w, 0, d_out, d_in, delta, hin, vel, mom,
                                                       np.zeros(d_out, dtype=np.int64), P, C[0, 0], rng))
        results.append((w, vel, C, rng))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), batch=st.integers(8, 20), d_in=st.integers(1, 30), d_out=st.integers(1, 12),
       device=st.sampled_from(["mcu-int8", "fpga-fixed16", "loihi-like"]), act=st.sampled_from(["relu", "tanh"]),
       linear=st.booleans(), threads=st.sampled_from([1, 2]))
def test_fused_parallel_forward_equals_the_direct_forward_of_each_sample(data, batch, d_in, d_out, device, act,
                                                                        linear, threads):
    """From FUSED_BATCH rows on the integer forward runs in parallel over samples through float32 BLAS on a copy of W; one
    sample at a time it sums directly (``assert_batch_forward_equals_direct``). Outputs and counters are equal."""
    from fo_edge.kernels.linear import FUSED_BATCH
    from fo_edge.models import init_weights
    from fo_edge.rules.numba_binding import to_device

    assert batch >= FUSED_BATCH
    profile = load_device(device)
    net = to_device(init_weights((d_in, d_out), seed=data.draw(seeds)), profile)
    P = make_params(profile, act, "ce")
    if P.fwd_round == ROUND_STOCHASTIC:
        P = P._replace(fwd_round=ROUND_NEAREST_EVEN)
    lo, hi = int(P.a_lo), int(P.a_hi)
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=st.one_of(st.just(0), st.integers(lo, hi))))
    assert_batch_forward_equals_direct(hin, net, P, linear, threads)


def assert_batch_forward_equals_direct(hin, net, P, linear, threads):
    """``layer_forward_`` on the whole batch hin (B, d_in) at ``threads`` threads gives the outputs and counters
    of one sample at a time (the few-sample paths: every column's sums in float32 where at least
    linear.FEW_ROWS_DENSE of the inputs are nonzero, the int64 sums over the nonzero inputs below it)."""
    from fo_edge.kernels.linear import layer_forward_

    batch, d_in = hin.shape
    d_out = int(net.dims[1])
    fused = [np.zeros((batch, d_out), dtype=np.int64) for _ in range(2)]
    C = np.zeros(len(COUNTERS), dtype=np.int64)
    with_threads(threads, lambda: layer_forward_(hin, net.w, 0, d_out, d_in, net.w_one[0], linear, P, *fused, C,
                                                 new_state(0)))
    direct = [np.zeros((batch, d_out), dtype=np.int64) for _ in range(2)]
    C_direct = np.zeros(len(COUNTERS), dtype=np.int64)
    for b in range(batch):
        layer_forward_(hin[b:b + 1], net.w, 0, d_out, d_in, net.w_one[0], linear, P, direct[0][b:b + 1],
                       direct[1][b:b + 1], C_direct, new_state(0))
    for a, b in zip(fused, direct):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(C, C_direct)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), batch=st.integers(1, 9), k_dim=st.integers(1, 6), d=st.integers(1, 20),
       mode=st.sampled_from([ROUND_NEAREST_EVEN, ROUND_TOWARD_ZERO]), sign=st.sampled_from([-1, 1]),
       shift=st.integers(0, 12), threads=st.sampled_from([1, 2]))
def test_parallel_projection_equals_the_serial_projection(data, batch, k_dim, d, mode, sign, shift, threads):
    from fo_edge.kernels.linear import _project_rows_, _project_serial_

    P = make_params(load_device("mcu-int8"), "relu", "ce")._replace(fwd_round=mode)
    small = st.one_of(st.just(0), st.integers(-3000, 3000))
    src = data.draw(arrays(np.int64, (batch, k_dim), elements=small))
    mat = data.draw(arrays(np.int64, (k_dim, d), elements=small))
    base = data.draw(arrays(np.int64, (batch, d), elements=st.integers(-127, 127)))
    outs, counts, effs = [], [], []
    for parallel in (True, False):
        out, C = np.zeros((batch, d), dtype=np.int64), np.zeros(len(COUNTERS), dtype=np.int64)
        if parallel:
            eff = with_threads(threads, lambda: _project_rows_(base, src, mat, sign, np.int64(1 << shift), shift, P,
                                                               out, C))
        else:
            eff = _project_serial_(base, src, mat, sign, np.int64(1 << shift), shift, P, out, C, new_state(0))
        outs.append(out), counts.append(C), effs.append(eff)
    np.testing.assert_array_equal(*outs)
    np.testing.assert_array_equal(*counts)
    assert effs[0] == effs[1]


@pytest.mark.parametrize("device", ["mcu-int8", "gpu-fp32"])
@pytest.mark.parametrize("rule,schedule,dropout", [("ftp", "stream", False), ("ftp", "store", False),
                                                    ("foton", "stream", True), ("pepita", "stream", False),
                                                    ("pepita", "store", True), ("ftp", "stream", True)])
def test_keeping_pass1_equals_recomputing_it(device, rule, schedule, dropout):
    """Three steps on real digits with the simulator's kept copy of pass 1 and with the schedule's recompute:
    the weights, every counter (RECOMPUTE included) and the stream's state are equal."""
    from sklearn.datasets import load_digits

    from fo_edge.accounting.memory import MemoryArena
    from fo_edge.models import init_weights
    from fo_edge.rules import rule_config
    from fo_edge.rules.numba_binding import (allocate_buffers, dropout_drop, fill_fixed_projection, kept_pass1,
                                             quantize_input, refresh_projection, run_step, to_device)

    digits = load_digits()
    x_all, y_all = digits.data / 16.0, digits.target
    dims, batch = (64, 24, 16, 10), 12
    profile = load_device(device)
    results = []
    for keep in (True, False):
        net = to_device(init_weights(dims, seed=3), profile)
        bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, batch, rule, schedule, ortho=False,
                                dropout=dropout)
        if not keep:
            bufs.kept = kept_pass1(bufs.x.dtype, dims, batch, keep=False)
        fill_fixed_projection(bufs, profile, rule, net.dims, rule_config(rule))
        C, rng = new_counters(net.n_layers), new_state(5)
        if rule == "foton":
            refresh_projection(net, bufs, profile, np.zeros_like(C), rng)
        P = make_params(profile, "relu", "ce")
        for step in range(3):
            rows = slice(step * batch, (step + 1) * batch)
            x = quantize_input(x_all[rows], profile, bufs.x, C[0, -1], rng)
            drop = dropout_drop(bufs, profile, net.dims, batch, 0.2, 7, step) if dropout else None
            run_step(rule, net, bufs, profile, P, x, np.eye(10)[y_all[rows]], 0.1, schedule, C, rng, drop=drop)
        results.append((net.w.copy(), C.copy(), rng.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    recomputed = results[0][1][PHASES.index("recompute")].sum()
    assert recomputed > 0 if schedule == "stream" or rule == "ftp" else recomputed == 0  # store: FTP's a_1 only


def idle_columns(data, batch, d_in, lo, hi):
    """(batch, d_in) int64 inputs of which about three columns in five are zero in every sample (MNIST's border
    pixels in miniature): enough that the kernels sum over the active columns only (linear.GATHER_COLUMNS)."""
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=st.one_of(st.just(0), st.integers(lo, hi))))
    order = np.random.default_rng(data.draw(seeds)).permutation(d_in)
    hin[:, order[:(3 * d_in + 4) // 5]] = 0
    return hin


@settings(max_examples=20, deadline=None)
@given(data=st.data(), batch=st.sampled_from([32, 40]), d_out=st.integers(1, 6), d_in=st.integers(5, 40),
       mode=MODES, mul=st.integers(1, 4095), shift=st.integers(0, 20), threads=st.sampled_from([1, 2]), seed=seeds)
def test_update_over_the_active_columns_equals_the_serial_reference(data, batch, d_out, d_in, mode, mul, shift,
                                                                    threads, seed):
    """With idle input columns the update's product runs over the active ones and is spread back over whole rows
    (kernels.update._dot_rows_): weights and counters still equal the one-weight-at-a-time reference."""
    delta = data.draw(arrays(np.int64, (batch, d_out), elements=st.one_of(st.just(0), st.integers(-127, 127))))
    hin = idle_columns(data, batch, d_in, -127, 127)
    start = data.draw(arrays(np.int8, d_out * d_in, elements=st.integers(-127, 127)))
    assert_update_equals_reference(start, 0, delta, hin, 127, mode, mul, shift, threads, seed)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), batch=st.sampled_from([32, 48]), d_in=st.integers(5, 40), d_out=st.integers(1, 12),
       act=st.sampled_from(["relu", "tanh"]), threads=st.sampled_from([1, 2]))
def test_forward_over_the_active_columns_equals_the_direct_forward(data, batch, d_in, d_out, act, threads):
    """With idle input columns the fused forward sums over the active columns of the inputs and of a gathered
    copy of W; outputs and counters equal the direct int64 sums of each sample."""
    from fo_edge.models import init_weights
    from fo_edge.rules.numba_binding import to_device

    profile = load_device("mcu-int8")
    net = to_device(init_weights((d_in, d_out), seed=data.draw(seeds)), profile)
    P = make_params(profile, act, "ce")
    hin = idle_columns(data, batch, d_in, int(P.a_lo), int(P.a_hi))
    assert_batch_forward_equals_direct(hin, net, P, False, threads)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), d_in=st.integers(1, 80), d_out=st.integers(1, 12),
       w_dtype=st.sampled_from([np.int8, np.int16, np.int64]))
def test_few_rows_sums_equal_the_int64_products(data, batch, d_in, d_out, w_dtype):
    """A few samples' forward sums every column in float32, vectorised and reassociated (linear._few_rows_sums):
    exact wherever the caller takes it (every partial sum below 2**24), so equal to the int64 matrix product, and
    its effective MACs to the count of nonzero input x nonzero weight pairs."""
    from fo_edge.kernels.linear import FLOAT32_EXACT, _few_rows_sums

    w_peak = int(FLOAT32_EXACT) // (127 * 80)  # 127 x w_peak x d_in stays below 2**24
    w = data.draw(arrays(w_dtype, d_out * d_in, elements=st.integers(-min(w_peak, np.iinfo(w_dtype).max),
                                                                     min(w_peak, np.iinfo(w_dtype).max))))
    hin = data.draw(arrays(np.int64, (batch, d_in), elements=st.one_of(st.just(0), st.integers(-127, 127))))
    sums = np.zeros((batch, d_out))
    effective = _few_rows_sums(hin, w, 0, d_out, d_in, sums)
    W = w.astype(np.int64).reshape(d_out, d_in)
    np.testing.assert_array_equal(sums, hin @ W.T)
    assert effective == int(((hin != 0).astype(np.int64) @ (W != 0).astype(np.int64).T).sum())
