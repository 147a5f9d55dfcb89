"""A rate-coded spiking MLP run for T timesteps on the bit-accurate Loihi model (kernels.lif), all layers
advancing together each timestep, as they would on the chip.

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

State kept: u, v, the pending (delayed) input and a spike count per neuron, and the input phases: nothing
per timestep is stored. Counters go to C[phase, l] (layer l's synapses and neurons) and C[phase, L]
(timesteps: T per sample, since the samples of a batch are presented one after another, each step ending in a
barrier).
"""
import numpy as np
from numba import njit, prange

from .counters import NEURON_ACTIVE, TIMESTEPS
from .lif import dense_events_, lif_int_step_

__all__ = ["spiking_pass_", "input_spike_", "PHASE_ONE", "CODE_RATE", "CODE_SINGLE", "CODE_TTFS", "INPUT_CODES"]

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
def spiking_pass_(x_q, steps, code, w, dims, offs, wexp, vth_eff, du, dv, delay, inject, phase_buf, spk, u, v,
                  pending, a_buf, counts, in_counts, out_acc, in_acc, nnz, C, phase):
    """Run the net on x_q (B, d_0) int64 intensities in [0, 256] for ``steps`` timesteps, inputs in ``code``.

    Flat per-neuron buffers cover layers 1..L, layer l's B x d_l block at the sum of the earlier layers'
    blocks: spk, u, v (hidden layers), pending, a_buf (all layers); counts (B, sum of hidden d_l) spike
    counts, in_counts (B, d_0) input spike counts, out_acc (B, d_L), in_acc (B, sum of hidden d_l) or (0, 0).
    wexp, vth_eff: per layer; nnz: the layers' nonzero-per-input counts, concatenated (layer l's at the sum of
    earlier d_in); delay: 0 or 1.
    Samples are independent presentations (on the chip, one after the other); the simulator runs them in
    parallel (``prange`` over samples; engine.threads), each with its own state rows, accumulator and counter
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
    # each layer's weights indexed by input axon (Loihi's fan-out lists), for this presentation: layer l's
    # (d_in, d_out) block at offs[l]
    wts = np.empty(offs[n_layers], dtype=np.int32)
    for l in range(n_layers):
        d_in, d_out = dims[l], dims[l + 1]
        wts[offs[l]:offs[l + 1]] = np.ascontiguousarray(
            w[offs[l]:offs[l] + d_out * d_in].reshape((d_out, d_in)).T).reshape(-1)
    local = np.zeros((batch, n_layers, C.shape[2]), dtype=np.int64)
    s_in = np.zeros((batch, d0), dtype=np.int64)  # simulator view of this step's input spikes
    acc = np.zeros((batch, dims[1:].max()), dtype=np.int32)  # per-sample dendritic accumulators
    integrate = in_acc.shape[0] > 0
    for b in prange(batch):
        phase_buf[b, :] = 0
        counts[b, :] = 0
        if integrate:
            in_acc[b, :] = 0
        in_counts[b, :] = 0
        out_acc[b, :] = 0
        for l in range(n_layers):
            lo = noff[l] + b * dims[l + 1]
            hi = lo + dims[l + 1]
            spk[lo:hi] = 0
            u[lo:hi] = 0
            v[lo:hi] = 0
            pending[lo:hi] = 0
        for t in range(steps):
            if code == CODE_RATE:  # input_spike_'s rate code, branch-free so that it vectorises
                for j in range(d0):
                    ph = phase_buf[b, j] + x_q[b, j]
                    fired = np.int64(ph >= PHASE_ONE)
                    phase_buf[b, j] = ph - PHASE_ONE * fired
                    s_in[b, j] = fired
                    in_counts[b, j] += fired
            else:
                for j in range(d0):
                    fired, ph = input_spike_(code, x_q[b, j], phase_buf[b, j], t, steps)
                    phase_buf[b, j] = ph
                    s_in[b, j] = fired
                    in_counts[b, j] += fired
            src = s_in[b:b + 1]
            for l in range(n_layers):
                d_out = dims[l + 1]
                row = local[b, l]
                lo = noff[l] + b * d_out
                arrive = a_buf[lo:lo + d_out].reshape((1, d_out))
                wt = wts[offs[l]:offs[l + 1]].reshape((dims[l], d_out))
                dense_events_(src, wt, wexp[l], nnz[coff[l]:coff[l + 1]], acc[b], arrive, row)
                if delay > 0:  # deliver last step's accumulation, keep this step's for the next
                    for i in range(d_out):
                        a_old = pending[lo + i]
                        pending[lo + i] = arrive[0, i]
                        arrive[0, i] = a_old
                if l == 0 and inject.shape[0] > 0:
                    for i in range(d_out):
                        arrive[0, i] += inject[b, i]
                if l < n_layers - 1:
                    s_out = spk[lo:lo + d_out]
                    lif_int_step_(u[lo:lo + d_out], v[lo:lo + d_out], arrive[0], du, dv, vth_eff[l], 0, s_out, row)
                    for i in range(d_out):
                        counts[b, hoff[l] + i] += s_out[i]
                    if integrate:
                        for i in range(d_out):
                            in_acc[b, hoff[l] + i] += arrive[0, i]
                    src = s_out.reshape((1, d_out))
                else:
                    for i in range(d_out):
                        out_acc[b, i] += arrive[0, i]
                    row[NEURON_ACTIVE] += d_out
    for b in range(batch):
        for l in range(n_layers):
            for k in range(C.shape[2]):
                C[phase, l, k] += local[b, l, k]
    C[phase, n_layers, TIMESTEPS] += steps * batch  # the chip presents the samples one after another
