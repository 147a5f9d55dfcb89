"""CUBA-LIF neurons and event-driven dense synapses, one timestep at a time.

Integer mode is Lava's bit-accurate Loihi model (``PyLifModelBitAcc``, lava-nc/lava src/lava/proc/lif/models.py;
DEVICES.md 1.4), per neuron and timestep, with u, v 24-bit signed integers:
  1. u <- sign(p) * (|p| >> 12), p = u * (4096 - (du + 1))      current decay, rounded toward zero
  2. u <- u + (a_in << 6)                                       synaptic input
  3. u wraps: u > 2**23 -> u - 2**24; u <= -2**23 -> u + 2**24  (counted as overflow_wraps)
  4. v <- sign(q) * (|q| >> 12), q = v * (4096 - dv)            voltage decay, toward zero
  5. v <- v + u + bias_eff                                      (the new u)
  6. v saturates to +-(2**23 - 1)                               (counted as saturation_events)
  7. spike s = v > vth_eff (strict), vth_eff = vth << 6; 8. v <- 0 where s (u is not reset)
Dense synapses (Lava ``AbstractPyDenseModelBitAcc``, DEVICES.md 1.5): a = sum over spiking inputs j of W[:, j]
(event driven: one synaptic event per spike per nonzero weight), then a << weight_exp (arithmetic >> , i.e.
floor, for a negative exponent). The one-step synaptic delay is the caller's (kernels.spiking).

Float mode is snnTorch's ``Leaky`` (reset_delay=True; DEVICES.md 6) with an optional synaptic current:
u <- beta_u * u + a_in; reset r = (v_prev > thr); subtract: v <- beta_v * v + u - r * thr; zero: v <- (1 - r) * v,
then v <- beta_v * v + u; spike = v > thr. With beta_u = 0 it equals ``snn.Leaky`` bit for bit in float32.
"""
import numpy as np
from numba import njit

from .counters import ACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SPIKES, SYN_EVENTS, WRAPS

__all__ = ["UV_MAX", "lif_int_neuron", "lif_int_step_", "lif_float_step_", "dense_events_", "RESET_SUBTRACT",
           "RESET_ZERO"]

UV_MAX = 1 << 23  # u, v are 24-bit signed
RESET_SUBTRACT, RESET_ZERO = 0, 1


@njit(cache=True, inline="always")
def _decay(x, keep):
    """sign(x * keep) * (|x * keep| >> 12): multiply by keep / 4096, rounding toward zero. Branch-free: with
    s = p >> 63 (all ones for p < 0), |p| = (p ^ s) - s and the signed result is ((|p| >> 12) ^ s) - s."""
    p = x * keep
    s = p >> 63
    return ((((p ^ s) - s) >> 12) ^ s) - s


@njit(cache=True, inline="always")
def lif_int_neuron(ui, vi, ai, keep_u, keep_v, vth_eff, bias_eff):
    """One neuron's bit-accurate timestep (module docstring, steps 1-8), branch-free (selects and comparisons).

    ui, vi: its 24-bit states; ai: its synaptic input after the weight exponent; keep_u = 4096 - (du + 1),
    keep_v = 4096 - dv; vth_eff = vth << 6. Returns (u, v, spike, wrapped, clipped, active), the last four 0/1:
    a neuron is active when it has input or state.
    """
    lim = UV_MAX - 1
    span = 2 * UV_MAX
    active = (ui != 0) | (vi != 0) | (ai != 0)
    cur = _decay(ui, keep_u) + (ai << 6)
    over, under = cur > UV_MAX, cur <= -UV_MAX
    cur = cur - span * over + span * under
    volt = _decay(vi, keep_v) + cur + bias_eff
    clipped = (volt > lim) | (volt < -lim)
    volt = min(max(volt, -lim), lim)
    spike = volt > vth_eff
    return cur, 0 if spike else volt, spike, over | under, clipped, active


@njit(cache=True)
def lif_int_step_(u, v, a_in, du, dv, vth_eff, bias_eff, spikes, C):
    """One bit-accurate timestep for n neurons, in place (module docstring, steps 1-8; lif_int_neuron).

    u, v: int64 (n,) states; a_in: int64 (n,) synaptic input after the weight exponent; du, dv: 12-bit decays
    (0..4095); vth_eff = vth << 6; bias_eff: int; spikes: int64 (n,) out (0/1). C: one counter row (spikes,
    wraps, saturations, active/inactive neuron updates: a neuron is active when it has input or state).
    The loop body has no branches (selects and counts of comparisons), so it vectorises.
    """
    keep_u = 4096 - (du + 1)
    keep_v = 4096 - dv
    fired = wraps = clipped = active = 0
    for i in range(u.size):
        u[i], v[i], spike, wrapped, clip, act = lif_int_neuron(u[i], v[i], a_in[i], keep_u, keep_v, vth_eff, bias_eff)
        spikes[i] = spike
        fired += spike
        wraps += wrapped
        clipped += clip
        active += act
    C[SPIKES] += fired
    C[WRAPS] += wraps
    C[SATURATION] += clipped
    C[NEURON_ACTIVE] += active
    C[NEURON_INACTIVE] += u.size - active


@njit(cache=True)
def lif_float_step_(u, v, a_in, beta_u, beta_v, thr, reset_mode, spikes, C):
    """One float32 timestep (snnTorch Leaky semantics, module docstring); u, v, a_in, spikes: float32 (n,)."""
    fired = 0
    for i in range(u.size):
        cur = beta_u * u[i] + a_in[i]
        u[i] = cur
        reset = np.float32(1.0) if v[i] - thr > 0 else np.float32(0.0)
        if reset_mode == RESET_SUBTRACT:
            volt = beta_v * v[i] + cur - reset * thr
        else:
            volt = beta_v * ((np.float32(1.0) - reset) * v[i]) + cur
        v[i] = volt
        if volt - thr > 0:
            spikes[i] = 1.0
            fired += 1
        else:
            spikes[i] = 0.0
    C[SPIKES] += fired
    C[NEURON_ACTIVE] += u.size


@njit(cache=True)
def dense_events_(spikes, wt, weight_exp, nnz_col, acc, out, C):
    """out[b, :] = (sum over j with spikes[b, j] != 0 of W[:, j]) shifted by weight_exp (floor for < 0).

    spikes: (B, d_in) 0/1; wt: (d_in, d_out) int32 (or int64) the weights indexed by input (Loihi keeps
    synapses as per-axon fan-out lists, so a spike reads one contiguous row); nnz_col: (d_in,) nonzero weights
    per input (events = spikes x nonzero fan-out, also counted as accumulate-only ops); acc: (>= d_out,)
    wt.dtype workspace, the dendritic accumulator (int32 on the chip); out: int64 (B, d_out).
    This is one timestep in the chip's order, one fan-out row per spike; kernels.spiking sums the same events
    for all T steps of a layer at once, and tests/test_spiking_order.py holds the two equal.
    """
    events = 0
    d_in, d_out = wt.shape
    for b in range(spikes.shape[0]):
        acc[:d_out] = 0
        for j in range(d_in):
            if spikes[b, j] != 0:
                events += nnz_col[j]
                src = wt[j]
                for i in range(d_out):
                    acc[i] += src[i]
        for i in range(d_out):
            total = np.int64(acc[i])
            out[b, i] = total << weight_exp if weight_exp >= 0 else total >> -weight_exp
    C[SYN_EVENTS] += events
    C[ACS_EFF] += events
