"""Layer kernels: forward (quantised matmul, accumulate, requantise, activate), projection of the output error
through a fixed or computed matrix, and the rank-B outer-product weight update applied in place.

Weights of every layer live in one flat array ``w`` (as in one SRAM region); layer l occupies
``w[off : off + d_out * d_in]`` row-major, i.e. ``W_l[i, j] = w[off + i * d_in + j]``. Mantissa dtype int64
(device) or float64 (float reference and analog conductances); real weights are ``w / w_one``. ``P`` is
:class:`fo_edge.kernels.steps.Params`; ``C`` one counter row ``C[phase, layer]`` (slots in
:mod:`fo_edge.kernels.counters`); ``rng`` the (1,) uint64 RNG state. Analog devices (``P.analog``) route the
matrix-vector product and the update through :mod:`fo_edge.kernels.analog`.
"""
from numba import njit

from .activations import activate
from .analog import analog_forward_, pulse_update_
from .counters import (FLASH_READ, LOST, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION,
                       SRAM_READ, SRAM_WRITE, SYN_EVENTS, SYN_UPDATES, WEIGHT_WRITES, WRAPS)
from .fixed import round_div, saturate, wrap

__all__ = ["layer_forward_", "project_", "outer_update_"]


@njit(cache=True)
def layer_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng):
    """pre = requant(hin @ W^T), h = sigma(pre) (h = pre when ``linear``).

    hin: (B, d_in) activation mantissas; acc = sum_j hin[b, j] W[i, j] has scale one_a * w_one, is wrapped to
    the accumulator width, divided by w_one with the forward rounding, then saturated to the activation
    format. pre, h: (B, d_out). Counts dense and effective (nonzero input x nonzero weight) MACs, synaptic
    events, active/inactive neuron updates and bytes.
    """
    if P.analog:
        analog_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng)
        return
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
                acc = saturate(round_div(acc, w_one, P.fwd_round, rng), P.a_lo, P.a_hi, C, SATURATION)
            else:
                acc = acc / w_one
            pre[b, i] = acc
            out = acc if linear else activate(acc, P.act, P.a_one, P.quantized)
            h[b, i] = out
            if out != 0:
                C[NEURON_ACTIVE] += 1
            else:
                C[NEURON_INACTIVE] += 1
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
    for b in range(batch):
        for j in range(d):
            acc = src[b, 0] * 0
            for k in range(k_dim):
                s = src[b, k]
                if s != 0 and mat[k, j] != 0:
                    acc += s * mat[k, j]
                    effective += 1
            if P.quantized:
                acc = round_div(acc, div, P.fwd_round, rng)
                out[b, j] = saturate(base[b, j] + sign * acc, P.a_lo, P.a_hi, C, SATURATION)
            else:
                out[b, j] = base[b, j] + sign * acc
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
def outer_update_(w, off, d_out, d_in, delta, hin, mul, div, g_scale, P, C, rng, g_out):
    """W_l <- W_l - round(mul * (delta^T hin) / div), in place, one weight at a time (no gradient buffer).

    delta: (B, d_out), hin: (B, d_in). Device: the integer sum g = sum_b delta[b, i] hin[b, j] is scaled by
    the fixed-point multiplier mul / div (= lr / B in weight LSBs) with the update rounding, and the new
    weight saturates to the weight format; updates that round to 0 are counted as lost. Float: W -= g * mul.
    Analog: the conductance step -g * mul is applied as pulses. With P.collect, nothing changes and
    g_out[off + i * d_in + j] = g * g_scale (the real, batch-averaged gradient estimate).
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
            elif P.analog:
                pulse_update_(w, k, -g * mul, P, C, rng)
            elif P.quantized:
                step = round_div(g * mul, div, P.upd_round, rng)
                if step == 0:
                    if g != 0:
                        C[LOST] += 1
                    continue
                new = saturate(w[k] - step, P.w_lo, P.w_hi, C, SATURATION)
                if new != w[k]:
                    C[WEIGHT_WRITES] += 1
                    w[k] = new
            else:
                new = w[k] - g * mul
                if new != w[k]:
                    C[WEIGHT_WRITES] += 1
                    w[k] = new
    C[MACS_DENSE] += batch * d_out * d_in
    C[SYN_UPDATES] += d_out * d_in
    if not P.analog:
        C[SRAM_READ] += d_out * d_in * P.w_bytes
        C[SRAM_WRITE] += d_out * d_in * P.w_bytes
    C[SRAM_READ] += batch * (d_out + d_in) * P.a_bytes
