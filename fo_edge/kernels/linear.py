"""Layer kernels: forward (quantised matmul, accumulate, requantise, activate), projection of the output error
through a fixed or computed matrix, and the rank-B outer-product weight update applied in place.

Weights of every layer live in one flat array ``w`` (as in one SRAM region); layer l occupies
``w[off : off + d_out * d_in]`` row-major, i.e. ``W_l[i, j] = w[off + i * d_in + j]``. Mantissa dtype int64
(device) or float64 (float reference); ``P`` is :class:`fo_edge.kernels.steps.Params`; ``C`` the int64
counters (slots in ``steps.COUNTERS``); ``rng`` the (1,) uint64 RNG state.
"""
from numba import njit

from .activations import activate
from .fixed import round_div, saturate, wrap

__all__ = ["layer_forward_", "project_", "outer_update_"]

# counter slots (names in steps.COUNTERS)
SAT_ACT, SAT_W, WRAPS, LOST, WRITES, SAT_ERR, MACS_FWD, MACS_UPD, MACS_EFF = range(9)


@njit(cache=True)
def layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng):
    """pre = requant(hin @ W^T), h = sigma(pre) (h = pre when ``linear``).

    hin: (B, d_in) activation mantissas; acc = sum_j hin[b, j] W[i, j] has scale one_a * w_one, is wrapped to
    the accumulator width, divided by w_one with the forward rounding, then saturated to the activation
    format. pre, h: (B, d_out). Counts dense and effective (nonzero input x nonzero weight) MACs.
    """
    batch = hin.shape[0]
    effective = 0
    for b in range(batch):
        for i in range(d_out):
            acc = hin[b, 0] * 0
            base = off + i * d_in
            for j in range(d_in):
                x = hin[b, j]
                if x != 0:
                    wv = w[base + j]
                    if wv != 0:
                        acc += x * wv
                        effective += 1
            if P.quantized:
                acc = wrap(acc, P.acc_lo, P.acc_hi, C, WRAPS)
                acc = saturate(round_div(acc, w_one, P.fwd_round, rng), P.a_lo, P.a_hi, C, SAT_ACT)
            pre[b, i] = acc
            h[b, i] = acc if linear else activate(acc, P.act, P.a_one, P.quantized)
    C[MACS_FWD] += batch * d_out * d_in
    C[MACS_EFF] += effective


@njit(cache=True)
def project_(base, src, mat, sign, div, P, out, C, rng):
    """out[b, j] = saturate(base[b, j] + sign * round(sum_k src[b, k] * mat[k, j] / div)).

    src: (B, K) error (or target) mantissas; mat: (K, D) the projection (FOTON's F, PEPITA's F, FTP's G^T);
    div rescales src's and mat's scales to the activation format; base, out: (B, D).
    """
    batch, k_dim = src.shape
    d = mat.shape[1]
    for b in range(batch):
        for j in range(d):
            acc = src[b, 0] * 0
            for k in range(k_dim):
                acc += src[b, k] * mat[k, j]
            if P.quantized:
                acc = round_div(acc, div, P.fwd_round, rng)
                out[b, j] = saturate(base[b, j] + sign * acc, P.a_lo, P.a_hi, C, SAT_ACT)
            else:
                out[b, j] = base[b, j] + sign * acc
    C[MACS_FWD] += batch * d * k_dim


@njit(cache=True)
def outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, P, C, rng, g_out):
    """W_l <- W_l - round(mul * (delta^T hin) / div), in place, one weight at a time (no gradient buffer).

    delta: (B, d_out), hin: (B, d_in). Device: the integer sum g = sum_b delta[b, i] hin[b, j] is scaled by
    the fixed-point multiplier mul / div (= lr / B in weight LSBs) with the update rounding, and the new
    weight saturates to the weight format; updates that round to 0 are counted as lost. Float: W -= g * mul.
    With P.collect, nothing changes and g_out[off + i * d_in + j] = g * g_scale (the real, batch-averaged
    gradient estimate).
    """
    batch = delta.shape[0]
    for i in range(d_out):
        for j in range(d_in):
            g = delta[0, i] * 0
            for b in range(batch):
                g += delta[b, i] * hin[b, j]
            k = off + i * d_in + j
            if P.collect:
                g_out[k] = g * g_scale
            elif P.quantized:
                step = round_div(g * mul, div, P.upd_round, rng)
                if step == 0:
                    if g != 0:
                        C[LOST] += 1
                    continue
                new = saturate(w[k] - step, P.w_lo, P.w_hi, C, SAT_W)
                if new != w[k]:
                    C[WRITES] += 1
                    w[k] = new
            else:
                w[k] = w[k] - g * mul
    C[MACS_UPD] += batch * d_out * d_in
