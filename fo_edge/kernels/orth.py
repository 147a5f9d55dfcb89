"""Orthogonalisation and FOTON's projection on the flat weight store.

``bjorck_`` re-orthogonalises one layer in place (order-1 Björck, W <- W (1.5 I - 0.5 W^T W), after a
power-iteration spectral-norm scaling, as ``rules.foton.bjorck_torch``); on integer devices it works on
the dequantised values at float64 and writes back with the forward rounding. ``projection_rows_`` computes
F = W_L ... W_1 one row at a time (row k = e_k^T W_L ... W_1, the unit error pushed down through the
transposed weights), so it needs two vectors of the widest layer as workspace, not a d x d_0 matrix.
``P`` is :class:`fo_edge.kernels.steps.Params`; ``C`` one counter row (kernels.counters). ``rs``: per-row
exponent offsets (per-channel weight scales, :mod:`fo_edge.kernels.linear`): row i's scale is w_one * 2**rs[i].
"""
import numpy as np
from numba import njit

from .analog import pulse_update_
from .counters import MACS_DENSE, SATURATION, SRAM_READ, SRAM_WRITE, WEIGHT_WRITES
from .fixed import round_div, saturate
from .linear import layer_rows

__all__ = ["bjorck_", "projection_rows_"]


@njit(cache=True)
def bjorck_(w, off, d_out, d_in, w_one, rs, iters, P, rng, C, tol=0.0):
    """Re-orthogonalise layer W: (d_out, d_in) stored at w[off:] in place; integer devices write back with the
    forward (nearest) rounding, so an already-orthogonal quantised W comes back unchanged rather than taking a
    stochastic random walk; analog devices reprogram each conductance with pulses. With ``tol > 0`` a W within
    ||m^T m - I||_F <= tol is left as it is, and the iteration stops once within tol (as rules.foton.bjorck_torch).
    Returns the number of iterations run."""
    wide = d_out < d_in
    rows, cols = (d_in, d_out) if wide else (d_out, d_in)  # work on the tall orientation m: (rows, cols)
    m = np.empty((rows, cols))
    for i in range(d_out):
        one_i = w_one * (np.int64(1) << rs[i])
        for j in range(d_in):
            v = w[off + i * d_in + j] / one_i
            if wide:
                m[j, i] = v
            else:
                m[i, j] = v
    eye = np.eye(cols)
    if tol > 0 and np.linalg.norm(m.T @ m - eye) <= tol:
        C[MACS_DENSE] += rows * cols * cols
        C[SRAM_READ] += d_out * d_in * P.w_bytes
        return 0
    v = np.ones(cols) / np.sqrt(cols)
    for _ in range(10):
        v = m.T @ (m @ v)
        v /= max(np.linalg.norm(v), 1e-30)
    sigma = np.linalg.norm(m @ v) * 1.01
    if sigma > 1.0:
        m /= sigma
    done = 0
    for _ in range(iters):
        gram = m.T @ m
        if tol > 0 and np.linalg.norm(gram - eye) <= tol:
            C[MACS_DENSE] += rows * cols * cols
            break
        m = m @ (1.5 * eye - 0.5 * gram)
        done += 1
    for i in range(d_out):
        one_i = w_one * (np.int64(1) << rs[i])
        for j in range(d_in):
            v_ij = m[j, i] if wide else m[i, j]
            k = off + i * d_in + j
            if P.analog:
                pulse_update_(w, k, v_ij * one_i - w[k], P, C, rng)
                continue
            if P.quantized:
                # v_ij * one_i rounded by the forward rounding: scale by 2**20 first so it sees the fraction
                fine = np.int64(np.floor(v_ij * one_i * 1048576.0))
                new = saturate(round_div(fine, 1048576, P.fwd_round, rng), P.w_lo, P.w_hi, C, SATURATION)
            else:
                new = v_ij * one_i
            if new != w[k]:
                C[WEIGHT_WRITES] += 1
                w[k] = new
    C[MACS_DENSE] += 20 * rows * cols + done * 2 * rows * cols * cols + (tol > 0) * rows * cols * cols
    C[SRAM_READ] += d_out * d_in * P.w_bytes
    C[SRAM_WRITE] += d_out * d_in * P.w_bytes
    return done


@njit(cache=True)
def projection_rows_(w, dims, offs, w_one, rs, p_one, p_lo, p_hi, P, rng, out, work_a, work_b, C):
    """out = F = W_L ... W_1: (d_L, d_0) in the projection format (scale p_one), row by row.

    work_a, work_b: 1-D buffers of at least max(dims) values (the only workspace). With per-channel scales
    the sum over layer l's rows i takes W_l[i, j]'s mantissa times 2**(top_l - rs_i), top_l = max_i rs_i, and
    is divided by w_one_l * 2**top_l (every term at the layer's finest LSB: exact integer alignment).
    """
    n_layers = dims.size - 1
    d_last = dims[n_layers]
    quantized, mode = P.quantized, P.fwd_round
    for k in range(d_last):
        # r = row k of W_L, in the projection format
        d_in = dims[n_layers - 1]
        base = offs[n_layers - 1] + k * d_in
        last_one = w_one[n_layers - 1] * (np.int64(1) << layer_rows(rs, dims, n_layers - 1)[k])
        for j in range(d_in):
            if quantized:
                work_a[j] = round_div(w[base + j] * p_one, last_one, mode, rng)
            else:
                work_a[j] = w[base + j] / w_one[n_layers - 1]
        cur, nxt = work_a, work_b
        for l in range(n_layers - 2, -1, -1):  # r <- r W_l
            d_out, d_in = dims[l + 1], dims[l]
            rows = layer_rows(rs, dims, l)
            top = rows.max()
            for j in range(d_in):
                acc = cur[0] * 0
                for i in range(d_out):
                    acc += cur[i] * w[offs[l] + i * d_in + j] * (np.int64(1) << (top - rows[i]))
                if quantized:
                    acc = saturate(round_div(acc, w_one[l] * (np.int64(1) << top), mode, rng), p_lo, p_hi, C,
                                   SATURATION)
                else:
                    acc = acc / w_one[l]
                nxt[j] = acc
            cur, nxt = nxt, cur
        for j in range(dims[0]):
            out[k, j] = cur[j]
    macs = 0
    for l in range(n_layers - 1):
        macs += dims[l] * dims[l + 1]
    C[MACS_DENSE] += d_last * macs
    C[SRAM_READ] += d_last * (macs + dims[n_layers - 1]) * P.w_bytes
    C[SRAM_WRITE] += d_last * dims[0] * P.p_bytes
