"""Weight updates in place on the flat weight store: the rank-B outer-product update of plain SGD
(``outer_update_``), and SGD with momentum and weight decay (``momentum_update_``).

Layout, dtypes, ``P``, ``C`` and ``rng`` as in :mod:`fo_edge.kernels.linear`. Integer devices round each weight
step with the update rounding; stochastic rounding draws ``rng.counter_u53(key, index)``, one key per layer
update from the run's stream and the weight's flat index inside the layer as the counter, so the rows are
updated in parallel (``prange``) with per-row tallies, bit-identical for any thread count. Analog devices
apply the step as pulses (:mod:`fo_edge.kernels.analog`, from the serial stream).

``rs``: the layer's per-row exponent offsets (see :mod:`fo_edge.kernels.linear`): row i's LSB is 2**-rs[i] of
the layer's, so its step in its own LSBs is the layer's step times 2**rs[i] (one shift fewer, or a multiplier
shifted left, never a division more). All zero for per-layer scales.
"""
import numpy as np
from numba import njit, prange

from .analog import pulse_update_
from .counters import LOST, MACS_DENSE, SATURATION, SRAM_READ, SRAM_WRITE, SYN_UPDATES, WEIGHT_WRITES
from .fixed import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, log2_exact, round_div_at, round_shift_at
from .int8_gemm import INT8_BATCH, INT8_HI, fits_int8, int8_matmul_
from .linear import (FLOAT32_EXACT, GATHER_COLUMNS, SMALL_BATCH, SPLIT_PARTS, exact_matmul, gather_as, integral,
                     nonzero_columns)
from .rng import next_u53

__all__ = ["outer_update_", "int8_outer_update_", "momentum_update_", "rescale_rows_", "rescale_network_",
           "DENSE_COLUMNS", "MAX_ROW_SHIFT"]


@njit(cache=True)
def _gather_columns(a, idx):
    """a[:, idx] for a: (B, D) and ascending idx: (K,) int64 -> (B, K), same dtype."""
    out = np.empty((a.shape[0], idx.size), dtype=a.dtype)
    for b in range(a.shape[0]):
        for k in range(idx.size):
            out[b, k] = a[b, idx[k]]
    return out


@njit(cache=True)
def _peak(a):
    """max |a| over a 2-D array as a float (0.0 when empty), without a temporary (integer operands take
    ``_scan_`` instead)."""
    peak = 0.0
    for b in range(a.shape[0]):
        for j in range(a.shape[1]):
            peak = max(peak, abs(float(a[b, j])))
    return peak


@njit(cache=True)
def _scan_(a):
    """An integer operand a: (B, D) scanned once, one part of its rows per core: returns (a as float32 (B, D),
    the ascending indices of its nonzero columns (int64), max |a| as a float). Exact: mantissas below 2**24."""
    out = np.empty(a.shape, dtype=np.float32)
    cols, peak = _scan_into_(a, out)
    return out, cols, peak


@njit(cache=True)
def _scan8_(a):
    """``_scan_`` with a as int8 (B, D): exact where max |a| <= 127 (the returned peak says)."""
    out = np.empty(a.shape, dtype=np.int8)
    cols, peak = _scan_into_(a, out)
    return out, cols, peak


@njit(cache=True, parallel=True)
def _scan_into_(a, out):
    """out (B, D) = a, converted; returns (the ascending indices of a's nonzero columns (int64), max |a| as a
    float), one part of the rows per core."""
    n, d = a.shape
    parts = max(1, min(n, SPLIT_PARTS))
    keep = np.zeros((parts, d), dtype=np.uint8)
    peaks = np.zeros(parts, dtype=np.int64)
    for p in prange(parts):
        keep_p = keep[p]
        top = np.int64(0)
        for b in range(p * n // parts, (p + 1) * n // parts):
            row, out_b = a[b], out[b]
            for j in range(d):
                v = np.int64(row[j])
                out_b[j] = v
                keep_p[j] |= np.uint8(v != 0)
                top = max(top, max(v, -v))
        peaks[p] = top
    flags = keep[0].copy()
    for p in range(1, parts):
        flags |= keep[p]
    return np.nonzero(flags)[0].astype(np.int64), float(peaks.max())


@njit(cache=True)  # called, not inlined: inlined into its 3 parallel callers, outer_update_ compiled in 33 s, not 28
def _apply_row_(wrow, cols, row, mul, shift, mode, w_lo, w_hi, key, kbase, steps):
    """wrow[cols[c]] -= round(row[c] * mul / 2**shift) (row: integer sums, or exact ones in float), saturated to
    [w_lo, w_hi], for every c; wrow: one row of the layer (a view of the weight store), whose weight at layer index
    kbase + cols[c] rounds with the draw ``counter_u53(key, kbase + cols[c])``. steps: int64 scratch of at least
    cols.size. Returns (writes, lost, clipped): stored values that changed, nonzero steps that rounded to 0,
    saturated weights.

    In two loops: the rounded steps first, over contiguous arrays (the draws' hashing vectorises; the compiler
    hoists the mode out of the loop), then the scattered read-modify-write of the weights, which does not
    (measured on a 256 x 784 int8 layer at one sample, stochastic rounding: 4.2 ns a weight in one loop)."""
    lost = _row_steps_(cols, row, mul, shift, mode, key, kbase, steps)
    writes = clipped = 0
    for c in range(cols.size):  # (unsigned indices: no negative-index wraparound)
        j = np.uint64(cols[c])
        old = np.int64(wrow[j])
        wanted = old - steps[c]
        new = min(max(wanted, w_lo), w_hi)
        clipped += np.int64(new != wanted)
        writes += np.int64(new != old)
        wrow[j] = new
    return writes, lost, clipped


@njit(cache=True, inline="always")
def _row_steps_(cols, row, mul, shift, mode, key, kbase, steps):
    """steps[c] = round(row[c] * mul / 2**shift), drawing ``counter_u53(key, kbase + cols[c])``; returns the lost
    updates (nonzero products that rounded to 0). Branch-free, so the loop vectorises."""
    lost = 0
    for c in range(cols.size):
        scaled = np.int64(row[c]) * mul
        step = round_shift_at(scaled, shift, mode, key, kbase + cols[c])
        lost += np.int64((step == 0) & (scaled != 0))
        steps[c] = step
    return lost


@njit(cache=True, inline="always")
def _apply_contiguous_(wrow, row, mul, shift, mode, w_lo, w_hi, key, kbase):
    """``_apply_row_`` over every column of a row: wrow[j] -= round(row[j] * mul / 2**shift), draws
    ``counter_u53(key, kbase + j)``. wrow is the row's view of the store and j runs from 0, so Numba emits no
    negative-index wraparound, and each rounding mode gets its own loop (a constant inside it), so the loop
    vectorises. Returns (writes, lost, clipped)."""
    if mode == ROUND_STOCHASTIC:
        return _contiguous_loop_(wrow, row, mul, shift, ROUND_STOCHASTIC, w_lo, w_hi, key, kbase)
    if mode == ROUND_NEAREST_EVEN:
        return _contiguous_loop_(wrow, row, mul, shift, ROUND_NEAREST_EVEN, w_lo, w_hi, key, kbase)
    return _contiguous_loop_(wrow, row, mul, shift, mode, w_lo, w_hi, key, kbase)


@njit(cache=True, inline="always")
def _contiguous_loop_(wrow, row, mul, shift, mode, w_lo, w_hi, key, kbase):
    """The loop of ``_apply_contiguous_``."""
    writes = lost = clipped = 0
    for j in range(row.size):
        scaled = np.int64(row[j]) * mul
        step = round_shift_at(scaled, shift, mode, key, kbase + j)
        old = np.int64(wrow[j])
        wanted = old - step
        new = min(max(wanted, w_lo), w_hi)
        lost += np.int64((step == 0) & (scaled != 0))
        clipped += np.int64(new != wanted)
        writes += np.int64(new != old)
        wrow[j] = new
    return writes, lost, clipped


@njit(cache=True, inline="always")
def _row_scale(imul, shift, r_shift):
    """(multiplier, shift) of a row r_shift exponent bits finer than the layer: imul / 2**(shift - r_shift),
    the multiplier shifted left where r_shift exceeds shift."""
    if r_shift <= shift:
        return imul, shift - r_shift
    return imul << (r_shift - shift), np.int64(0)


@njit(cache=True, parallel=True)
def _rows_from_sums_(w, off, d_in, rows, cols, dense, grads, imul, shift, rs, mode, w_lo, w_hi, key, tallies):
    """For every r (in parallel): layer row i = rows[r] takes the step round(imul * grads[r, c] * 2**rs[i] /
    2**shift) at column cols[c] (``_apply_row_``; every column, contiguously, when ``dense``:
    ``_apply_contiguous_``); its (writes, lost, clipped) go to tallies[r]. grads: (len(rows), len(cols)) exact
    integer sums in float32 or float64."""
    for r in prange(rows.size):
        i = rows[r]
        r_mul, r_shift = _row_scale(imul, shift, rs[i])
        wrow = w[off + i * d_in:off + (i + 1) * d_in]
        if dense:  # g's row times the multiplier: the device's accumulator row, formed as it is applied
            n_w, n_l, n_c = _apply_contiguous_(wrow, grads[r], r_mul, r_shift, mode, w_lo, w_hi, key, i * d_in)
        else:
            n_w, n_l, n_c = _apply_row_(wrow, cols, grads[r], r_mul, r_shift, mode, w_lo, w_hi, key, i * d_in,
                                        np.empty(cols.size, dtype=np.int64))
        tallies[r, 0], tallies[r, 1], tallies[r, 2] = n_w, n_l, n_c


@njit(cache=True, parallel=True)
def _dot_rows_(w, off, d_in, rows, cols, dense, d32, h32, spread, imul, shift, rs, mode, w_lo, w_hi, key,
               tallies):
    """``_rows_from_sums_`` with g = d32 @ h32 (d32: (len(rows), B), h32: (B, len(cols)) float32, every sum an
    integer below 2**24, so exact in any order) formed part by part, one part of the rows per core
    (``linear.SPLIT_PARTS``): each part is one single-threaded BLAS call (BLAS's own threads would busy-wait
    beside the parallel loop) whose rows are applied at once, while they are still in cache (measured 7-14 %
    faster than the product and then the rows).
    ``spread`` (ascending column indices; empty: none): h32 holds only those columns of the inputs, the others
    being zero in every sample, and each row of g is spread over a whole row of zeros before the dense visit
    (the same steps as the full product's, for fewer terms)."""
    n_rows = rows.size
    parts = min(n_rows, SPLIT_PARTS)
    for p in prange(parts):
        lo = p * n_rows // parts
        hi = (p + 1) * n_rows // parts
        if hi <= lo:
            continue
        grads = np.dot(d32[lo:hi], h32)
        full = np.zeros(d_in if spread.size > 0 else 0, dtype=np.float32)  # zero at the idle columns throughout
        steps = np.empty(0 if dense else cols.size, dtype=np.int64)
        for r in range(lo, hi):
            i = rows[r]
            r_mul, r_shift = _row_scale(imul, shift, rs[i])
            wrow = w[off + i * d_in:off + (i + 1) * d_in]
            if spread.size > 0:
                g_row = grads[r - lo]
                for k in range(spread.size):
                    full[spread[k]] = g_row[k]
                n_w, n_l, n_c = _apply_contiguous_(wrow, full, r_mul, r_shift, mode, w_lo, w_hi, key, i * d_in)
            elif dense:
                n_w, n_l, n_c = _apply_contiguous_(wrow, grads[r - lo], r_mul, r_shift, mode, w_lo, w_hi, key,
                                                   i * d_in)
            else:
                n_w, n_l, n_c = _apply_row_(wrow, cols, grads[r - lo], r_mul, r_shift, mode, w_lo, w_hi, key,
                                            i * d_in, steps)
            tallies[r, 0], tallies[r, 1], tallies[r, 2] = n_w, n_l, n_c


#: the update visits every column of a row (contiguously, vectorised) once at least this fraction of the columns
#: has a nonzero input, and only the nonzero columns (gathered) below it: on a 256 x 784 int8 layer with
#: stochastic rounding the contiguous visit, now vectorised, overtakes the gathered one between 20 % and 45 %
DENSE_COLUMNS = 0.3


@njit(cache=True, parallel=True)
def _integer_update_(w, off, d_in, delta, hin, mul, shift, rs, P, rng, gemm8):
    """The integer update W[i, j] -= round(mul * g_ij * 2**rs[i] / 2**shift) of ``outer_update_``; returns
    (writes, lost, clipped).

    Stochastic rounding draws ``counter_u53(key, i * d_in + j)`` for weight (i, j), with key one draw of the
    run's stream per update (kernels.rng), so no weight's result depends on the visiting order: rows are
    updated in parallel (``prange``) and each row's tallies go to its own slot, summed in row order, which
    makes weights and counters bit-identical for any thread count. Only rows i with a nonzero delta[:, i] can
    change, and of their columns only those j with a nonzero hin[:, j] (a zero g changes nothing and, the
    draws being counter-based, consumes nothing): those are visited when they are few, all columns
    contiguously when they are most (DENSE_COLUMNS). From SMALL_BATCH samples on g comes from BLAS on the
    gathered operands (float32 where every sum is an integer below 2**24), below it from direct sums.
    """
    batch = delta.shape[0]
    key = np.uint64(next_u53(rng))
    blas32 = batch >= SMALL_BATCH and integral(delta) and integral(hin)
    if gemm8 is not None:  # pruned at compile time where gemm8 is None (``outer_update_``)
        if blas32 and batch >= INT8_BATCH and fits_int8(P.a_lo, P.a_hi) and fits_int8(P.e_lo, P.e_hi):
            d8, rows, peak_d = _scan8_(delta)
            h8, cols, peak_h = _scan8_(hin)
            if peak_d <= INT8_HI and peak_h <= INT8_HI:  # else (spike counts, say) the float32 path below
                return _int8_update_(w, off, d_in, d8, h8, rows, cols, np.int64(mul), shift, rs, P, key)
    if blas32:  # each operand scanned once, in parallel: float32 copy, nonzero columns, peak
        d32, rows, peak_d = _scan_(delta)
        h32, cols, peak_h = _scan_(hin)
    else:
        d32, h32 = np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
        rows, cols = nonzero_columns(delta), nonzero_columns(hin)
        peak_d = peak_h = 0.0
    n_rows = rows.size
    imul = np.int64(mul)  # (a float only when compiled for the float reference, which never runs this)
    w_lo, w_hi = np.int64(P.w_lo), np.int64(P.w_hi)
    tallies = np.zeros((n_rows, 3), dtype=np.int64)
    if batch >= SMALL_BATCH and n_rows > 0:
        # g = delta[:, rows]^T hin[:, cols] through BLAS (float32 where exact), then the rows in parallel: all
        # columns contiguously when most inputs are active, else only the active ones
        dense = cols.size >= DENSE_COLUMNS * d_in
        active = cols
        if dense:
            cols = np.arange(d_in)
        # the operands' largest magnitudes bound the sums (spike counts have no format); the columns left out
        # of the gathered operands are zero, so the whole arrays' peaks are theirs
        if not blas32:
            peak_d, peak_h = _peak(delta), _peak(hin)
        bound = peak_d * peak_h * float(batch) if cols.size > 0 else 0.0
        if blas32 and bound <= FLOAT32_EXACT:  # the float32 copies, gathered where some columns are idle
            # dense with idle columns: the product over the active ones, spread back (linear.GATHER_COLUMNS)
            spread = dense and (d_in - active.size) * batch > GATHER_COLUMNS * active.size
            h_op = gather_as(h32, active if spread else cols, False, h32) if spread or not dense else h32
            _dot_rows_(w, off, d_in, rows, cols, dense, gather_as(d32, rows, True, d32), h_op,
                       active if spread else active[:0], imul, shift, rs, P.upd_round, w_lo, w_hi, key, tallies)
        else:
            d_rows = np.ascontiguousarray(_gather_columns(delta, rows).T)  # (n_rows, B)
            h_sel = hin if dense else _gather_columns(hin, cols)  # (B, n_cols)
            _rows_from_sums_(w, off, d_in, rows, cols, dense,
                             exact_matmul(d_rows, np.ascontiguousarray(h_sel.T), bound), imul, shift, rs,
                             P.upd_round, w_lo, w_hi, key, tallies)
    elif n_rows > 0:
        # a few samples: each row's sums formed directly, over every column contiguously when most inputs are
        # active (the zero columns' steps are 0 and change nothing), else over the active ones
        dense = cols.size >= DENSE_COLUMNS * d_in
        if dense:
            cols = np.arange(d_in)
        n_cols = cols.size
        h_sel = np.zeros((batch, n_cols), dtype=np.int64)
        for b in range(batch):
            h_row = hin[b]
            for c in range(n_cols):
                h_sel[b, c] = h_row[cols[c]]
        mode = P.upd_round
        for r in prange(n_rows):
            i = rows[r]
            r_mul, r_shift = _row_scale(imul, shift, rs[i])
            if batch == 1:  # the row of g is delta x h: h's row times the scalar, no sums to form
                row, row_mul = h_sel[0], np.int64(delta[0, i]) * r_mul
            else:
                row, row_mul = np.zeros(n_cols, dtype=np.int64), np.int64(1)
                for b in range(batch):
                    d_b = np.int64(delta[b, i]) * r_mul
                    if d_b != 0:
                        h_b = h_sel[b]
                        for c in range(n_cols):
                            row[c] += d_b * h_b[c]
            wrow = w[off + i * d_in:off + (i + 1) * d_in]
            if dense:
                n_w, n_l, n_c = _apply_contiguous_(wrow, row, row_mul, r_shift, mode, w_lo, w_hi, key, i * d_in)
            else:
                n_w, n_l, n_c = _apply_row_(wrow, cols, row, row_mul, r_shift, mode, w_lo, w_hi, key, i * d_in,
                                            np.empty(n_cols, dtype=np.int64))
            tallies[r, 0], tallies[r, 1], tallies[r, 2] = n_w, n_l, n_c
    return _tally_sums(tallies)


@njit(cache=True)
def _int8_update_(w, off, d_in, d8, h8, rows, cols, imul, shift, rs, P, key):
    """``_integer_update_``'s product through the int8 GEMM: g = d8[:, rows]^T h8 (every column when most are
    active, else the active ones gathered) as exact int32 sums (``int8_gemm.int8_matmul_``), then the rows in
    parallel (``_rows_from_sums_``): the integers the float32 path forms, so the same steps and draws.
    d8: (B, d_out), h8: (B, d_in) int8; rows / cols: the nonzero columns of each. Returns (writes, lost,
    clipped)."""
    n_rows = rows.size
    tallies = np.zeros((n_rows, 3), dtype=np.int64)
    if n_rows > 0 and cols.size > 0:
        dense = cols.size >= DENSE_COLUMNS * d_in
        if dense:
            cols = np.arange(d_in)
        d_rows = gather_as(d8, rows, True, d8)  # (n_rows, B)
        h_op = h8 if dense else gather_as(h8, cols, False, h8)  # (B, n_cols)
        grads = np.empty((n_rows, cols.size), dtype=np.int32)
        int8_matmul_(d_rows, h_op, grads)
        _rows_from_sums_(w, off, d_in, rows, cols, dense, grads, imul, shift, rs, P.upd_round,
                         np.int64(P.w_lo), np.int64(P.w_hi), key, tallies)
    return _tally_sums(tallies)


@njit(cache=True, inline="always")
def _tally_sums(tallies):
    """(writes, lost, clipped): the per-row tallies (rows, 3) summed in row order."""
    writes = lost = clipped = 0
    for r in range(tallies.shape[0]):
        writes += tallies[r, 0]
        lost += tallies[r, 1]
        clipped += tallies[r, 2]
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


@njit(cache=True, inline="always")
def _integer_step_(w, k, step, g, P):
    """``_take_step_`` for a rounded step of gradient g; returns (writes, lost, clipped): a nonzero g whose
    step rounded to 0 is a lost update and leaves w[k] as it is."""
    if step == 0:
        return np.int64(0), np.int64(g != 0), np.int64(0)
    n_writes, n_clipped = _take_step_(w, k, step, P)
    return np.int64(n_writes), np.int64(0), np.int64(n_clipped)


@njit(cache=True, inline="always")
def _float_write_(w, k, new):
    """w[k] = new (float weights); returns 1 when the stored value changed."""
    if new != w[k]:
        w[k] = new
        return 1
    return 0


@njit(cache=True)
def _dense_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out):
    """``outer_update_`` visiting every weight: float, analog, collect mode, or a divisor not a power of two;
    returns (writes, lost, clipped)."""
    grads = exact_matmul(np.ascontiguousarray(delta.T), np.ascontiguousarray(hin.T), np.inf)  # (d_out, d_in)
    integer = P.quantized and not P.collect and not P.analog
    key = np.uint64(next_u53(rng)) if integer else np.uint64(0)  # counter-based draws, as _integer_update_
    writes = lost = clipped = 0  # local tallies (C may alias nothing, but the compiler cannot know that)
    k_div = log2_exact(div)
    for i in range(d_out):
        # row i's (multiplier, divisor): a power-of-two divisor takes the row's shift as _integer_update_ does
        # (the same draws), any other divisor a multiplier times 2**rs[i]
        r_mul, r_div = np.int64(mul) * (np.int64(1) << rs[i]), np.int64(div)
        if k_div >= 0:
            r_mul, r_shift = _row_scale(np.int64(mul), k_div, rs[i])
            r_div = np.int64(1) << r_shift
        for j in range(d_in):
            k = off + i * d_in + j
            if P.collect:
                g_out[k] = grads[i, j] * g_scale
            elif P.analog:
                pulse_update_(w, k, -grads[i, j] * mul, P, C, rng)
            elif integer:
                g = np.int64(grads[i, j])
                step = round_div_at(g * r_mul, r_div, P.upd_round, key, i * d_in + j)
                n_w, n_l, n_c = _integer_step_(w, k, step, g, P)
                writes += n_w
                lost += n_l
                clipped += n_c
            else:
                writes += _float_write_(w, k, w[k] - grads[i, j] * mul)
    return writes, lost, clipped


@njit(cache=True, inline="always")
def _momentum_row_(w, vel, base, grads_row, mom, r_shift, P, key, kbase, v_lo, v_hi):
    """One row of ``momentum_update_`` (weights w[base:base + d_in], exponent offset r_shift: g enters its
    velocity times 2**r_shift); returns (writes, lost, clipped). The integer weight at layer index
    k = kbase + j rounds its four products with the draws ``counter_u53(key, 4 k + m)``, m = 0..3."""
    writes = lost = clipped = 0
    for j in range(grads_row.size):
        k = base + j
        if P.quantized:
            g = np.int64(grads_row[j])
            idx = 4 * (kbase + j)
            v = round_div_at(np.int64(vel[k]) * np.int64(mom[2]), np.int64(mom[3]), P.upd_round, key, idx) \
                + round_div_at((g * np.int64(mom[0])) << r_shift, np.int64(mom[1]), P.upd_round, key, idx + 1) \
                + round_div_at(np.int64(w[k]) * np.int64(mom[4]), np.int64(mom[5]), P.upd_round, key, idx + 2)
            if v > v_hi or v < v_lo:
                v = min(max(v, v_lo), v_hi)
                clipped += 1
            vel[k] = v
            n_w, n_l, n_c = _integer_step_(w, k, round_div_at(v * np.int64(mom[6]), np.int64(mom[7]), P.upd_round,
                                                              key, idx + 3), g, P)
            writes += n_w
            lost += n_l
            clipped += n_c
        else:
            vel[k] = mom[2] * vel[k] + grads_row[j] * mom[0] + mom[4] * w[k]
            writes += _float_write_(w, k, w[k] - mom[6] * vel[k])
    return writes, lost, clipped


@njit(cache=True, parallel=True)
def momentum_update_(w, off, d_out, d_in, delta, hin, vel, mom, rs, P, C, rng):
    """SGD with momentum and weight decay as PyTorch's SGD does it (buf = mu buf + g + wd W; W -= lr buf), for
    one layer: delta (B, d_out), hin (B, d_in), vel the velocity store (the weight store's layout).

    mom: (8,) float64. Float: (g_scale, -, mu, -, wd, -, lr, -), g the batch-averaged g_scale (delta^T hin).
    Integer: the fixed-point multiplier pairs (mul, div, div a power of two) of the velocity, held in units of
    2**-8 weight LSB per unit lr: g (delta^T hin in the data formats) -> g mul_0 / div_0, the decay mu, weight
    decay wd W_q 2**8, and the step lr v 2**-8; each product rounded with the update rounding (counter-based
    draws, one key per update from the stream: see ``_momentum_row_``), the velocity saturated to int32, the
    weight to its format. Rows run in parallel with per-row tallies. Counts like ``outer_update_`` (velocity
    reads and writes are SRAM bytes at 4 per value).
    """
    batch = delta.shape[0]
    grads = exact_matmul(np.ascontiguousarray(delta.T), np.ascontiguousarray(hin.T), np.inf)  # (d_out, d_in)
    key = np.uint64(next_u53(rng)) if P.quantized else np.uint64(0)
    v_lo, v_hi = -(np.int64(1) << 31), (np.int64(1) << 31) - 1
    tallies = np.zeros((d_out, 3), dtype=np.int64)
    for i in prange(d_out):
        tallies[i, 0], tallies[i, 1], tallies[i, 2] = _momentum_row_(w, vel, off + i * d_in, grads[i], mom, rs[i], P,
                                                                     key, i * d_in, v_lo, v_hi)
    writes, lost, clipped = _tally_sums(tallies)
    C[WEIGHT_WRITES] += writes
    C[LOST] += lost
    C[SATURATION] += clipped
    C[MACS_DENSE] += batch * d_out * d_in
    C[SYN_UPDATES] += d_out * d_in
    C[SRAM_READ] += d_out * d_in * (P.w_bytes + 4) + batch * (d_out + d_in) * P.a_bytes
    C[SRAM_WRITE] += d_out * d_in * (P.w_bytes + 4)


@njit(cache=True)
def outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out):
    """``_outer_update_`` with its products through float32 BLAS (where exact) or float64: the spiking, conv
    and MANO bindings' update, compiled without the int8 GEMM path."""
    _outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out, None)


@njit(cache=True)
def int8_outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out):
    """``_outer_update_`` whose product goes through the int8 GEMM where delta and hin are int8 and the batch has
    ``int8_gemm.INT8_BATCH`` samples (``_int8_update_``): the fused MLP steps' update. The same results as
    ``outer_update_``."""
    _outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out, True)


@njit(cache=True, inline="always")
def _outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng, g_out, gemm8):
    """W_l <- W_l - round(mul * (delta^T hin) * 2**rs[i] / div) (row i), in place, one weight at a time.

    delta: (B, d_out), hin: (B, d_in). The device forms g row by row (accounted as one accumulator row); the
    simulator computes g exactly through BLAS where that is exact. Device: the integer sum
    g = sum_b delta[b, i] hin[b, j] is scaled by the fixed-point multiplier mul / div (= lr / B in weight LSBs)
    with the update rounding, and the new weight saturates to the weight format; updates that round to 0 are
    counted as lost. Float: W -= g * mul. Analog: the conductance step -g * mul is applied as pulses. With
    P.collect, nothing changes and
    g_out[off + i * d_in + j] = g * g_scale (the real, batch-averaged gradient estimate).
    gemm8: True lets the integer product take the int8 GEMM; None (a compile-time constant: Numba prunes the
    branch) keeps it, and the compile time of its kernels, out.
    """
    batch = delta.shape[0]
    shift = log2_exact(div) if P.quantized and not P.collect else -1
    if shift >= 0:
        writes, lost, clipped = _integer_update_(w, off, d_in, delta, hin, mul, shift, rs, P, rng, gemm8)
    else:
        writes, lost, clipped = _dense_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, rs, P, C, rng,
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


#: the finest a dynamic row may get above its layer's coarsest (keeps the row alignment of BP's backward pass and
#: FOTON's F exact: kernels.steps, kernels.orth)
MAX_ROW_SHIFT = 16


@njit(cache=True, parallel=True)
def rescale_rows_(w, off, d_out, d_in, rs, rs_min, P, C, rescan):
    """Dynamic per-channel exponents (dynamic fixed point, Courbariaux et al. 2014, per output channel): each
    row i of the layer whose peak |mantissa| reached the weight format's bound is halved (nearest-even, one bit
    coarser: rs[i] -= 1), and each nonzero row whose doubled peak stays a quarter of the range below the bound
    is doubled (exact, one bit finer: rs[i] += 1, at most MAX_ROW_SHIFT), so every row keeps its weights in the
    top of the format without clipping them; rows run in parallel. rs_min: the coarsest offset allowed (minus
    the layer's exponent: no row gets a negative exponent). rs may go negative here: the caller
    re-bases the layer (rules.numba_binding.rescale_rows). Counts the row scan as SRAM reads and the rewritten
    weights as weight writes.

    rescan: (d_out,) uint8, the rows to look at; the others are skipped (charged all the same: the device scans
    every row). A row's outcome depends only on its weights, its exponent (rs[i] - rs_min) and rs[i] against
    MAX_ROW_SHIFT, so a row found unchanged stays so until its weights change (the updates mark it:
    ``steps.update_``), its layer is re-based (``rescale_network_`` marks the layer) or its weights or exponents
    are set from outside (``rules.numba_binding`` marks every row). Each row looked at leaves its mark set when
    it was re-scaled (it may be again), cleared when not."""
    w_lo, w_hi = np.int64(P.w_lo), np.int64(P.w_hi)
    margin = w_hi // 4
    changed = np.zeros(d_out, dtype=np.int64)
    for i in prange(d_out):
        if rescan[i] == 0:
            continue
        rescan[i] = 0
        wrow = w[off + i * d_in:off + (i + 1) * d_in]  # a view: j from 0, no wraparound, vectorised
        top = bottom = wrow[0]  # in the store's width (int8: 64 lanes a vector), widened once
        for j in range(1, d_in):
            top = max(top, wrow[j])
            bottom = min(bottom, wrow[j])
        peak = max(np.int64(top), -np.int64(bottom))
        if peak >= w_hi and rs[i] > rs_min:
            count = 0
            for j in range(d_in):
                old = np.int64(wrow[j])
                new = min(max(round_shift_at(old, 1, ROUND_NEAREST_EVEN, np.uint64(0), 0), w_lo), w_hi)
                count += new != old
                wrow[j] = new
            rs[i] -= 1
            changed[i] = count
            rescan[i] = 1
        elif peak > 0 and 2 * peak + margin <= w_hi and rs[i] < MAX_ROW_SHIFT:
            count = 0
            for j in range(d_in):
                old = np.int64(wrow[j])
                count += old != 0
                wrow[j] = 2 * old
            rs[i] += 1
            changed[i] = count
            rescan[i] = 1
    writes = 0
    for i in range(d_out):
        writes += changed[i]
    C[WEIGHT_WRITES] += writes
    C[SRAM_READ] += d_out * d_in * P.w_bytes
    C[SRAM_WRITE] += writes * P.w_bytes


@njit(cache=True)
def rescale_network_(w, dims, offs, row_shift, w_frac, w_one, P, C, rescan):
    """``rescale_rows_`` for every layer l (counted into C[l]: the caller passes its update phase's rows,
    (L + 1, counters)), each layer then re-based so that its coarsest row has row_shift 0: w_frac[l] += that
    row's offset, w_one[l] = 2**w_frac[l]. row_shift: (sum_l d_{l+1},) int64; w_frac, w_one: (L,) int64;
    rescan: (sum_l d_{l+1},) uint8, the rows to look at (see ``rescale_rows_``), every row of a re-based layer
    marked for the next call. One compiled call per step instead of one per layer (the Python loop it replaces
    cost as much as the kernels at batch 1)."""
    start = 0
    for l in range(dims.size - 1):
        d_out = dims[l + 1]
        rows = row_shift[start:start + d_out]
        marks = rescan[start:start + d_out]
        rescale_rows_(w, offs[l], d_out, dims[l], rows, -np.int64(w_frac[l]), P, C[l], marks)
        low = rows.min()
        if low != 0:
            marks[:] = 1  # each row's offset against MAX_ROW_SHIFT moved
            for i in range(d_out):
                rows[i] -= low
            w_frac[l] += low
            w_one[l] = np.int64(1) << np.int64(w_frac[l])
        start += d_out
