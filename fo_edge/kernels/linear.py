"""Layer kernels: forward (quantised matmul, accumulate, requantise, activate) and projection of the output
error through a fixed or computed matrix; the weight updates are in :mod:`fo_edge.kernels.update`.

Weights of every layer live in one flat array ``w`` (as in one SRAM region); layer l occupies
``w[off : off + d_out * d_in]`` row-major, i.e. ``W_l[i, j] = w[off + i * d_in + j]``. Mantissa dtype int64
(device) or float64 (float reference and analog conductances); real weights are ``w / w_one``. ``P`` is
:class:`fo_edge.kernels.steps.Params`; ``C`` one counter row ``C[phase, layer]`` (slots in
:mod:`fo_edge.kernels.counters`); ``rng`` the (1,) uint64 RNG state. Analog devices (``P.analog``) route the
matrix-vector product through :mod:`fo_edge.kernels.analog`. The integer forward and the projection run
sample-parallel (``prange``) where their rounding draws nothing, with per-sample tallies added in order.

Per-channel weight scales (a profile's ``weight_scale = "per-channel"``, CMSIS-NN's per-output-channel
requantisation with power-of-two multipliers): row i of layer l holds W_l[i, :] * 2**(w_frac_l + rs_i), its
own exponent offset rs_i >= 0 above the layer's coarsest row (``rs``: (d_out,) int64, the layer's slice of
the network's ``row_shift``; all zero for per-layer scales, where every kernel reduces to the per-layer one).
"""
import os

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .activations import RELU, TANH, activate
from .analog import analog_forward_
from .counters import (FLASH_READ, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SRAM_READ,
                       SRAM_WRITE, SYN_EVENTS, WRAPS)
from .fixed import ROUND_STOCHASTIC, log2_exact, round_by, round_div_at, round_shift_at, saturate, wrap
from .int8_gemm import INT8_BATCH, MIN_TERMS, fits_int8, int8_matmul_

__all__ = ["layer_forward_", "cached_layer_forward_", "no_weight_cache", "project_", "exact_matmul",
           "effective_macs", "effective_macs_transposed", "activation_table", "layer_rows", "no_row_shift",
           "SMALL_BATCH", "FUSED_BATCH"]

#: below this many rows (or inner terms) exact_matmul sums directly instead of going through BLAS
SMALL_BATCH = 4
#: the layer forward sums only the nonzero inputs directly while they number at most this many times d_in
#: (measured crossover with BLAS on MNIST activity in 784-256-256 int8 layers: about 1.2 d_in)
SPARSE_INPUTS = 1.0
#: from this many rows on (or once the step's float32 copy of W exists) an integer forward converts W and runs
#: ``_fused_forward_``; below it the direct sums over the nonzero inputs cost less than the conversion
FUSED_BATCH = 8
#: integers of magnitude up to 2**24 are exact in float32
FLOAT32_EXACT = 16777216.0
#: with the step's float32 copy of W at hand, a few-row forward goes through BLAS once more than 1/DENSE_INPUTS
#: of its inputs are nonzero (tanh hidden layers), and sums the nonzero inputs directly below that (MNIST pixels)
DENSE_INPUTS = 4
#: how many parts the integer products cut their rows into (one single-threaded BLAS call each): the cores this
#: process may use when first imported (a constant of the compiled kernels; Numba's own get_num_threads() would keep
#: them from being cached). More parts than threads run in turn, fewer leave cores idle; neither changes a result.
SPLIT_PARTS = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


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
def effective_macs_transposed(delta, w, off, d_out, d_in):
    """The effective MACs of delta (B, d_out) times W_l: sum_b sum_ij [delta[b, i] != 0][W[i, j] != 0], as
    sum_i (nonzero delta in column i) x (nonzero weights in row i); reads W in place (no transposed copy)."""
    rows = np.zeros(d_out, dtype=np.int32)  # simulator bookkeeping for the counter, not device memory
    for i in range(d_out):
        base = off + i * d_in
        for j in range(d_in):
            rows[i] += np.int32(w[base + j] != 0)
    return _effective_from_columns(delta, rows)


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


#: rows of W converted together (one parallel iteration) into the step's float32 copy
CONVERT_ROWS = 16


@njit(cache=True)
def _convert_rows_(src, dst, counts):
    """dst: (r, d_in) float32 = src: (r * d_in,) mantissas, row by row; counts[j] += the nonzero src in column
    j. Row views indexed from 0 (no negative-index wraparound), so the loop vectorises."""
    d_in = counts.size
    for r in range(dst.shape[0]):
        row = src[r * d_in:(r + 1) * d_in]
        out = dst[r]
        for j in range(d_in):
            v = row[j]
            out[j] = v
            counts[j] += np.int32(v != 0)


@njit(cache=True, parallel=True)
def _weights_into(w, off, d_out, d_in, out, nonzero):
    """out: (d_out, d_in) float32 or int8 (for weights within int8) = layer W (its row-major layout, so the
    conversion is contiguous); nonzero:
    (d_in,) int32 = its nonzero weights per input column. Converted in blocks of CONVERT_ROWS rows (one block
    per parallel iteration); the column counts are summed over the blocks in order."""
    n_blocks = (d_out + CONVERT_ROWS - 1) // CONVERT_ROWS
    counts = np.zeros((n_blocks, d_in), dtype=np.int32)
    for blk in prange(n_blocks):
        lo = blk * CONVERT_ROWS
        hi = min(lo + CONVERT_ROWS, d_out)
        _convert_rows_(w[off + lo * d_in:off + hi * d_in], out[lo:hi], counts[blk])
    nonzero[:] = 0
    for blk in range(n_blocks):
        for j in range(d_in):
            nonzero[j] += counts[blk, j]


@njit(cache=True)
def _layer_copy(w, off, d_out, d_in, copy, nonzero, ready, k):
    """Layer W as ``copy``'s dtype (d_out, d_in) and its nonzero weights per input column: the step's cached
    copy (filled here unless its flag ready[k] says it already holds W, then flagged), or, with no cache (ready
    empty), fresh arrays. Returns (copy, nonzero)."""
    if ready.size == 0:
        copy = np.empty((d_out, d_in), dtype=copy.dtype)
        nonzero = np.empty(d_in, dtype=np.int32)
        _weights_into(w, off, d_out, d_in, copy, nonzero)
    elif not ready[k]:
        _weights_into(w, off, d_out, d_in, copy, nonzero)
        ready[k] = True
    return copy, nonzero


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


#: below SMALL_BATCH samples an integer forward whose sums are exact in float32 visits every weight
#: (``_few_rows_sums``) once at least this share of its inputs is nonzero, and only the nonzero inputs' columns
#: below it (``_sparse_rows_matmul``): on a 256 x 784 int8 layer at one sample the vectorised visit of all 784
#: columns (21 us) overtakes the gathered visit of the nonzero ones between 10 % and 15 % of them (17 / 23 us)
FEW_ROWS_DENSE = 0.14


@njit(cache=True, fastmath={"reassoc"})
def _few_rows_sums(hin, w, off, d_out, d_in, sums):
    """sums[b, i] = sum_j hin[b, j] W[i, j] for a few samples hin: (B, d_in), W read in its stored width, each row
    against every sample while it is in cache; returns the effective MACs sum_b sum_ij [hin[b, j] != 0][W[i, j] != 0].

    The sums run in float32 over every column, vectorised: exact in any order, since the caller takes this path
    only where every partial sum is an integer below 2**24 (``FLOAT32_EXACT``), which is what makes the
    reassociation the vectoriser needs (fastmath ``reassoc``) change no result; the MAC counts, below 2**24 as
    well, likewise. Numba would widen int32 sums to int64, at half the lanes."""
    batch = hin.shape[0]
    x32 = np.empty((batch, d_in), dtype=np.float32)
    active = np.empty((batch, d_in), dtype=np.float32)  # simulator scratch: 1 where the input is nonzero
    for b in range(batch):
        row = hin[b]
        for j in range(d_in):
            x32[b, j] = row[j]
            active[b, j] = np.float32(row[j] != 0)
    effective = 0
    for i in range(d_out):
        wrow = w[off + i * d_in:off + (i + 1) * d_in]  # a view: j from 0, no negative-index wraparound
        for b in range(batch):
            x_b, a_b = x32[b], active[b]
            acc = np.float32(0.0)
            count = np.float32(0.0)
            for j in range(d_in):
                wv = np.float32(wrow[j])
                acc += x_b[j] * wv
                count += a_b[j] * np.float32(wv != 0)
            sums[b, i] = acc
            effective += np.int64(count)
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


@njit(cache=True, inline="always")
def layer_rows(rs, dims, l):
    """Layer l's slice of a network's per-row exponent offsets ``rs``: (sum_l d_{l+1},) int64 -> (d_{l+1},)."""
    start = 0
    for k in range(l):
        start += dims[k + 1]
    return rs[start:start + dims[l + 1]]


@njit(cache=True)
def no_row_shift(d_out):
    """Per-layer scales: (d_out,) zero exponent offsets."""
    return np.zeros(d_out, dtype=np.int64)


@njit(cache=True)
def layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng):
    """pre = requant(hin @ W^T), h = sigma(pre) (h = pre when ``linear``), with one scale per layer.

    hin: (B, d_in) activation mantissas; acc = sum_j hin[b, j] W[i, j] has scale one_a * w_one, is wrapped to
    the accumulator width, divided by w_one with the forward rounding, then saturated to the activation
    format. pre, h: (B, d_out). Counts dense and effective (nonzero input x nonzero weight) MACs, synaptic
    events, active/inactive neuron updates and bytes.
    """
    cached_layer_forward_(hin, w, off, d_out, d_in, w_one, no_row_shift(d_out), linear, P, pre, h, C, rng,
                          *no_weight_cache())


@njit(cache=True)
def nonzero_columns(a):
    """Indices j (ascending, int64) where some row of a: (B, D) is nonzero."""
    keep = np.zeros(a.shape[1], dtype=np.uint8)
    for b in range(a.shape[0]):
        row = a[b]
        for j in range(row.size):  # branch-free, so the loop vectorises
            keep[j] |= np.uint8(row[j] != 0)
    return np.nonzero(keep)[0].astype(np.int64)


@njit(cache=True)
def gather_as(a, idx, transpose, like):
    """a[:, idx] (B, K) in ``like``'s dtype, or its transpose (K, B) when ``transpose``: a product's operand
    gathered and converted in one pass (float32 for BLAS, exact: integer mantissas below 2**24; int8 for the
    int8 GEMM)."""
    n = a.shape[0]
    if transpose:
        out = np.empty((idx.size, n), dtype=like.dtype)
        for k in range(idx.size):
            col = idx[k]
            for b in range(n):
                out[k, b] = a[b, col]
        return out
    out = np.empty((n, idx.size), dtype=like.dtype)
    for b in range(n):
        row = a[b]
        for k in range(idx.size):
            out[b, k] = row[idx[k]]
    return out


#: the forward sums over the input columns some sample uses once idle columns x batch exceed this many times the
#: active ones (the product saved against gathering W's active columns; measured on MNIST batches, below)
GATHER_COLUMNS = 16


@njit(cache=True, parallel=True)
def _gather_weight_columns(w32, cols):
    """w32[:, cols]: (d_out, len(cols)) float32, one row per parallel iteration."""
    out = np.empty((w32.shape[0], cols.size), dtype=np.float32)
    for i in prange(w32.shape[0]):
        row, out_i = w32[i], out[i]
        for k in range(cols.size):
            out_i[k] = row[cols[k]]
    return out


@njit(cache=True, parallel=True)
def _fused_forward_(hin, w32, nonzero, shift, rs, linear, P, pre, h, C):
    """The integer layer forward: acc = hin @ W^T through BLAS (w32: (d_out, d_in) float32, exact since every
    partial sum is an integer below 2**24), then wrap to the accumulator, round by 2**(shift + rs[i])
    (nearest-even or toward zero: no draws), saturate, activate, exactly as ``cached_layer_forward_``'s serial
    loop. The samples are cut into one part per core (``SPLIT_PARTS``): each part converts its
    inputs, forms its sums by one single-threaded BLAS call and requantises them while they are in cache. Where
    enough input columns are zero in every sample (MNIST's border pixels: a third of them in a batch of 128),
    the sums run over the active columns only, of the inputs and of a gathered copy of W (``GATHER_COLUMNS``):
    the same integers, fewer zero terms. Each
    sample's counts go to its own row of a tally and are added to C in sample order; effective MACs and
    synaptic events are sum_j (nonzero hin[:, j]) x nonzero[j], summed per part. The caller adds the dense
    MACs and bytes."""
    batch = hin.shape[0]
    d_out = w32.shape[0]
    table = activation_table(P, batch * d_out)
    tallies = np.zeros((batch, C.size), dtype=np.int64)
    parts = min(batch, SPLIT_PARTS)
    effective = np.zeros(parts, dtype=np.int64)
    d_in = hin.shape[1]
    cols = nonzero_columns(hin)
    gather = (d_in - cols.size) * batch > GATHER_COLUMNS * cols.size  # idle input columns: sum over the others
    x_op = gather_as(hin, cols, False, w32) if gather else np.zeros((0, 0), dtype=np.float32)
    w_op = _gather_weight_columns(w32, cols).T if gather else w32.T  # (K, d_out)
    for p in prange(parts):
        lo = p * batch // parts
        hi = (p + 1) * batch // parts
        if hi <= lo:
            continue
        part = hin[lo:hi]
        effective[p] = _effective_from_columns(part, nonzero)
        sums = np.dot(x_op[lo:hi] if gather else _as_float32(part), w_op)
        for b in range(lo, hi):
            _requantise_row_(sums[b - lo], shift, rs, linear, P, table, pre[b], h[b], tallies[b])
    for b in range(batch):
        for k in range(C.size):
            C[k] += tallies[b, k]
    total = effective.sum()
    C[MACS_EFF] += total
    C[SYN_EVENTS] += total


@njit(cache=True, inline="always")
def _requantise_row_(acc, shift, rs, linear, P, table, pre_b, h_b, tally):
    """One sample of ``_fused_forward_``: pre_b = saturate(round(wrap(acc) / 2**(shift + rs))), h_b = sigma(pre_b)
    (d_out,); its wraps, saturations and active / inactive neurons into ``tally`` (a counter row)."""
    d_out = acc.size
    acc_lo, acc_hi = np.int64(P.acc_lo), np.int64(P.acc_hi)
    span = acc_hi - acc_lo + 1
    a_lo, a_hi = np.int64(P.a_lo), np.int64(P.a_hi)
    # float32-exact sums lie within +-2**24: an accumulator at least that wide never wraps here
    can_wrap = acc_hi < FLOAT32_EXACT or acc_lo > -FLOAT32_EXACT
    mode, act, one = P.fwd_round, P.act, P.a_one  # locals: P's fields would be reloaded after every store
    wraps = clipped = active = 0
    for i in range(d_out):  # requantise: branch-free unless the accumulator can wrap, so it vectorises
        q = np.int64(acc[i])
        if can_wrap and (q > acc_hi or q < acc_lo):  # two's-complement wrap (kernels.fixed.wrap)
            wraps += 1
            q = (q - acc_lo) % span + acc_lo
        q = round_shift_at(q, shift + rs[i], mode, np.uint64(0), 0)
        clipped += np.int64(q > a_hi) + np.int64(q < a_lo)
        pre_b[i] = min(max(q, a_lo), a_hi)
    if linear:  # then activate, one loop per activation
        for i in range(d_out):
            h_b[i] = pre_b[i]
    elif act == RELU:
        for i in range(d_out):
            h_b[i] = max(pre_b[i], 0)
    elif table.size > 0:
        for i in range(d_out):
            h_b[i] = table[np.int64(pre_b[i]) - a_lo]
    else:
        for i in range(d_out):
            h_b[i] = activate(np.int64(pre_b[i]), act, one, True)
    for i in range(d_out):
        active += np.int64(h_b[i] != 0)
    tally[WRAPS] = wraps
    tally[SATURATION] = clipped
    tally[NEURON_ACTIVE] = active
    tally[NEURON_INACTIVE] = d_out - active


@njit(cache=True, parallel=True)
def _int8_operand_(hin, nonzero, x8):
    """x8 (B, d_in) int8 = hin (integer mantissas within int8), one part of the samples per core; returns the
    effective MACs sum_j (nonzero hin[:, j]) x nonzero[j], summed per part."""
    batch, d_in = hin.shape
    parts = min(batch, SPLIT_PARTS)
    effective = np.zeros(parts, dtype=np.int64)
    for p in prange(parts):
        lo = p * batch // parts
        hi = (p + 1) * batch // parts
        for b in range(lo, hi):
            row, out = hin[b], x8[b]
            for j in range(d_in):
                out[j] = row[j]
        effective[p] = _effective_from_columns(hin[lo:hi], nonzero)
    return effective.sum()


@njit(cache=True, parallel=True)
def _requantise_batch_(acc, shift, rs, linear, P, pre, h, C):
    """Every sample of acc (B, d_out) integer sums through ``_requantise_row_``, in parallel, its counts added
    to C in sample order."""
    batch, d_out = acc.shape
    table = activation_table(P, batch * d_out)
    tallies = np.zeros((batch, C.size), dtype=np.int64)
    for b in prange(batch):
        _requantise_row_(acc[b], shift, rs, linear, P, table, pre[b], h[b], tallies[b])
    for b in range(batch):
        for k in range(C.size):
            C[k] += tallies[b, k]


@njit(cache=True)
def _int8_forward_(hin, w8, nonzero, shift, rs, linear, P, pre, h, C):
    """``_fused_forward_`` with acc = hin @ W^T formed by the int8 GEMM (``int8_gemm.int8_matmul_``: exact int32
    sums, the same integers as float32 BLAS forms below 2**24): hin (B, d_in) and w8 (d_out, d_in) within int8.
    The caller adds the dense MACs and bytes."""
    batch, d_in = hin.shape
    x8 = np.empty((batch, d_in), dtype=np.int8)
    effective = _int8_operand_(hin, nonzero, x8)
    acc = np.empty((batch, w8.shape[0]), dtype=np.int32)
    int8_matmul_(x8, w8.T, acc)
    _requantise_batch_(acc, shift, rs, linear, P, pre, h, C)
    C[MACS_EFF] += effective
    C[SYN_EVENTS] += effective


@njit(cache=True)
def no_weight_cache():
    """Empty cache arguments for ``cached_layer_forward_``: convert the layer on every call."""
    return (np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.bool_),
            np.zeros((0, 0), dtype=np.int8))


@njit(cache=True)
def cached_layer_forward_(hin, w, off, d_out, d_in, w_one, rs, linear, P, pre, h, C, rng, w32, nonzero, ready, w8):
    """``layer_forward_`` with row i's exponent offset rs[i] (its accumulator is divided by w_one * 2**rs[i]),
    and simulator-side float32 and int8 copies of the layer kept between calls of one step:
    w32: (d_out, d_in) float32 = W, w8: (d_out, d_in) int8 = W, nonzero: (d_in,) int32 nonzero weights per
    column, ready: (2,) bool, w32's and w8's flags, each copy filled on first use (its flag set); the caller
    clears both whenever W changes. Empty arrays: no cache.

    Integer layers whose sums are exact in float32 and whose rounding draws nothing go through
    ``_int8_forward_`` (the int8 GEMM, from INT8_BATCH samples on, where inputs and weights are int8) or
    ``_fused_forward_`` (float32 BLAS, parallel over samples); the others through the paths below."""
    if P.analog:
        analog_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng)
        return
    batch = hin.shape[0]
    bound = magnitude(P.a_lo, P.a_hi) * magnitude(P.w_lo, P.w_hi) * d_in
    use32 = integral(hin) and integral(w) and bound <= FLOAT32_EXACT  # exact_matmul's float32 case
    shift = log2_exact(w_one) if P.quantized else -1
    fused = use32 and P.quantized and P.fwd_round != ROUND_STOCHASTIC and shift >= 0
    if (fused and batch >= INT8_BATCH and d_in >= MIN_TERMS and fits_int8(P.a_lo, P.a_hi)
            and fits_int8(P.w_lo, P.w_hi)):
        w8, nonzero = _layer_copy(w, off, d_out, d_in, w8, nonzero, ready, 1)
        _int8_forward_(hin, w8, nonzero, shift, rs, linear, P, pre, h, C)
        _charge_dense_(C, batch, d_out, d_in, P)
        return
    if fused and (batch >= FUSED_BATCH or (ready.size > 0 and ready[0])):
        w32, nonzero = _layer_copy(w, off, d_out, d_in, w32, nonzero, ready, 0)
        _fused_forward_(hin, w32, nonzero, shift, rs, linear, P, pre, h, C)
        _charge_dense_(C, batch, d_out, d_in, P)
        return
    nnz = np.count_nonzero(hin)
    if ready.size > 0:  # the conversion is paid once per step: BLAS unless the inputs are sparse
        blas = use32 and nnz * DENSE_INPUTS > batch * d_in
    else:
        blas = batch >= SMALL_BATCH and nnz > SPARSE_INPUTS * d_in
    if use32 and batch < SMALL_BATCH and nnz >= FEW_ROWS_DENSE * batch * d_in:
        sums = np.empty((batch, d_out))
        effective = _few_rows_sums(hin, w, off, d_out, d_in, sums)
    elif not blas and (batch < SMALL_BATCH or nnz <= SPARSE_INPUTS * d_in):
        sums = np.empty((batch, d_out))
        effective = _sparse_rows_matmul(hin, w, off, d_out, d_in, sums)
    else:
        if use32:  # fused with the weight count of effective_macs
            w32, nonzero = _layer_copy(w, off, d_out, d_in, w32, nonzero, ready, 0)
            sums = np.dot(_as_float32(hin), w32.T).astype(np.float64)
            effective = _effective_from_columns(hin, nonzero)
        else:
            sums = exact_matmul(hin, w[off:off + d_out * d_in].reshape((d_out, d_in)), bound)
            effective = effective_macs(hin, w, off, d_out, d_in)
    table = activation_table(P, batch * d_out)
    s = rng[0]
    for b in range(batch):
        for i in range(d_out):
            if P.quantized:
                acc = np.int64(wrap(np.int64(sums[b, i]), P.acc_lo, P.acc_hi, C, WRAPS))
                acc, s = round_by(acc, w_one * (np.int64(1) << rs[i]), shift + rs[i] if shift >= 0 else -1,
                                  P.fwd_round, s, rng)
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
    C[MACS_EFF] += effective
    C[SYN_EVENTS] += effective
    _charge_dense_(C, batch, d_out, d_in, P)


@njit(cache=True, inline="always")
def _charge_dense_(C, batch, d_out, d_in, P):
    """A layer forward's dense MACs (B d_out d_in) and SRAM traffic: W read once per sample (bytes), the inputs
    read and the outputs written."""
    C[MACS_DENSE] += batch * d_out * d_in
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
    shift = log2_exact(div) if P.quantized else -1
    if not (P.quantized and P.fwd_round == ROUND_STOCHASTIC):
        effective = _project_rows_(base, src, mat, sign, div, shift, P, out, C)
    else:
        effective = _project_serial_(base, src, mat, sign, div, shift, P, out, C, rng)
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


@njit(cache=True, parallel=True)
def _project_rows_(base, src, mat, sign, div, shift, P, out, C):
    """``project_`` when its rounding draws nothing: one sample per parallel iteration, the sum over k formed
    for a whole row at once (k ascending for every j, skipping zero terms, as the serial loop sums), saturations
    tallied per sample and added to C in order; returns the effective MACs."""
    batch, k_dim = src.shape
    d = mat.shape[1]
    clipped = np.zeros(batch, dtype=np.int64)
    effective = np.zeros(batch, dtype=np.int64)
    nonzero = np.zeros(k_dim, dtype=np.int64)  # nonzero entries of each row of mat
    for k in range(k_dim):
        m_row = mat[k]
        for j in range(d):
            nonzero[k] += np.int64(m_row[j] != 0)
    quantized, mode, lo, hi = P.quantized, P.fwd_round, P.a_lo, P.a_hi  # locals (see steps.local_error_)
    for b in prange(batch):
        acc = np.zeros(d, dtype=out.dtype)
        eff = 0
        for k in range(k_dim):
            v = src[b, k]
            if v != 0:  # zero terms add nothing (their products are 0): summed all the same, in k order
                m_row = mat[k]
                for j in range(d):
                    acc[j] += v * m_row[j]
                eff += nonzero[k]
        effective[b] = eff
        n_clipped = 0
        base_b, out_b = base[b], out[b]
        if quantized and shift >= 0:  # branch-free, so the loop vectorises
            for j in range(d):
                value = base_b[j] + sign * round_shift_at(np.int64(acc[j]), shift, mode, np.uint64(0), 0)
                n_clipped += np.int64(value > hi) + np.int64(value < lo)
                out_b[j] = min(max(value, lo), hi)
        elif quantized:
            for j in range(d):
                value = base_b[j] + sign * round_div_at(np.int64(acc[j]), np.int64(div), mode, np.uint64(0), 0)
                n_clipped += np.int64(value > hi) + np.int64(value < lo)
                out_b[j] = min(max(value, lo), hi)
        else:
            for j in range(d):
                out_b[j] = base_b[j] + sign * acc[j]
        clipped[b] = n_clipped
    total = 0
    for b in range(batch):
        C[SATURATION] += clipped[b]
        total += effective[b]
    return total


@njit(cache=True)
def _project_serial_(base, src, mat, sign, div, shift, P, out, C, rng):
    """``project_`` drawing from the stream (stochastic forward rounding), sample by sample; returns the
    effective MACs."""
    batch, k_dim = src.shape
    d = mat.shape[1]
    effective = 0
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
    return effective
