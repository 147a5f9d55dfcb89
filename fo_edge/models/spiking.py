"""The snnTorch reference of the loihi-like spiking MLP (``--backend torch`` on a spiking device).

The same network as kernels.spiking, in float: inputs through the same deterministic input code, each
hidden layer an ``nn.Linear`` (bias off) feeding a ``snntorch.Leaky`` neuron (beta = 1 - dv/4096, threshold, reset
to zero: snnTorch's delayed zero reset spikes exactly when Lava's immediate one does), currents delivered one
step late (Lava Dense's synaptic delay), and a non-spiking output integrator (logits = summed input / T). Runs
on CPU or CUDA; nothing per timestep is kept, only the spike counts.
"""
from __future__ import annotations

import snntorch as snn
import torch

from ..device.spec import InputCode, SpikingParams

__all__ = ["SpikingMLP", "PHASE_ONE", "input_spikes"]

PHASE_ONE = 256  # as kernels.spiking: 8-bit input intensities


def input_spikes(x: torch.Tensor, steps: int, code: InputCode = InputCode.RATE):
    """Yield the input spikes (B, d_0) in x's dtype, step by step, of kernels.spiking's input codes (x in [0, 1],
    x_q = round(256 x)): ``rate``: per pixel phase += x_q, a spike and phase -= 256 when phase >= 256;
    ``single``: one spike at t = 0 where x_q >= 128; ``ttfs``: one spike at t = (( 256 - x_q) (T - 1) + 128) // 256
    where x_q > 0."""
    x_q = torch.clamp(torch.round(x * PHASE_ONE), 0, PHASE_ONE)
    phase = torch.zeros_like(x_q)
    fire = torch.div((PHASE_ONE - x_q) * (steps - 1) + PHASE_ONE // 2, PHASE_ONE, rounding_mode="floor")
    for t in range(steps):
        if code is InputCode.RATE:
            phase = phase + x_q
            spikes = (phase >= PHASE_ONE).to(x.dtype)
            phase = phase - spikes * PHASE_ONE
        elif code is InputCode.SINGLE:
            spikes = ((2 * x_q >= PHASE_ONE) & (t == 0)).to(x.dtype)
        else:
            spikes = ((x_q > 0) & (fire == t)).to(x.dtype)
        yield spikes


class SpikingMLP(torch.nn.Module):
    """forward(x: (B, d_0) in [0, 1], inject=None) -> (logits (B, d_L), counts: list of (B, d_l) per hidden
    layer, input counts (B, d_0), input integrals: list of (B, d_l) per hidden layer, the synaptic input summed
    over the presentation); ``inject`` (B, d_1) is added to layer 1's input every timestep. ``active``: a list
    of 0-d int64 tensors, one per hidden layer, to which each step adds the neurons with input or state (a
    nonzero synaptic input or membrane potential before the step: the chip's active neuron updates)."""

    def __init__(self, weights: list[torch.Tensor], sp: SpikingParams):
        super().__init__()
        self.weights = weights  # shared with the training loop, updated in place
        self.sp = sp
        beta = 1.0 - sp.dv / 4096.0
        self.neurons = torch.nn.ModuleList(
            [snn.Leaky(beta=beta, threshold=sp.threshold, reset_mechanism="zero") for _ in weights[:-1]])

    @torch.no_grad()
    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None, active: list | None = None):
        sp, ws = self.sp, self.weights
        batch = x.shape[0]
        mems = [lif.init_leaky() for lif in self.neurons]
        pending = [torch.zeros(batch, w.shape[0], dtype=x.dtype, device=x.device) for w in ws]
        counts = [torch.zeros(batch, w.shape[0], dtype=x.dtype, device=x.device) for w in ws[:-1]]
        integrals = [torch.zeros_like(c) for c in counts]
        in_counts = torch.zeros_like(x)
        out = torch.zeros(batch, ws[-1].shape[0], dtype=x.dtype, device=x.device)
        for t, spikes in enumerate(input_spikes(x, sp.timesteps, sp.input_code)):
            in_counts += spikes
            src = spikes
            for l, w in enumerate(ws):
                current = src @ w.T
                if sp.delay > 0:
                    current, pending[l] = pending[l], current
                if l == 0 and inject is not None:
                    current = current + inject
                if l < len(ws) - 1:
                    integrals[l] += current
                    if active is not None:
                        busy = current != 0
                        if t > 0:  # before the first step the state is zero (init_leaky keeps an old shape)
                            busy = busy | (mems[l] != 0)
                        active[l] += torch.count_nonzero(busy)
                    src, mems[l] = self.neurons[l](current, mems[l])
                    counts[l] += src
                else:
                    out += current
        return out / sp.timesteps, counts, in_counts, integrals

    def surrogate_logits(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """The logits (B, d_L) of ``forward`` with ``weights`` (W_l: (d_l, d_{l-1}), e.g. leaves that require
        grad) and the autograd graph kept: backpropagation through time then passes each spike through snnTorch's
        surrogate derivative (``snn.Leaky``'s default, the arctan d S / d U = 1 / (1 + (pi U)^2), U the membrane
        potential above threshold) and the reset is detached (snnTorch's default), as in snnTorch's BPTT
        training. Memory: the graph holds every timestep's potentials, O(T B sum_l d_l)."""
        sp = self.sp
        mems = [lif.init_leaky() for lif in self.neurons]
        pending = [torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device) for w in weights]
        out = torch.zeros(x.shape[0], weights[-1].shape[0], dtype=x.dtype, device=x.device)
        for spikes in input_spikes(x, sp.timesteps, sp.input_code):
            src = spikes
            for l, w in enumerate(weights):
                current = src @ w.T
                if sp.delay > 0:
                    current, pending[l] = pending[l], current
                if l < len(weights) - 1:
                    src, mems[l] = self.neurons[l](current, mems[l])
                else:
                    out = out + current
        return out / sp.timesteps
