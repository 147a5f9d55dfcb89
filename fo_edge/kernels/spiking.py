"""A rate-coded spiking MLP run for T timesteps on the bit-accurate Loihi model (kernels.lif), with the results
of all layers advancing together each timestep, as they would on the chip (the simulator's own order, layer by
layer, is described at ``spiking_pass_``).

Per timestep t: the input spikes come from one of three deterministic input codes (``code``, x_q = round(256 x)):
- ``CODE_RATE`` (0): an 8-bit phase accumulator per pixel, phase += x_q; spike and subtract 256 when
  phase >= 256, so a pixel of intensity x fires floor(x T) times in T steps (within one);
- ``CODE_SINGLE`` (1): one spike per pixel per presentation, at t = 0, for x_q >= 128 (x >= 0.5): the
  binarised image sent once, as Renner et al.'s gated phases present it (one spike per pixel per phase);
- ``CODE_TTFS`` (2): time to first spike, one spike at t = round((256 - x_q) (T - 1) / 256) for x_q > 0, so
  brighter pixels fire earlier (the brightest at t = 0, x -> 0 at t = T - 1) and a dark pixel never fires;
then for each layer l = 1..L the spikes of layer l-1 at t are accumulated
through W_l (event driven) and delivered at t + ``delay`` (Lava Dense's one-step synaptic delay); hidden
layers are CUBA-LIF neurons and count their spikes; the output layer is a non-spiking integrator whose
accumulated input is the readout (logits = out_acc / (T 2**w_frac)). Optional ``inject`` (B, d_1) adds a
constant synaptic input to layer 1 every timestep (FTP's target pass). Optional ``in_acc`` (B, sum of hidden d_l)
integrates each hidden neuron's synaptic input over the presentation (after the delay and the injection: the
sum of the u increments, as a non-spiking second compartment would), for the surrogate hidden error.

State the device keeps: u, v, the pending (delayed) input and a spike count per neuron, and the input phases:
nothing per timestep (the simulator's per-step scratch is not device memory). Counters go to C[phase, l]
(layer l's synapses and neurons) and C[phase, L] (timesteps: T per sample, since the samples of a batch are
presented one after another, each step ending in a barrier).
"""
import numpy as np
from numba import njit, prange

from .counters import (ACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SPIKES, SYN_EVENTS, TIMESTEPS,
                       WRAPS)
from .lif import lif_int_neuron

__all__ = ["spiking_pass_", "transpose_weights_", "input_spike_", "PHASE_ONE", "CODE_RATE", "CODE_SINGLE",
           "CODE_TTFS", "INPUT_CODES"]

PHASE_ONE = 256  # input codes: 8-bit intensities
CODE_RATE, CODE_SINGLE, CODE_TTFS = 0, 1, 2
#: [spiking] input_code value -> the kernel's code
INPUT_CODES = {"rate": CODE_RATE, "single": CODE_SINGLE, "ttfs": CODE_TTFS}


@njit(cache=True)
def input_spike_(code, x, phase, t, steps):
    """(spike 0/1, new phase) of one pixel of intensity x in [0, 256] at step t of ``steps`` (module docstring)."""
    if code == CODE_RATE:
        ph = phase + x
        if ph >= PHASE_ONE:
            return 1, ph - PHASE_ONE
        return 0, ph
    if code == CODE_SINGLE:
        return (1 if t == 0 and 2 * x >= PHASE_ONE else 0), phase
    if x <= 0:
        return 0, phase
    fire = ((PHASE_ONE - x) * (steps - 1) + PHASE_ONE // 2) // PHASE_ONE
    return (1 if t == fire else 0), phase


@njit(cache=True, parallel=True)
def transpose_weights_(w, dims, offs, wts, nnz):
    """Each layer's (d_out, d_in) block of w (at offs[l]) as (d_in, d_out) rows in wts (Loihi's per-axon
    fan-out lists: a spike reads one contiguous row), and nnz[j] = the nonzero weights of input j (layer l's
    inputs at the sum of the earlier d_in). Inputs in parallel (``prange``); every value is written once."""
    n_layers = dims.size - 1
    coff = 0
    for l in range(n_layers):
        d_in, d_out, base = dims[l], dims[l + 1], offs[l]
        for j in prange(d_in):
            nz = 0
            row = wts[base + j * d_out:base + (j + 1) * d_out]
            for i in range(d_out):
                value = w[base + i * d_in + j]
                row[i] = value
                nz += value != 0
            nnz[coff + j] = nz
        coff += d_in


@njit(cache=True, inline="always")
def _input_train_(code, x_q, phase_buf, in_counts, train):
    """One sample's input spike trains, train[t, j] (0/1) for every step t and pixel j (module docstring's
    codes); phase_buf (zero on entry: a presentation starts from zero phases), in_counts: the sample's (d_0,)
    rows, advanced and counted as the steps would. The rate code in closed form: after t + 1 steps the
    accumulator has taken in (t + 1) x, so the pixel has fired floor((t + 1) x / 256) times and fires at step t
    when that count steps up; its phase is then (t + 1) x mod 256 (x <= 256 keeps it to one spike per step).
    No step waits on the previous one."""
    steps = train.shape[0]
    for t in range(steps):
        row = train[t]
        if code == CODE_RATE:
            for j in range(x_q.size):
                row[j] = ((t + 1) * x_q[j]) // PHASE_ONE - (t * x_q[j]) // PHASE_ONE
        else:
            for j in range(x_q.size):
                row[j], phase_buf[j] = input_spike_(code, x_q[j], phase_buf[j], t, steps)
    if code == CODE_RATE:
        for j in range(x_q.size):
            phase_buf[j] = (steps * x_q[j]) % PHASE_ONE
            in_counts[j] += (steps * x_q[j]) // PHASE_ONE
    else:
        for t in range(steps):
            row = train[t]
            for j in range(x_q.size):
                in_counts[j] += row[j]


@njit(cache=True, inline="always")
def _accumulate_events_(src, wt, nnz_col, d_out, events_at, acc, row):
    """acc[t d_out + i] = sum over inputs j with src[t, j] != 0 of wt[j d_out + i], for every step t (int32,
    wrapping like the chip's dendritic accumulator: integer addition in any order gives the same sum), and the
    events (spikes x nonzero fan-out) counted into row. src: (steps, d_in) 0/1; wt: flat (d_in, d_out); acc:
    flat (steps, d_out) int32; events_at: (>= d_in,) int64 workspace for one step's spiking inputs.
    Eight fan-out rows are summed per pass over the step's accumulator, so it is loaded and stored once per eight
    spikes; the flat indices are unsigned, so the adds carry no negative-index check and vectorise."""
    events = 0
    width = np.uint64(d_out)
    for t in range(src.shape[0]):
        src_t = src[t]
        n_events = 0
        n_words = src_t.size // 8
        words = src_t[:8 * n_words].view(np.uint64)
        for k in range(n_words):  # the step's spiking inputs, in order, skipping eight silent inputs at a time
            if words[k] != 0:
                for j in range(8 * k, 8 * k + 8):
                    events_at[n_events] = j
                    n_events += src_t[j] != 0
        for j in range(8 * n_words, src_t.size):
            events_at[n_events] = j
            n_events += src_t[j] != 0
        at = np.uint64(t) * width
        for i in range(width):
            acc[at + i] = 0
        k = 0
        while k + 8 <= n_events:
            j0, j1 = np.uint64(events_at[k]) * width, np.uint64(events_at[k + 1]) * width
            j2, j3 = np.uint64(events_at[k + 2]) * width, np.uint64(events_at[k + 3]) * width
            j4, j5 = np.uint64(events_at[k + 4]) * width, np.uint64(events_at[k + 5]) * width
            j6, j7 = np.uint64(events_at[k + 6]) * width, np.uint64(events_at[k + 7]) * width
            for i in range(width):
                first = np.int32(wt[j0 + i]) + np.int32(wt[j1 + i]) + np.int32(wt[j2 + i]) + np.int32(wt[j3 + i])
                second = np.int32(wt[j4 + i]) + np.int32(wt[j5 + i]) + np.int32(wt[j6 + i]) + np.int32(wt[j7 + i])
                acc[at + i] += first + second
            k += 8
        while k < n_events:
            j0 = np.uint64(events_at[k]) * width
            for i in range(width):
                acc[at + i] += wt[j0 + i]
            k += 1
        for k in range(n_events):
            events += nnz_col[events_at[k]]
    row[SYN_EVENTS] += events
    row[ACS_EFF] += events


@njit(cache=True, inline="always")
def _delivered(acc_t, i, shift, delay, inj, arrive, wait):
    """Neuron i's input this step: the dendritic sum shifted by the weight exponent (floor for a negative one),
    delivered now or, with the one-step delay, the previous step's (held in wait); plus the injection (inj:
    (d,) or empty). Leaves it in arrive[i]."""
    total = np.int64(acc_t[i])
    now = total << shift if shift >= 0 else total >> -shift
    if delay > 0:
        delivered = wait[i]
        wait[i] = now
    else:
        delivered = now
    if inj.size > 0:
        delivered += inj[i]
    arrive[i] = delivered
    return delivered


@njit(cache=True, inline="always")
def _hidden_steps_(acc, shift, delay, inj, arrive, wait, u, v, spk, counts, integral, trains, du, dv, vth_eff, row):
    """A hidden layer's neurons through every step t: the delivered input (_delivered) into one bit-accurate
    LIF step each (kernels.lif.lif_int_neuron), in one loop per step. acc: (steps, d) dendritic sums; u, v, spk:
    the layer's state rows; counts: (d,) spike counts; integral: (d,) input integral or empty; trains:
    (steps, d) the spikes, for the next layer; row: the layer's counter row."""
    keep_u = 4096 - (du + 1)
    keep_v = 4096 - dv
    fired = wraps = clipped = active = 0
    d = u.size
    for t in range(acc.shape[0]):
        acc_t = acc[t]
        train_t = trains[t]
        for i in range(d):
            a_in = _delivered(acc_t, i, shift, delay, inj, arrive, wait)
            u[i], v[i], spike, wrapped, clip, act = lif_int_neuron(u[i], v[i], a_in, keep_u, keep_v, vth_eff, 0)
            spk[i] = spike
            train_t[i] = spike
            counts[i] += spike
            fired += spike
            wraps += wrapped
            clipped += clip
            active += act
        if integral.size > 0:
            for i in range(d):
                integral[i] += arrive[i]
    row[SPIKES] += fired
    row[WRAPS] += wraps
    row[SATURATION] += clipped
    row[NEURON_ACTIVE] += active
    row[NEURON_INACTIVE] += acc.shape[0] * d - active


@njit(cache=True, inline="always")
def _output_steps_(acc, shift, delay, inj, arrive, wait, out_acc):
    """The output layer (non-spiking integrators) through every step: out_acc += the delivered input."""
    for t in range(acc.shape[0]):
        acc_t = acc[t]
        for i in range(out_acc.size):
            out_acc[i] += _delivered(acc_t, i, shift, delay, inj, arrive, wait)


@njit(cache=True, parallel=True)
def spiking_pass_(x_q, steps, code, w, dims, offs, wexp, vth_eff, du, dv, delay, inject, phase_buf, spk, u, v,
                  pending, a_buf, counts, in_counts, out_acc, in_acc, C, phase):
    """Run the net on x_q (B, d_0) int64 intensities in [0, 256] for ``steps`` timesteps, inputs in ``code``.

    Flat per-neuron buffers cover layers 1..L, layer l's B x d_l block at the sum of the earlier layers'
    blocks: spk, u, v (hidden layers), pending, a_buf (all layers); counts (B, sum of hidden d_l) spike
    counts, in_counts (B, d_0) input spike counts, out_acc (B, d_L), in_acc (B, sum of hidden d_l) or (0, 0).
    wexp, vth_eff: per layer; delay: 0 or 1. On return the buffers hold what the chip's would after the last
    step (u, v, the pending input, the last delivered input, the last spikes).

    The simulator's order is not the chip's, the results are. The chip advances every layer each timestep; a
    feedforward net lets the simulator run one layer through all T steps before the next (layer l at step t
    reads only layer l-1's spikes at step t), so it forms a layer's synaptic input for all T steps first
    (_accumulate_events_: each step's spiking inputs, eight fan-out rows per pass), then steps its neurons
    through T in one fused loop (_hidden_steps_, _output_steps_). It keeps the
    spike trains of the layer feeding the current one and the layer's T accumulators (simulator scratch: the
    device's memory plan is the chip's, see rules.spiking_binding). Every integer and counter is identical to
    the timestep-major order (tests/test_spiking_order.py holds it against that order's plain implementation).
    Samples are independent presentations (on the chip, one after the other); the simulator runs them in
    parallel (``prange`` over samples; engine.threads), each with its own state rows, scratch and counter
    rows, the counter rows summed in sample order at the end, so results do not depend on the thread count.
    """
    batch = x_q.shape[0]
    n_layers = dims.size - 1
    d0 = dims[0]
    noff = np.zeros(n_layers + 1, dtype=np.int64)
    coff = np.zeros(n_layers + 1, dtype=np.int64)
    hoff = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        noff[l + 1] = noff[l] + batch * dims[l + 1]
        coff[l + 1] = coff[l] + dims[l]
        hoff[l + 1] = hoff[l] + (dims[l + 1] if l < n_layers - 1 else 0)
    wts = np.empty(offs[n_layers], dtype=w.dtype)
    nnz = np.empty(coff[n_layers], dtype=np.int64)
    transpose_weights_(w, dims, offs, wts, nnz)
    widest = max(d0, dims[1:].max())
    local = np.zeros((batch, n_layers, C.shape[2]), dtype=np.int64)
    # flat per-sample scratch, each piece reshaped from a contiguous slice so that the loops vectorise
    trains = np.empty((batch, 2, steps * widest), dtype=np.uint8)  # the feeding and the produced spike trains
    acc = np.empty((batch, steps * dims[1:].max()), dtype=np.int32)  # per-sample, per-step dendritic sums
    events_at = np.empty((batch, widest), dtype=np.int64)
    no_inject = np.zeros(0, dtype=np.int64)
    no_integral = np.zeros(0, dtype=in_acc.dtype)
    integrate = in_acc.shape[0] > 0
    for b in prange(batch):
        counts[b, :] = 0
        if integrate:
            in_acc[b, :] = 0
        in_counts[b, :] = 0
        out_acc[b, :] = 0
        phase_buf[b, :] = 0
        _input_train_(code, x_q[b], phase_buf[b], in_counts[b], trains[b, 0, :steps * d0].reshape((steps, d0)))
        for l in range(n_layers):
            d_in, d_out = dims[l], dims[l + 1]
            row = local[b, l]
            src = trains[b, l % 2, :steps * d_in].reshape((steps, d_in))
            dst = trains[b, (l + 1) % 2, :steps * d_out].reshape((steps, d_out))
            acc_l = acc[b, :steps * d_out].reshape((steps, d_out))
            _accumulate_events_(src, wts[offs[l]:offs[l + 1]], nnz[coff[l]:coff[l + 1]], d_out, events_at[b],
                                acc[b], row)
            lo = noff[l] + b * d_out
            hi = lo + d_out
            arrive, wait = a_buf[lo:hi], pending[lo:hi]
            wait[:] = 0
            spk[lo:hi] = 0
            u[lo:hi] = 0
            v[lo:hi] = 0
            inj = inject[b] if l == 0 and inject.shape[0] > 0 else no_inject
            if l < n_layers - 1:
                integ = in_acc[b, hoff[l]:hoff[l + 1]] if integrate else no_integral
                _hidden_steps_(acc_l, wexp[l], delay, inj, arrive, wait, u[lo:hi], v[lo:hi], spk[lo:hi],
                               counts[b, hoff[l]:hoff[l + 1]], integ, dst, du, dv, vth_eff[l], row)
            else:
                _output_steps_(acc_l, wexp[l], delay, inj, arrive, wait, out_acc[b])
                row[NEURON_ACTIVE] += steps * d_out
    for b in range(batch):
        for l in range(n_layers):
            for k in range(C.shape[2]):
                C[phase, l, k] += local[b, l, k]
    C[phase, n_layers, TIMESTEPS] += steps * batch  # the chip presents the samples one after another
