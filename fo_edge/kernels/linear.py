"""Layer kernels: forward (quantised matmul, accumulate, requantise, activate), projection of the output error
through a fixed or computed matrix, and the rank-B outer-product weight update applied in place.

Weights of every layer live in one flat array ``w`` (as in one SRAM region); layer l occupies
``w[off : off + d_out * d_in]`` row-major, i.e. ``W_l[i, j] = w[off + i * d_in + j]``. Mantissa dtype int64
(device) or float64 (float reference and analog conductances); real weights are ``w / w_one``. ``P`` is
:class:`fo_edge.kernels.steps.Params`; ``C`` one counter row ``C[phase, layer]`` (slots in
:mod:`fo_edge.kernels.counters`); ``rng`` the (1,) uint64 RNG state. Analog devices (``P.analog``) route the
matrix-vector product and the update through :mod:`fo_edge.kernels.analog`.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

from .activations import TANH, activate
from .analog import analog_forward_, pulse_update_
from .counters import (FLASH_READ, LOST, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION,
                       SRAM_READ, SRAM_WRITE, SYN_EVENTS, SYN_UPDATES, WEIGHT_WRITES, WRAPS)
from .fixed import ROUND_STOCHASTIC, log2_exact, round_by, round_div, round_shift, saturate, wrap
from .rng import xorshift_u53

__all__ = ["layer_forward_", "cached_layer_forward_", "no_weight_cache", "project_", "outer_update_", "exact_matmul",
           "effective_macs", "activation_table", "SMALL_BATCH"]

#: below this many rows (or inner terms) exact_matmul sums directly instead of going through BLAS
SMALL_BATCH = 4
#: the layer forward sums only the nonzero inputs directly while they number at most this many times d_in
#: (measured crossover with BLAS on MNIST activity in 784-256-256 int8 layers: about 1.2 d_in)
SPARSE_INPUTS = 1.0
#: integers of magnitude up to 2**24 are exact in float32
FLOAT32_EXACT = 16777216.0
#: with the step's float32 copy of W at hand, a few-row forward goes through BLAS once more than 1/DENSE_INPUTS
#: of its inputs are nonzero (tanh hidden layers), and sums the nonzero inputs directly below that (MNIST pixels)
DENSE_INPUTS = 4


def integral(a):
    """Whether ``a`` holds integers; inside kernels a compile-time constant of a's dtype."""
    return np.issubdtype(a.dtype, np.integer)


@overload(integral)
def _integral_typed(a):
    flag = isinstance(a.dtype, types.Integer)
    return lambda a: flag


@njit(cache=True)
def _as_float32(a):
    """a (an integer array) as float32, in one vectorisable pass."""
    out = np.empty(a.shape, dtype=np.float32)
    flat_out, flat_a = out.reshape(-1), a.reshape(-1)
    for i in range(flat_a.size):
        flat_out[i] = flat_a[i]
    return out


@njit(cache=True, inline="always")
def magnitude(lo, hi):
    """The largest |value| of a format with mantissa bounds [lo, hi], as float64 (inf for float formats)."""
    return max(-float(lo), float(hi))


@njit(cache=True)
def exact_matmul(a, b, bound):
    """a @ b^T as float64 through BLAS: a: (B, K), b: (N, K) -> (B, N); bound: an upper bound on
    max|a| max|b| K from the operands' formats (inf when unknown).

    For integer mantissas this is exact as long as every partial sum stays below 2**53 in magnitude (checked
    for the device's formats by ``rules.numba_binding.check_exact``), so it equals the device's integer
    accumulation bit for bit, in any summation order; the accumulator wrap is applied to the exact sum
    (two's-complement arithmetic is modular, so wrapping at the end equals wrapping at every addition).
    Integer operands with bound <= 2**24 (int8 x int8 over up to 1040 terms) go through float32 BLAS, exact by
    the same argument at half the memory traffic and twice the SIMD width.
    Below SMALL_BATCH rows (a few samples) or SMALL_BATCH inner terms (an outer product over a few samples)
    the sums are formed directly, which beats converting the operands for BLAS; zeros of ``a`` are skipped.
    """
    n, k_dim = a.shape
    m = b.shape[0]
    if n >= SMALL_BATCH and k_dim >= SMALL_BATCH:
        if integral(a) and integral(b) and bound <= FLOAT32_EXACT:
            return np.dot(_as_float32(a), _as_float32(b).T).astype(np.float64)
        return np.dot(a.astype(np.float64), b.astype(np.float64).T)
    out = np.zeros((n, m))
    if n < SMALL_BATCH:  # row . row, both contiguous in the inner index
        for i in range(n):
            for k in range(m):
                acc = 0.0
                for j in range(k_dim):
                    acc += a[i, j] * b[k, j]
                out[i, k] = acc
        return out
    for i in range(n):  # a sum of k_dim outer products
        for j in range(k_dim):
            aij = a[i, j]
            if aij != 0:
                for k in range(m):
                    out[i, k] += aij * b[k, j]
    return out


@njit(cache=True)
def effective_macs(hin, w, off, d_out, d_in):
    """sum_b sum_ij [hin[b, j] != 0][W[i, j] != 0], as sum_j (nonzero inputs in column j) x (nonzero weights in
    column j)."""
    weights = np.zeros(d_in, dtype=np.int32)  # simulator bookkeeping for the counter, not device memory
    for i in range(d_out):  # (int32 counts vectorise; a layer has < 2**31 rows)
        base = off + i * d_in
        for j in range(d_in):
            weights[j] += np.int32(w[base + j] != 0)
    return _effective_from_columns(hin, weights)


@njit(cache=True)
def _effective_from_columns(hin, weights):
    """sum_j (nonzero hin[:, j]) x weights[j], weights: the nonzero weights of each input column."""
    inputs = np.zeros(hin.shape[1], dtype=np.int32)
    for b in range(hin.shape[0]):
        for j in range(hin.shape[1]):
            inputs[j] += np.int32(hin[b, j] != 0)
    total = 0
    for j in range(hin.shape[1]):
        total += np.int64(inputs[j]) * np.int64(weights[j])
    return total


@njit(cache=True)
def _weights_float32_into(w, off, d_out, d_in, out, nonzero):
    """out: (d_out, d_in) float32 = layer W; nonzero: (d_in,) int32 = its nonzero weights per input column."""
    row32 = np.empty(d_in, dtype=np.int32)  # widening first lets both loops vectorise
    nonzero[:] = 0
    for i in range(d_out):
        base = off + i * d_in
        for j in range(d_in):
            row32[j] = w[base + j]
        row = out[i]
        for j in range(d_in):
            row[j] = row32[j]
            nonzero[j] += np.int32(row32[j] != 0)


@njit(cache=True)
def _weights_float32(w, off, d_out, d_in):
    """Layer W: (d_out, d_in) as float32 and its nonzero weights per input column (int32), row by row."""
    out = np.empty((d_out, d_in), dtype=np.float32)
    nonzero = np.empty(d_in, dtype=np.int32)
    _weights_float32_into(w, off, d_out, d_in, out, nonzero)
    return out, nonzero


@njit(cache=True)
def _sparse_rows_matmul(hin, w, off, d_out, d_in, sums):
    """sums[b, i] = sum_j hin[b, j] W[i, j] over the nonzero hin[b, j] only (exact: integer sums in int64);
    returns the effective MACs (nonzero input x nonzero weight). For few rows or sparse inputs, where BLAS does
    not pay."""
    idx = np.empty(d_in, dtype=np.int64)  # simulator bookkeeping: the nonzero inputs of one row
    vals = np.zeros(d_in, dtype=hin.dtype)
    effective = 0
    for b in range(hin.shape[0]):
        nnz = 0
        for j in range(d_in):
            if hin[b, j] != 0:
                idx[nnz] = j
                vals[nnz] = hin[b, j]
                nnz += 1
        for i in range(d_out):
            base = off + i * d_in
            acc = vals[0] * w[base] * 0
            count = 0
            for t in range(nnz):
                wv = w[base + idx[t]]
                acc += vals[t] * wv
                count += wv != 0
            sums[b, i] = acc
            effective += count
    return effective


@njit(cache=True)
def activation_table(P, uses):
    """tanh of every mantissa of the activation format, as the device's lookup table (float64, as ``activate``
    returns it), when the format has fewer values than ``uses`` outputs to activate; else an empty table."""
    if not (P.quantized and P.act == TANH) or np.int64(P.a_hi - P.a_lo + 1) > uses:
        return np.zeros(0)
    lo = np.int64(P.a_lo)
    table = np.empty(np.int64(P.a_hi) - lo + 1)
    for k in range(table.size):
        table[k] = activate(lo + k, TANH, P.a_one, True)
    return table


@njit(cache=True)
def layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng):
    """pre = requant(hin @ W^T), h = sigma(pre) (h = pre when ``linear``).

    hin: (B, d_in) activation mantissas; acc = sum_j hin[b, j] W[i, j] has scale one_a * w_one, is wrapped to
    the accumulator width, divided by w_one with the forward rounding, then saturated to the activation
    format. pre, h: (B, d_out). Counts dense and effective (nonzero input x nonzero weight) MACs, synaptic
    events, active/inactive neuron updates and bytes.
    """
    cached_layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng, *no_weight_cache())


@njit(cache=True)
def no_weight_cache():
    """Empty cache arguments for ``cached_layer_forward_``: convert the layer on every call."""
    return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.bool_)


@njit(cache=True)
def cached_layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng, w32, nonzero, ready):
    """``layer_forward_`` with a simulator-side float32 copy of the layer kept between calls of one step:
    w32: (d_out, d_in) float32, nonzero: (d_in,) int32 nonzero weights per column, ready: (1,) bool, filled
    on first use (ready[0] set); the caller clears ready[0] whenever W changes. Empty arrays: no cache."""
    if P.analog:
        analog_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng)
        return
    batch = hin.shape[0]
    nnz = np.count_nonzero(hin)
    bound = magnitude(P.a_lo, P.a_hi) * magnitude(P.w_lo, P.w_hi) * d_in
    use32 = integral(hin) and integral(w) and bound <= FLOAT32_EXACT  # exact_matmul's float32 case
    if ready.size > 0:  # the conversion is paid once per step: BLAS unless the inputs are sparse
        blas = use32 and nnz * DENSE_INPUTS > batch * d_in
    else:
        blas = batch >= SMALL_BATCH and nnz > SPARSE_INPUTS * d_in
    if not blas and (batch < SMALL_BATCH or nnz <= SPARSE_INPUTS * d_in):
        sums = np.empty((batch, d_out))
        effective = _sparse_rows_matmul(hin, w, off, d_out, d_in, sums)
    else:
        if use32:  # fused with the weight count of effective_macs
            if ready.size == 0:
                w32, nonzero = _weights_float32(w, off, d_out, d_in)
            elif not ready[0]:
                _weights_float32_into(w, off, d_out, d_in, w32, nonzero)
                ready[0] = True
            sums = np.dot(_as_float32(hin), w32.T).astype(np.float64)
            effective = _effective_from_columns(hin, nonzero)
        else:
            sums = exact_matmul(hin, w[off:off + d_out * d_in].reshape((d_out, d_in)), bound)
            effective = effective_macs(hin, w, off, d_out, d_in)
    shift = log2_exact(w_one) if P.quantized else -1
    table = activation_table(P, batch * d_out)
    s = rng[0]
    for b in range(batch):
        for i in range(d_out):
            if P.quantized:
                acc = np.int64(wrap(np.int64(sums[b, i]), P.acc_lo, P.acc_hi, C, WRAPS))
                acc, s = round_by(acc, w_one, shift, P.fwd_round, s, rng)
                acc = saturate(acc, P.a_lo, P.a_hi, C, SATURATION)
                pre[b, i] = acc
                if table.size > 0:
                    out = table[np.int64(acc) - np.int64(P.a_lo)]
                else:
                    out = activate(acc, P.act, P.a_one, True)
                h[b, i] = out
            else:
                real = sums[b, i] / w_one
                pre[b, i] = real
                out = real if linear else activate(real, P.act, 1.0, False)
                h[b, i] = out
            if linear:  # the output layer: its value is the linear one, activated or not
                out = pre[b, i]
                h[b, i] = out
            if out != 0:
                C[NEURON_ACTIVE] += 1
            else:
                C[NEURON_INACTIVE] += 1
    rng[0] = s
    C[MACS_DENSE] += batch * d_out * d_in
    C[MACS_EFF] += effective
    C[SYN_EVENTS] += effective
    C[SRAM_READ] += batch * (d_out * d_in * P.w_bytes + d_in * P.a_bytes)
    C[SRAM_WRITE] += batch * d_out * P.a_bytes


@njit(cache=True)
def project_(base, src, mat, sign, div, P, out, C, rng):
    """out[b, j] = saturate(base[b, j] + sign * round(sum_k src[b, k] * mat[k, j] / div)).

    src: (B, K) error (or target) mantissas; mat: (K, D) the projection (FOTON's F, PEPITA's F, FTP's G^T),
    read from Flash when ``P.proj_flash``; div rescales src's and mat's scales to the activation format;
    base, out: (B, D).
    """
    batch, k_dim = src.shape
    d = mat.shape[1]
    effective = 0
    shift = log2_exact(div) if P.quantized else -1
    state = rng[0]
    for b in range(batch):
        for j in range(d):
            acc = src[b, 0] * 0
            for k in range(k_dim):
                v = src[b, k]
                if v != 0 and mat[k, j] != 0:
                    acc += v * mat[k, j]
                    effective += 1
            if P.quantized:
                acc, state = round_by(np.int64(acc), div, shift, P.fwd_round, state, rng)
                out[b, j] = saturate(base[b, j] + sign * acc, P.a_lo, P.a_hi, C, SATURATION)
            else:
                out[b, j] = base[b, j] + sign * acc
    rng[0] = state
    C[MACS_DENSE] += batch * d * k_dim
    C[MACS_EFF] += effective
    C[SYN_EVENTS] += effective
    matrix_bytes = batch * d * k_dim * P.p_bytes
    if P.proj_flash:
        C[FLASH_READ] += matrix_bytes
    else:
        C[SRAM_READ] += matrix_bytes
    C[SRAM_READ] += batch * (k_dim * P.e_bytes + d * P.a_bytes)
    C[SRAM_WRITE] += batch * d * P.a_bytes


@njit(cache=True)
def _nonzero_columns(a):
    """Indices j (ascending, int64) where some row of a: (B, D) is nonzero."""
    keep = np.zeros(a.shape[1], dtype=np.bool_)
    for b in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[b, j] != 0:
                keep[j] = True
    return np.nonzero(keep)[0].astype(np.int64)


@njit(cache=True)
def _gather_columns(a, idx):
    """a[:, idx] for a: (B, D) and ascending idx: (K,) int64 -> (B, K), same dtype."""
    out = np.empty((a.shape[0], idx.size), dtype=a.dtype)
    for b in range(a.shape[0]):
        for k in range(idx.size):
            out[b, k] = a[b, idx[k]]
    return out


@njit(cache=True, inline="always")
def _apply_row_(w, base, cols, row, shift, mode, w_lo, w_hi, s):
    """w[base + cols[c]] -= round(row[c] / 2**shift), saturated to [w_lo, w_hi]; returns (s, writes, lost,
    clipped). Stochastic rounding runs branch-free (its outcomes are coin flips a predictor cannot learn) and
    draws only for a nonzero remainder, as round_div does; only changed weights are stored."""
    mask = (np.int64(1) << shift) - 1
    writes = lost = clipped = 0
    for c in range(cols.size):
        scaled = row[c]
        if mode == ROUND_STOCHASTIC:
            rem = scaled & mask
            drawn, u = xorshift_u53(s)
            s = drawn if rem != 0 else s
            step = (scaled >> shift) + ((u & mask) < rem)
        else:
            step, s = round_shift(scaled, shift, mode, s)
        lost += (step == 0) & (scaled != 0)
        if step != 0:
            j = base + cols[c]
            old = np.int64(w[j])
            wanted = old - step
            new = min(max(wanted, w_lo), w_hi)
            clipped += new != wanted
            if new != old:  # an unconditional store costs twice the time
                writes += 1
                w[j] = new
    return s, writes, lost, clipped


@njit(cache=True)
def _integer_update_(w, off, d_in, delta, hin, mul, shift, P, rng):
    """The integer update W[i, j] -= round(mul * g_ij / 2**shift) of ``outer_update_``; returns (writes,
    lost, clipped).

    Only rows i with a nonzero delta[:, i] and columns j with a nonzero hin[:, j] can have g_ij != 0, and a
    zero g changes nothing and draws no random number, so visiting just those pairs (in the same row-major
    order) leaves the weights, the counters and the RNG sequence exactly as a visit of every weight would.
    g is summed directly for a few samples, else through ``exact_matmul`` on the gathered operands.
    """
    batch = delta.shape[0]
    rows, cols = _nonzero_columns(delta), _nonzero_columns(hin)
    n_rows, n_cols = rows.size, cols.size
    grads = np.zeros((0, 0))
    if batch >= SMALL_BATCH and n_rows > 0 and n_cols > 0:
        d_rows = np.ascontiguousarray(_gather_columns(delta, rows).T)  # (n_rows, B), (n_cols, B)
        h_cols = np.ascontiguousarray(_gather_columns(hin, cols).T)
        # the operands' largest magnitudes bound the sums (spike counts have no format)
        grads = exact_matmul(d_rows, h_cols, np.abs(d_rows).max() * np.abs(h_cols).max() * float(batch))
    h_one = np.zeros(n_cols if batch == 1 else 0, dtype=np.int64)  # batch 1: g_ij = delta_i h_j
    for c in range(h_one.size):
        h_one[c] = hin[0, cols[c]]
    imul = np.int64(mul)  # (a float only when compiled for the float reference, which never runs this)
    w_lo, w_hi = np.int64(P.w_lo), np.int64(P.w_hi)
    row = np.empty(n_cols, dtype=np.int64)  # one row of mul * g (the device's accumulator row)
    writes = lost = clipped = 0
    s = rng[0]
    for r in range(n_rows):
        i = rows[r]
        if batch == 1:
            d_one = np.int64(delta[0, i]) * imul
            for c in range(n_cols):
                row[c] = d_one * h_one[c]
        elif batch >= SMALL_BATCH:
            for c in range(n_cols):
                row[c] = np.int64(grads[r, c]) * imul
        else:
            for c in range(n_cols):
                g = np.int64(0)
                for b in range(batch):
                    g += np.int64(delta[b, i]) * np.int64(hin[b, cols[c]])
                row[c] = g * imul
        s, n_writes, n_lost, n_clipped = _apply_row_(w, off + i * d_in, cols, row, shift, P.upd_round, w_lo, w_hi, s)
        writes += n_writes
        lost += n_lost
        clipped += n_clipped
    rng[0] = s
    return writes, lost, clipped


@njit(cache=True, inline="always")
def _take_step_(w, k, step, P):
    """w[k] -= step (an integer step in weight LSBs), saturated to the weight format; returns (writes,
    clipped): 1 when the stored value changed, 1 when it was saturated."""
    new = w[k] - step
    clipped = 0
    if new > P.w_hi:
        new = P.w_hi
        clipped = 1
    elif new < P.w_lo:
        new = P.w_lo
        clipped = 1
    if new != w[k]:
        w[k] = new
        return 1, clipped
    return 0, clipped


@njit(cache=True)
def _dense_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, P, C, rng, g_out):
    """``outer_update_`` visiting every weight: float, analog, collect mode, or a divisor not a power of two;
    returns (writes, lost, clipped)."""
    grads = exact_matmul(np.ascontiguousarray(delta.T), np.ascontiguousarray(hin.T), np.inf)  # (d_out, d_in)
    writes = lost = clipped = 0  # local tallies (C may alias nothing, but the compiler cannot know that)
    for i in range(d_out):
        for j in range(d_in):
            k = off + i * d_in + j
            if P.collect:
                g_out[k] = grads[i, j] * g_scale
            elif P.analog:
                pulse_update_(w, k, -grads[i, j] * mul, P, C, rng)
            elif P.quantized:
                g = np.int64(grads[i, j])
                step = round_div(g * mul, div, P.upd_round, rng)
                if step == 0:
                    if g != 0:
                        lost += 1
                    continue
                n_writes, n_clipped = _take_step_(w, k, step, P)
                writes += n_writes
                clipped += n_clipped
            else:
                new = w[k] - grads[i, j] * mul
                if new != w[k]:
                    writes += 1
                    w[k] = new
    return writes, lost, clipped


@njit(cache=True)
def momentum_update_(w, off, d_out, d_in, delta, hin, vel, mom, P, C, rng):
    """SGD with momentum and weight decay as PyTorch's SGD does it (buf = mu buf + g + wd W; W -= lr buf), for
    one layer: delta (B, d_out), hin (B, d_in), vel the velocity store (the weight store's layout).

    mom: (8,) float64. Float: (g_scale, -, mu, -, wd, -, lr, -), g the batch-averaged g_scale (delta^T hin).
    Integer: the fixed-point multiplier pairs (mul, div, div a power of two) of the velocity, held in units of
    2**-8 weight LSB per unit lr: g (delta^T hin in the data formats) -> g mul_0 / div_0, the decay mu, weight
    decay wd W_q 2**8, and the step lr v 2**-8; each product rounded with the update rounding, the velocity
    saturated to int32, the weight to its format. Counts like ``outer_update_`` (velocity reads and writes
    are SRAM bytes at 4 per value).
    """
    batch = delta.shape[0]
    grads = exact_matmul(np.ascontiguousarray(delta.T), np.ascontiguousarray(hin.T), np.inf)  # (d_out, d_in)
    writes = lost = clipped = 0
    v_lo, v_hi = -(np.int64(1) << 31), (np.int64(1) << 31) - 1
    for i in range(d_out):
        for j in range(d_in):
            k = off + i * d_in + j
            if P.quantized:
                g = np.int64(grads[i, j])
                v = round_div(np.int64(vel[k]) * np.int64(mom[2]), np.int64(mom[3]), P.upd_round, rng) \
                    + round_div(g * np.int64(mom[0]), np.int64(mom[1]), P.upd_round, rng) \
                    + round_div(np.int64(w[k]) * np.int64(mom[4]), np.int64(mom[5]), P.upd_round, rng)
                if v > v_hi or v < v_lo:
                    v = min(max(v, v_lo), v_hi)
                    clipped += 1
                vel[k] = v
                step = round_div(v * np.int64(mom[6]), np.int64(mom[7]), P.upd_round, rng)
                if step == 0:
                    if g != 0:
                        lost += 1
                    continue
                n_writes, n_clipped = _take_step_(w, k, step, P)
                writes += n_writes
                clipped += n_clipped
            else:
                vel[k] = mom[2] * vel[k] + grads[i, j] * mom[0] + mom[4] * w[k]
                new = w[k] - mom[6] * vel[k]
                if new != w[k]:
                    writes += 1
                    w[k] = new
    C[WEIGHT_WRITES] += writes
    C[LOST] += lost
    C[SATURATION] += clipped
    C[MACS_DENSE] += batch * d_out * d_in
    C[SYN_UPDATES] += d_out * d_in
    C[SRAM_READ] += d_out * d_in * (P.w_bytes + 4) + batch * (d_out + d_in) * P.a_bytes
    C[SRAM_WRITE] += d_out * d_in * (P.w_bytes + 4)


@njit(cache=True)
def outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, P, C, rng, g_out):
    """W_l <- W_l - round(mul * (delta^T hin) / div), in place, one weight at a time.

    delta: (B, d_out), hin: (B, d_in). The device forms g row by row (accounted as one accumulator row); the
    simulator computes g exactly through BLAS where that is exact. Device: the integer sum
    g = sum_b delta[b, i] hin[b, j] is scaled by the fixed-point multiplier mul / div (= lr / B in weight LSBs)
    with the update rounding, and the new weight saturates to the weight format; updates that round to 0 are
    counted as lost. Float: W -= g * mul. Analog: the conductance step -g * mul is applied as pulses. With
    P.collect, nothing changes and
    g_out[off + i * d_in + j] = g * g_scale (the real, batch-averaged gradient estimate).
    """
    batch = delta.shape[0]
    shift = log2_exact(div) if P.quantized and not P.collect else -1
    if shift >= 0:
        writes, lost, clipped = _integer_update_(w, off, d_in, delta, hin, mul, shift, P, rng)
    else:
        writes, lost, clipped = _dense_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, P, C, rng,
                                               g_out)
    C[WEIGHT_WRITES] += writes
    C[LOST] += lost
    C[SATURATION] += clipped
    C[MACS_DENSE] += batch * d_out * d_in
    C[SYN_UPDATES] += d_out * d_in
    if not P.analog:
        C[SRAM_READ] += d_out * d_in * P.w_bytes
        C[SRAM_WRITE] += d_out * d_in * P.w_bytes
    C[SRAM_READ] += batch * (d_out + d_in) * P.a_bytes
