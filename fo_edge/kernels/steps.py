"""Fused training steps on the flat weight store: forward-only rules streamed layer by layer, and BP.

Forward-only schedule (ALGORITHMS.md, "Streaming schedule"):
  pass 1 runs layer by layer keeping only the current activation (``stream``) or every clean activation
  (``store``), and ends with the output error e; then the clean and the modulated/target passes run in
  lockstep: at layer l both h_l and h^mod_l exist, W_l's update is applied at once, and layer l-1's
  activations are dropped. Working set: 6 buffers of (B, max_l d_l) plus e and x_mod, whatever the depth.
BP stores every clean activation, then runs the backward pass, updating each W_l as soon as delta_{l-1}
has been formed from the old W_l.

All arrays are preallocated by the caller (from the device memory arena); these kernels allocate nothing.
Integer devices store weight mantissas in the format's width (int8 / int16 / int32) and activation and error
mantissas as int64; the float reference uses float64 throughout; ``Params`` carries the formats. ``w_one``:
(L,) each layer's weight scale 2**w_frac_l; ``rs``: (sum_l d_l,) int64 per-row exponent offsets (row i of
layer l has scale w_one_l * 2**rs_i; per-channel weight scales, see :mod:`fo_edge.kernels.linear`).
"""
from collections import namedtuple

import numba
import numpy as np
from numba import njit, prange

from .activations import activate, activate_grad
from .counters import (BACKWARD, FORWARD, INFERENCE, MODULATED, RECOMPUTE, SATURATION, SRAM_READ, SRAM_WRITE,
                       UPDATE)
from .fixed import ROUND_STOCHASTIC, log2_exact, round_div, saturate
from .linear import activation_table, cached_layer_forward_, layer_rows, project_
from .transpose import charge_transpose_, transpose_sums_
from .update import int8_outer_update_, momentum_update_

__all__ = ["Params", "RULE_CODES", "forward_only_step_", "bp_step_", "output_error_", "predict_", "swap_threads"]

RULE_CODES = {"foton": 0, "pepita": 1, "ftp": 2}
CE, MSE = 0, 1

Params = namedtuple("Params", [
    "quantized",            # bool: integer device (True) or float reference (False)
    "a_one", "a_lo", "a_hi",  # activation format: scale 2**frac (1.0 for float) and mantissa bounds
    "e_one", "e_lo", "e_hi",  # error format
    "w_lo", "w_hi",           # weight mantissa bounds
    "acc_lo", "acc_hi",       # accumulator bounds (wrap-around)
    "fwd_round", "upd_round",  # rounding codes (fixed.ROUND_*)
    "act", "err", "temperature",
    "collect",              # bool: write gradient estimates to g_out instead of updating the weights
    "ftp_label",            # bool: FTP target from the label (t G^T) instead of the error (-e G^T)
    "ftp_diff",             # bool: FTP's difference target tau_1 = h_1 + gamma (f(t G^T) - f(y_hat G^T))
    "ftp_gamma", "ftp_f",   # its gamma (float) and f (an activation code: tanh or identity)
    "ftp_raw",              # bool: y_hat is the raw output y, not e + t (softmax(y / T) for CE)
    "ftp_local",            # bool: FTP's output layer learns the local loss to tau_L = W_L tau_{L-1}, not e
    "out_modulated",        # bool: PEPITA's output layer learns the modulated pass's error (output_error=modulated)
    "w_bytes", "a_bytes", "e_bytes", "p_bytes",  # bytes per stored weight / activation / error / projection value
    "proj_flash",           # bool: the projection matrix is read from Flash
    "analog",               # bool: crossbar device (kernels.analog); the rest are its parameters
    "dac_half", "adc_half",  # DAC / ADC codes per sign: 2**(bits-1) - 1
    "read_noise", "out_bound", "dw_min", "asymmetry", "c2c_noise", "g_min", "g_max", "max_pulses",
])


@njit  # not cached: a function that sets the thread count references the threading layer's globals
def swap_threads(n):
    """Set this thread's Numba thread count to n (1 <= n <= NUMBA_NUM_THREADS); returns the count before. Called
    compiled, it costs a function call (numba.set_num_threads from Python validates its argument: ~2 us)."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    return before


@njit(cache=True, inline="always")
def layer_cache(cache, dims, offs, l):
    """Layer l's slices of the step's weight cache ``(w32, nonzero, ready, w8)``: w32 (total weights,) float32
    and w8 (total weights,) int8, each layer's W (d_out, d_in) at the layer's offset, nonzero (sum_l d_l,) int32
    column counts, ready (L, 2) bool (w32's and w8's flags); see ``linear.cached_layer_forward_``. Simulator
    bookkeeping, not device memory."""
    w32, nonzero, ready, w8 = cache
    d_in, d_out = dims[l], dims[l + 1]
    col = 0
    for k in range(l):
        col += dims[k]
    return (w32[offs[l]:offs[l + 1]].reshape((d_out, d_in)), nonzero[col:col + d_in], ready[l],
            w8[offs[l]:offs[l + 1]].reshape((d_out, d_in)))


def _view(buf, batch, d):
    return buf[:batch * d].reshape((batch, d))


view = njit(cache=True, inline="always")(_view)


@njit(cache=True)
def output_error_(y, t, P, e, C):
    """e = softmax(y / T) - t (CE) or y - t (MSE), quantised to the error format; y: (B, K) activation
    mantissas, t: (B, K) float one-hot."""
    batch, k_dim = y.shape
    probs = np.empty(k_dim)
    C[SRAM_READ] += batch * k_dim * P.a_bytes
    C[SRAM_WRITE] += batch * k_dim * P.e_bytes
    for b in range(batch):
        if P.err == CE:
            top = -np.inf
            for k in range(k_dim):
                probs[k] = y[b, k] / P.a_one / P.temperature
                top = max(top, probs[k])
            total = 0.0
            for k in range(k_dim):
                probs[k] = np.exp(probs[k] - top)
                total += probs[k]
            for k in range(k_dim):
                probs[k] = probs[k] / total - t[b, k]
        else:
            for k in range(k_dim):
                probs[k] = y[b, k] / P.a_one - t[b, k]
        for k in range(k_dim):
            if P.quantized:
                e[b, k] = saturate(np.rint(probs[k] * P.e_one), P.e_lo, P.e_hi, C, SATURATION)
            else:
                e[b, k] = probs[k]


@njit(cache=True)
def _pass1_(w, dims, offs, w_one, rs, x, P, buf_c0, buf_c1, buf_pre, buf_tmp, store, store_mode, C, phase, rng, cache,
            drop, pre0):
    """Clean pass; returns y: (B, d_L) (a view of buf_tmp). Keeps h_l in ``store`` when store_mode, and
    layer 0's (dropped-out) pre-activation a_1 in ``pre0`` when that is not empty; counts into C[phase, l].
    ``drop``: the step's dropout (see ``drop_``; an empty mask: none)."""
    batch = x.shape[0]
    n_layers = dims.size - 1
    src = x
    soff = 0
    for l in range(n_layers):
        d_in, d_out = dims[l], dims[l + 1]
        pre = view(buf_pre, batch, d_out)
        if l == n_layers - 1:
            dst = view(buf_tmp, batch, d_out)
        elif store_mode:
            dst = store[soff:soff + batch * d_out].reshape((batch, d_out))
            soff += batch * d_out
        else:
            dst = view(buf_c0 if l % 2 == 0 else buf_c1, batch, d_out)
        cached_layer_forward_(src, w, offs[l], d_out, d_in, w_one[l], layer_rows(rs, dims, l), l == n_layers - 1, P,
                              pre, dst, C[phase, l], rng, *layer_cache(cache, dims, offs, l))
        if l < n_layers - 1:
            drop_(pre, dst, drop, mask_offset(dims, batch, l), P, C[phase, l], rng)
        if l == 0 and pre0.size > 0:
            pre0[:batch * d_out] = pre.reshape(-1)
        src = dst
    return src


@njit(cache=True)
def update_(w, dims, offs, rs, l, d_out, d_in, delta, hin, upd_mul, upd_div, g_scale, P, C, rng, g_out, opt,
            rescan):
    """Layer l's weight update: plain SGD (``update.int8_outer_update_``), or with ``opt`` = (vel, mom) holding a
    velocity store, SGD with momentum and weight decay (``linear.momentum_update_``, mom[l] its multipliers).
    rescan: (sum_l d_{l+1},) uint8, the rows the dynamic rescale must look at (``update.rescale_network_``): set
    for every row this update may have changed (a nonzero delta[:, i]; every row with momentum or decay)."""
    vel, mom = opt
    rows = layer_rows(rs, dims, l)
    marks = layer_rows(rescan, dims, l)
    if vel.size > 0:
        momentum_update_(w, offs[l], d_out, d_in, delta, hin, vel, mom[l], rows, P, C, rng)
        marks[:] = 1
    else:
        int8_outer_update_(w, offs[l], d_out, d_in, delta, hin, upd_mul[l], upd_div[l], g_scale[l], rows, P, C,
                           rng, g_out)
        for b in range(delta.shape[0]):
            d_b = delta[b]
            for i in range(d_out):  # branch-free, so it vectorises
                marks[i] |= np.uint8(d_b[i] != 0)


@njit(cache=True, inline="always")
def mask_offset(dims, batch, l):
    """Where hidden layer l's (B, d_{l+1}) block starts in the step's flat dropout mask."""
    off = 0
    for k in range(l):
        off += batch * dims[k + 1]
    return off


@njit(cache=True)
def drop_(pre, h, drop, koff, P, C, rng):
    """Inverted dropout of a hidden layer after its forward, as the FOTON reference's ConsistentDropout
    (Linear -> dropout -> activation): pre <- pre * keep / (1 - p), h <- sigma(pre). ``drop`` = (keep, mul,
    shift): keep the step's flat uint8 mask (1 keeps a unit; empty: no dropout), 1 / (1 - p) as mul / 2**shift
    (integer devices: requantised with the forward rounding and saturated; float: mul is 1 / (1 - p), shift
    0). The same mask serves every pass of a step."""
    keep, mul, shift = drop
    if keep.size == 0:
        return
    batch, d = pre.shape
    table = activation_table(P, batch * d)
    for b in range(batch):
        for i in range(d):
            if keep[koff + b * d + i] == 0:
                pre[b, i] = 0
            elif P.quantized:
                pre[b, i] = saturate(round_div(np.int64(pre[b, i]) * np.int64(mul), np.int64(1) << shift,
                                               P.fwd_round, rng), P.a_lo, P.a_hi, C, SATURATION)
            else:
                pre[b, i] = pre[b, i] * mul
            if table.size > 0:
                h[b, i] = table[np.int64(pre[b, i]) - np.int64(P.a_lo)]
            else:
                h[b, i] = activate(pre[b, i], P.act, P.a_one, P.quantized)


@njit(cache=True, parallel=True)
def activate_rows_(a, P, h):
    """h = sigma(a) element by element (B, d), through the format's tanh table where one pays
    (``activation_table``); one sample per parallel iteration."""
    batch, d = a.shape
    table = activation_table(P, batch * d)
    lo = np.int64(P.a_lo)
    for b in prange(batch):
        a_b, h_b = a[b], h[b]
        if table.size > 0:
            for i in range(d):
                h_b[i] = table[np.int64(a_b[i]) - lo]
        else:
            for i in range(d):
                h_b[i] = activate(a_b[i], P.act, P.a_one, P.quantized)


@njit(cache=True, parallel=True)
def local_error_(h, h_mod, keep, koff, ftp, P, a_shift, delta, C):
    """A hidden layer's local error, delta = h - h_mod (PEPITA, FOTON) or (h - tau) * sigma'(a) (FTP, sigma'
    from h: exact for relu, tanh, identity; integer devices divide by one = 2**a_shift with a floor), saturated
    to the activation format on integer devices; 0 for a unit the step's dropout mask ``keep`` (flat, layer
    block at koff; empty: none) drops. h, h_mod, delta: (B, d). One sample per parallel iteration; the
    saturations are tallied per sample and added to C[SATURATION] in order. The format's fields are read into
    locals first: read from P inside the loop, they are reloaded after every store (the compiler cannot rule
    out that delta aliases them), which keeps the loop from vectorising."""
    batch, d_out = delta.shape
    masked = keep.size > 0
    clipped = np.zeros(batch, dtype=np.int64)
    quantized, act, one = P.quantized, P.act, P.a_one
    lo, hi = P.a_lo, P.a_hi
    for b in prange(batch):
        h_b, m_b, d_b = h[b], h_mod[b], delta[b]
        n_clipped = 0
        if masked or not quantized:
            for i in range(d_out):
                if masked and keep[koff + b * d_out + i] == 0:  # a dropped unit has no local loss
                    d_b[i] = h_b[i] * 0
                    continue
                diff = h_b[i] - m_b[i]
                if ftp:
                    grad = activate_grad(h_b[i], h_b[i], act, one, a_shift, quantized)
                    if quantized:
                        diff = (np.int64(diff) * np.int64(grad)) >> a_shift
                    else:
                        diff = diff * grad
                if quantized:
                    n_clipped += np.int64(diff > hi) + np.int64(diff < lo)
                    diff = min(max(diff, lo), hi)
                d_b[i] = diff
        elif ftp:  # integer, no dropout: branch-free, vectorised
            for i in range(d_out):
                grad = activate_grad(h_b[i], h_b[i], act, one, a_shift, True)
                diff = (np.int64(h_b[i] - m_b[i]) * np.int64(grad)) >> a_shift
                n_clipped += np.int64(diff > hi) + np.int64(diff < lo)
                d_b[i] = min(max(diff, lo), hi)
        else:
            for i in range(d_out):
                diff = h_b[i] - m_b[i]
                n_clipped += np.int64(diff > hi) + np.int64(diff < lo)
                d_b[i] = min(max(diff, lo), hi)
        clipped[b] = n_clipped
    for b in range(batch):
        C[SATURATION] += clipped[b]


@njit(cache=True)
def forward_only_step_(rule, store_mode, w, dims, offs, w_one, rs, upd_mul, upd_div, g_scale, x, t, tq, proj,
                       proj_div, P, buf_c0, buf_c1, buf_m0, buf_m1, buf_pre, buf_tmp, store, e, xm, C, rng,
                       g_out, cache, yq, drop, opt, kept, rescan):
    """One FOTON (rule 0), PEPITA (1) or FTP (2) step on a batch; see the module docstring.

    x: (B, d_0) input mantissas; t: (B, d_L) float one-hot; tq: t in the error format (FTP label targets);
    proj: FOTON/PEPITA F (d_L, d_0) or FTP G^T (d_L, d_1), scale such that src @ proj / proj_div is in the
    activation format; upd_mul / upd_div / g_scale: per-layer update scaling (see linear.outer_update_).
    C: (phases, L + 1, counters), see kernels.counters. yq: (B, d_L) scratch for FTP's difference target
    (y_hat in the error format; formed element by element, so not device memory), else (0, d_L).
    drop: the step's dropout mask and scale (``drop_``), applied in every pass; a dropped unit has no local
    error. opt: (velocity, multipliers) for SGD with momentum and weight decay (``update_``), or empty.
    kept: (activations (B x sum of hidden d_l,), a_1 (B x d_1,), counts (L + 1, counters)), the simulator's
    own copies (not device memory) that spare it the schedule's recompute of the clean pass (see
    ``_reuses_pass1``); empty arrays: recompute. rescan: the rows each update may have changed are marked in it
    (``update_``).
    """
    batch = x.shape[0]
    n_layers = dims.size - 1
    a_shift = log2_exact(P.a_one)
    cache[2][:] = False  # W may have changed since the last call
    kept_h, kept_pre, kept_counts = kept
    reuse = kept_h.size > 0 and _reuses_pass1(P)
    if reuse:  # pass 1's counts of this step, charged again to RECOMPUTE where the device recomputes
        kept_counts[:] = C[FORWARD]
    y = _pass1_(w, dims, offs, w_one, rs, x, P, buf_c0, buf_c1, buf_pre, buf_tmp, kept_h if reuse else store,
                store_mode or reuse, C, FORWARD, rng, cache, drop, kept_pre if reuse else kept_pre[:0])
    if reuse:
        kept_counts[:] = C[FORWARD] - kept_counts
    output_error_(y, t, P, e, C[FORWARD, n_layers])
    if rule == 2 and P.ftp_diff:
        _y_hat_(y, e, tq, P, yq)
    if rule == 0:
        project_(x, e, proj, -1, proj_div, P, xm, C[MODULATED, 0], rng)  # x_err = x - e F
    elif rule == 1:
        project_(x, e, proj, 1, proj_div, P, xm, C[MODULATED, 0], rng)  # x_mod = x + e F
    hc = x
    hm = xm
    soff = 0
    for l in range(n_layers - 1):
        d_in, d_out = dims[l], dims[l + 1]
        pre = view(buf_pre, batch, d_out)
        delta = view(buf_tmp, batch, d_out)
        m_next = view(buf_m0 if l % 2 == 0 else buf_m1, batch, d_out)
        if reuse:
            c_next = kept_h[soff:soff + batch * d_out].reshape((batch, d_out))
            soff += batch * d_out
        elif store_mode:
            c_next = store[soff:soff + batch * d_out].reshape((batch, d_out))
            soff += batch * d_out
        else:
            c_next = view(buf_c0 if l % 2 == 0 else buf_c1, batch, d_out)
        koff = mask_offset(dims, batch, l)
        if not store_mode or (rule == 2 and l == 0):  # the device recomputes h_{l+1} (FTP: also a_1)
            if reuse:  # bit-identical to pass 1 (no draws; W_l is not yet updated): charged, not computed
                C[RECOMPUTE, l] += kept_counts[l]
                if rule == 2 and l == 0:
                    pre.reshape(-1)[:] = kept_pre[:batch * d_out]
            else:
                cached_layer_forward_(hc, w, offs[l], d_out, d_in, w_one[l], layer_rows(rs, dims, l), False, P, pre,
                                      c_next, C[RECOMPUTE, l], rng, *layer_cache(cache, dims, offs, l))
                drop_(pre, c_next, drop, koff, P, C[RECOMPUTE, l], rng)
        if rule == 2 and l == 0 and P.ftp_diff:
            _difference_target_(c_next, tq, yq, proj, proj_div, P, pre, delta, m_next, C[MODULATED, 0], rng)
        elif rule == 2 and l == 0:
            # FTP: tau_1 = sigma(a_1 - e G^T) (or sigma(a_1 + t G^T)); pre holds a_1
            if P.ftp_label:
                project_(pre, tq, proj, 1, proj_div, P, delta, C[MODULATED, 0], rng)
            else:
                project_(pre, e, proj, -1, proj_div, P, delta, C[MODULATED, 0], rng)
            activate_rows_(delta, P, m_next)
        else:
            cached_layer_forward_(hm, w, offs[l], d_out, d_in, w_one[l], layer_rows(rs, dims, l), False, P, pre,
                                  m_next, C[MODULATED, l], rng, *layer_cache(cache, dims, offs, l))
            drop_(pre, m_next, drop, koff, P, C[MODULATED, l], rng)
        local_error_(c_next, m_next, drop[0], koff, rule == 2, P, a_shift, delta, C[UPDATE, l])
        hin = hm if rule == 1 else hc
        if l == 0 and rule == 1:
            hin = xm
        update_(w, dims, offs, rs, l, d_out, d_in, delta, hin, upd_mul, upd_div, g_scale, P, C[UPDATE, l], rng, g_out,
                opt, rescan)
        cache[2][l] = False
        hc = c_next
        hm = m_next
    last = n_layers - 1
    hin = hm if rule == 1 else hc
    out_err = e
    if rule == 1 and P.out_modulated:  # e_mod = softmax(W_L h^mod_{L-1} / T) - t, into e (its clean value is spent)
        y_mod = view(buf_tmp, batch, dims[last + 1])
        cached_layer_forward_(hm, w, offs[last], dims[last + 1], dims[last], w_one[last], layer_rows(rs, dims, last),
                              True, P, view(buf_pre, batch, dims[last + 1]), y_mod, C[MODULATED, last], rng,
                              *layer_cache(cache, dims, offs, last))
        output_error_(y_mod, t, P, e, C[MODULATED, n_layers])
    if rule == 2 and P.ftp_local and n_layers > 1:
        out_err = _local_output_error_(w, dims, offs, w_one, rs, hc, hm, P, buf_pre, buf_tmp,
                                       buf_m1 if (last - 1) % 2 == 0 else buf_m0, C, rng, cache)
    update_(w, dims, offs, rs, last, dims[last + 1], dims[last], out_err, hin, upd_mul, upd_div, g_scale, P,
            C[UPDATE, last], rng, g_out, opt, rescan)


@njit(cache=True, inline="always")
def _reuses_pass1(P):
    """Whether recomputing the clean pass gives pass 1's values and counts again: its forward draws nothing
    (no stochastic forward rounding, no analog read noise). Layer l's recompute happens before W_l's update,
    on the same inputs, so it would repeat pass 1 exactly; the simulator then keeps pass 1's activations and
    counts instead (its own memory), and the device is charged the recompute all the same."""
    return not P.analog and not (P.quantized and P.fwd_round == ROUND_STOCHASTIC)


@njit(cache=True)
def _local_output_error_(w, dims, offs, w_one, rs, hc, hm, P, buf_pre, buf_tmp, buf_out, C, rng, cache):
    """FTP's local output loss: y = W_L h_{L-1} (recomputed from the clean h_{L-1}, hc) and the output target
    tau_L = W_L tau_{L-1} (hm), both linear; returns y - tau_L in the error format, (B, d_L) in ``buf_out``
    (saturated to the error format's range on integer devices)."""
    batch = hc.shape[0]
    last = dims.size - 2
    d_in, d_out = dims[last], dims[last + 1]
    pre = view(buf_pre, batch, d_out)
    y = view(buf_out, batch, d_out)
    tau = view(buf_tmp, batch, d_out)
    rows = layer_rows(rs, dims, last)
    cached_layer_forward_(hc, w, offs[last], d_out, d_in, w_one[last], rows, True, P, pre, y, C[RECOMPUTE, last],
                          rng, *layer_cache(cache, dims, offs, last))
    cached_layer_forward_(hm, w, offs[last], d_out, d_in, w_one[last], rows, True, P, pre, tau, C[MODULATED, last],
                          rng, *layer_cache(cache, dims, offs, last))
    for b in range(batch):
        for k in range(d_out):
            diff = y[b, k] - tau[b, k]
            if P.quantized:
                y[b, k] = saturate(np.rint(diff * P.e_one / P.a_one), P.e_lo, P.e_hi, C[UPDATE, last], SATURATION)
            else:
                y[b, k] = diff
    return y


@njit(cache=True)
def _y_hat_(y, e, tq, P, yq):
    """yq = y_hat in the error format: e + t (softmax(y / T) for CE, y for MSE), or the raw y (``P.ftp_raw``)."""
    batch, k_dim = yq.shape
    for b in range(batch):
        for k in range(k_dim):
            if P.ftp_raw:
                v = np.rint(y[b, k] / P.a_one * P.e_one) if P.quantized else y[b, k]
            else:
                v = e[b, k] + tq[b, k]
            yq[b, k] = min(max(v, P.e_lo), P.e_hi) if P.quantized else v


@njit(cache=True)
def _difference_target_(h1, tq, yq, proj, proj_div, P, p_t, p_y, tau, C, rng):
    """FTP's difference target tau = saturate(h1 + round(gamma (f(t G^T) - f(y_hat G^T)))): (B, d_1), in the
    activation format; p_t, p_y: (B, d_1) workspace for the two projections (G^T: proj, (d_L, d_1))."""
    batch, d = tau.shape
    for b in range(batch):
        for i in range(d):
            tau[b, i] = 0
    project_(tau, tq, proj, 1, proj_div, P, p_t, C, rng)
    project_(tau, yq, proj, 1, proj_div, P, p_y, C, rng)
    for b in range(batch):
        for i in range(d):
            diff = activate(p_t[b, i], P.ftp_f, P.a_one, P.quantized) - activate(p_y[b, i], P.ftp_f, P.a_one,
                                                                                 P.quantized)
            if P.quantized:
                tau[b, i] = saturate(h1[b, i] + np.rint(diff * P.ftp_gamma), P.a_lo, P.a_hi, C, SATURATION)
            else:
                tau[b, i] = h1[b, i] + P.ftp_gamma * diff


@njit(cache=True)
def bp_step_(w, dims, offs, w_one, rs, upd_mul, upd_div, g_scale, x, t, P, buf_c0, buf_c1, buf_m0, buf_m1,
             buf_pre, buf_tmp, store, e, C, rng, g_out, cache, drop, opt, rescan):
    """One BP step: pass 1 stores h_1..h_{L-1} in ``store`` (B x sum d_l); then for l = L..1,
    delta_{l-1} = (delta_l W_l) * sigma'(a_{l-1}) (times the dropout mask's keep / (1 - p) when ``drop`` holds
    one) is formed (error format) before W_l is updated; the rows each update may have changed are marked in
    ``rescan`` (``update_``)."""
    batch = x.shape[0]
    n_layers = dims.size - 1
    a_shift = log2_exact(P.a_one)
    cache[2][:] = False
    y = _pass1_(w, dims, offs, w_one, rs, x, P, buf_c0, buf_c1, buf_pre, buf_tmp, store, True, C, FORWARD, rng, cache,
                drop, buf_pre[:0])
    output_error_(y, t, P, e, C[FORWARD, n_layers])
    starts = np.zeros(n_layers, dtype=np.int64)  # store offset of h_l (l >= 1)
    for l in range(1, n_layers):
        starts[l] = starts[l - 1] + (batch * dims[l - 1] if l > 1 else 0)
    delta = e
    for l in range(n_layers - 1, -1, -1):
        d_in, d_out = dims[l], dims[l + 1]
        hin = x if l == 0 else store[starts[l]:starts[l] + batch * d_in].reshape((batch, d_in))
        if l > 0:
            prev = view(buf_m0 if l % 2 == 0 else buf_m1, batch, d_in)
            cb = C[BACKWARD, l]
            w_shift = log2_exact(w_one[l])
            rows = layer_rows(rs, dims, l)
            back, top = transpose_sums_(delta, w, offs[l], d_out, d_in, rows, P)
            w_shift += top  # per-channel: delta_i was scaled by 2**(top - rs_i), every row at the finest LSB
            keep, dmul, dshift = drop
            koff = mask_offset(dims, batch, l - 1)
            for b in range(batch):
                for j in range(d_in):
                    grad = activate_grad(hin[b, j], hin[b, j], P.act, P.a_one, a_shift, P.quantized)
                    if P.quantized:  # floor divisions by powers of two
                        acc = ((np.int64(back[b, j]) >> w_shift) * np.int64(grad)) >> a_shift
                        if keep.size > 0:  # through the dropout: times keep / (1 - p)
                            acc = 0 if keep[koff + b * d_in + j] == 0 else \
                                round_div(acc * np.int64(dmul), np.int64(1) << dshift, P.fwd_round, rng)
                        prev[b, j] = saturate(acc, P.e_lo, P.e_hi, cb, SATURATION)
                    else:
                        value = back[b, j] / w_one[l] * grad
                        if keep.size > 0:
                            value = 0.0 if keep[koff + b * d_in + j] == 0 else value * dmul
                        prev[b, j] = value
            charge_transpose_(delta, w, offs[l], d_out, d_in, P, cb)
            cb[SRAM_READ] += batch * d_in * P.a_bytes  # h_{l-1}, for sigma'
        update_(w, dims, offs, rs, l, d_out, d_in, delta, hin, upd_mul, upd_div, g_scale, P, C[UPDATE, l], rng, g_out,
                opt, rescan)
        if l > 0:
            delta = prev


@njit(cache=True)
def no_dropout():
    """An empty ``drop`` (no dropout): inference, and steps of runs without it."""
    return np.zeros(0, dtype=np.uint8), 1.0, np.int64(0)


@njit(cache=True)
def predict_(w, dims, offs, w_one, rs, x, P, buf_c0, buf_c1, buf_pre, buf_tmp, C, rng, labels, logits, cache):
    """Inference: labels[b] = argmax of the output for each row of x (B, d_0); the outputs (activation
    mantissas) go to logits (B, d_L) when it has B rows; counts into C[INFERENCE]. The caller clears the
    weight cache's ready flags (``cache[2]``) when W has changed since the cache was last filled."""
    y = _pass1_(w, dims, offs, w_one, rs, x, P, buf_c0, buf_c1, buf_pre, buf_tmp, buf_c0[:0], False, C, INFERENCE,
                rng, cache, no_dropout(), buf_pre[:0])
    for b in range(x.shape[0]):
        labels[b] = np.argmax(y[b])
        if logits.shape[0] > 0:
            for k in range(y.shape[1]):
                logits[b, k] = y[b, k]
