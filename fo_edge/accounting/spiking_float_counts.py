"""Counters for the float spiking path (snnTorch, engine.spiking_torch), in the spiking kernels' schema.

What the bit-exact spiking kernels (kernels.spiking) count for one presentation of B samples for T steps, the
float path counts from its own spikes, the same way:

  layer l (input spikes s_{l-1}: the input code's for l = 1, layer l-1's spikes after): synaptic_events =
      acs_effective = sum_j c_j nnz(W_l[:, j]), c_j the spikes input j sent over the presentation (each spike
      delivered over every nonzero synapse of its fan-out);
  hidden layer: spikes = its spike count; neuron_updates_active = the neuron steps with input or state
      (a nonzero synaptic input or membrane potential before the step, kernels.lif), _inactive the other
      T B d_l - active;
  output layer (non-spiking integrators): T B d_L active neuron updates;
  network column: T B timesteps (the chip presents the samples one after another).

The weight updates are charged as on the float MLP path (accounting.float_counts.FloatMeter.update: the
kernels' update schema), Björck likewise; F's refresh is not charged, as the spiking kernels do not charge it.
Saturation, wraps and lost updates are integer effects and stay 0.
"""
from __future__ import annotations

import torch

from ..kernels.counters import ACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SPIKES, SYN_EVENTS, TIMESTEPS
from .float_counts import FloatMeter

__all__ = ["SpikingFloatMeter"]


class SpikingFloatMeter(FloatMeter):
    """Counts one float spiking run on ``profile`` (its ``spiking.timesteps`` and formats); see the module
    docstring. ``record()``, ``restore()``, ``update()`` and ``orthogonalize()`` are FloatMeter's."""

    def __init__(self, dims, profile, rule: str):
        super().__init__(dims, profile, rule, "store")
        self.steps = int(profile.spiking.timesteps)

    def presentation(self, phase: int, ws: list[torch.Tensor], in_counts: torch.Tensor, counts: list[torch.Tensor],
                     active: list[torch.Tensor]) -> None:
        """One presentation: ``in_counts`` (B, d_0) input spikes, ``counts`` the hidden layers' (B, d_l) spikes,
        ``active`` their active neuron steps (0-d), as models.spiking.SpikingMLP returns them."""
        batch = in_counts.shape[0]
        last = len(ws) - 1
        for l, w in enumerate(ws):
            d_out = w.shape[0]
            src = (in_counts if l == 0 else counts[l - 1]).detach()
            nnz = self._weight_nnz(l, w, 0)
            per_input = src.sum(dim=0).round().to(torch.int64)
            events = (per_input * nnz).sum() if nnz is not None else per_input.sum() * d_out
            self._add(phase, l, SYN_EVENTS, events)
            self._add(phase, l, ACS_EFF, events)
            if l < last:
                self._add(phase, l, SPIKES, counts[l].detach().sum().round().to(torch.int64))
                self._add(phase, l, NEURON_ACTIVE, active[l])
                self.shape[phase, l, NEURON_INACTIVE] += self.steps * batch * d_out
            else:
                self.shape[phase, l, NEURON_ACTIVE] += self.steps * batch * d_out
        self.shape[phase, self.n_layers, TIMESTEPS] += self.steps * batch
