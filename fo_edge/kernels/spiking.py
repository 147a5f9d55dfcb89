"""A rate-coded spiking MLP run for T timesteps on the bit-accurate Loihi model (kernels.lif), all layers
advancing together each timestep, as they would on the chip.

Per timestep t: the input spikes come from a deterministic rate code (an 8-bit phase accumulator per pixel:
phase += round(256 x); spike and subtract 256 when phase >= 256, so a pixel of intensity x fires
floor-ish x T times in T steps); then for each layer l = 1..L the spikes of layer l-1 at t are accumulated
through W_l (event driven) and delivered at t + ``delay`` (Lava Dense's one-step synaptic delay); hidden
layers are CUBA-LIF neurons and count their spikes; the output layer is a non-spiking integrator whose
accumulated input is the readout (logits = out_acc / (T 2**w_frac)). Optional ``inject`` (B, d_1) adds a
constant synaptic input to layer 1 every timestep (FTP's target pass).

State kept: u, v, the pending (delayed) input and a spike count per neuron, and the input phases: nothing
per timestep is stored. Counters go to C[phase, l] (layer l's synapses and neurons) and C[phase, L]
(timesteps).
"""
import numpy as np
from numba import njit

from .counters import NEURON_ACTIVE, TIMESTEPS
from .lif import dense_events_, lif_int_step_

__all__ = ["spiking_pass_", "PHASE_ONE"]

PHASE_ONE = 256  # input rate code: 8-bit intensities


@njit(cache=True)
def spiking_pass_(x_q, steps, w, dims, offs, wexp, vth_eff, du, dv, delay, inject, phase_buf, spk, u, v,
                  pending, a_buf, counts, in_counts, out_acc, nnz, C, phase):
    """Run the net on x_q (B, d_0) int64 intensities in [0, 256] for ``steps`` timesteps.

    Flat per-neuron buffers cover layers 1..L at offsets ``noff`` derived from dims (B x d_l each): spk, u, v
    (hidden layers), pending, a_buf (all layers); counts (B, sum of hidden d_l) spike counts, in_counts
    (B, d_0) input spike counts, out_acc (B, d_L). wexp, vth_eff: per layer; nnz: the layers' nonzero-per-input
    counts, concatenated (layer l's at sum of earlier d_in).
    """
    batch = x_q.shape[0]
    n_layers = dims.size - 1
    d0 = dims[0]
    # offsets of each layer's neurons in the flat buffers, and of each layer's column counts in nnz
    noff = np.zeros(n_layers + 1, dtype=np.int64)
    coff = np.zeros(n_layers + 1, dtype=np.int64)
    hoff = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        noff[l + 1] = noff[l] + batch * dims[l + 1]
        coff[l + 1] = coff[l] + dims[l]
        hoff[l + 1] = hoff[l] + (dims[l + 1] if l < n_layers - 1 else 0)
    phase_buf[:] = 0
    spk[:] = 0
    u[:] = 0
    v[:] = 0
    pending[:] = 0
    counts[:] = 0
    in_counts[:] = 0
    out_acc[:] = 0
    s_in = np.zeros((batch, d0), dtype=np.int64)  # simulator view of this step's input spikes
    wts = []  # each layer's weights indexed by input axon (Loihi's fan-out lists), for this presentation
    for l in range(n_layers):
        d_in, d_out = dims[l], dims[l + 1]
        wts.append(np.ascontiguousarray(w[offs[l]:offs[l] + d_out * d_in].reshape((d_out, d_in)).T).astype(np.int32))
    for _ in range(steps):
        for b in range(batch):
            for j in range(d0):
                ph = phase_buf[b, j] + x_q[b, j]
                if ph >= 256:
                    ph -= 256
                    s_in[b, j] = 1
                    in_counts[b, j] += 1
                else:
                    s_in[b, j] = 0
                phase_buf[b, j] = ph
        src = s_in
        for l in range(n_layers):
            d_in, d_out = dims[l], dims[l + 1]
            row = C[phase, l]
            a_new = a_buf[noff[l]:noff[l + 1]].reshape((batch, d_out))
            dense_events_(src, wts[l], wexp[l], nnz[coff[l]:coff[l + 1]], a_new, row)
            delivered = pending[noff[l]:noff[l + 1]].reshape((batch, d_out))
            if delay > 0:
                for b in range(batch):
                    for i in range(d_out):
                        a_old = delivered[b, i]
                        delivered[b, i] = a_new[b, i]
                        a_new[b, i] = a_old  # a_new now holds what arrives this step
                arrive = a_new
            else:
                arrive = a_new
            if l == 0 and inject.shape[0] > 0:
                for b in range(batch):
                    for i in range(d_out):
                        arrive[b, i] += inject[b, i]
            if l < n_layers - 1:
                s_out = spk[noff[l]:noff[l + 1]]
                lif_int_step_(u[noff[l]:noff[l + 1]], v[noff[l]:noff[l + 1]], arrive.reshape(-1), du, dv,
                              vth_eff[l], 0, s_out, row)
                s2 = s_out.reshape((batch, d_out))
                for b in range(batch):
                    for i in range(d_out):
                        counts[b, hoff[l] + i] += s2[b, i]
                src = s2
            else:
                for b in range(batch):
                    for i in range(d_out):
                        out_acc[b, i] += arrive[b, i]
                row[NEURON_ACTIVE] += batch * d_out
    C[phase, n_layers, TIMESTEPS] += steps
