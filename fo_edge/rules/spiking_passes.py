"""The float spiking net's passes for the forward-only rules on the torch backend (rules.passes).

A pass is one presentation of T timesteps (``run(phase, x, inject=None)``: models.spiking.SpikingMLP.forward,
metered or not, returning (logits y, hidden spike counts c_l, input spike counts, input integrals A_l)); a
layer's activity is its spike count. The second pass of PEPITA and FOTON presents the input rates
clip(x + sign e F, 0, 1); FTP's injects its signal as a constant extra input current into layer 1 every timestep
(the spiking adaptation of its first-layer target, rules.ftp). With the hidden error "central" every second pass
has a twin with the opposite modulation. The hidden error (rules.spiking_binding.HIDDEN_ERRORS) is the family's,
whatever the rule (there is no derivative to take: ``local`` changes nothing):

    spike-count  delta_l = c_l - c'_l
    central      delta_l = (c_l^- - c_l^+) / 2                 (c^-: the opposite twin)
    surrogate    delta_l = 1[c_l + c'_l > 0] (A_l - A'_l)

    g_l = lr delta_l^T h_in / (T^2 B) (hidden layers),   g_L = lr e^T h_in / (T B)

(lr = 1 gives the rule's direction, as ``fo-edge diagnose`` uses it.)
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError
from ..kernels.counters import FORWARD, MODULATED
from .base import output_error_torch
from .passes import Pass

__all__ = ["SpikingPasses"]


class SpikingPasses:
    """rules.passes.Passes for a spiking net of ``n_layers`` weight layers presented by ``run`` (module
    docstring) with T = ``timesteps``, the output error ("ce" / "mse") at ``temperature``, the hidden error and
    the step's ``lr`` folded into every g_l."""

    def __init__(self, run: Callable, n_layers: int, error: str, temperature: float, hidden_error: str | None,
                 timesteps: int, lr: float = 1.0):
        self.run, self.n_layers, self.error_kind, self.temperature = run, n_layers, error, temperature
        self.hidden_error, self.timesteps, self.lr = hidden_error, timesteps, lr
        self.x, self.batch = None, 0

    @property
    def central(self) -> bool:
        return self.hidden_error == "central"

    def clean(self, x: torch.Tensor) -> Pass:
        y, counts, in_counts, acc = self.run(FORWARD, x)
        self.x, self.batch = x, len(x)
        return Pass(y, [in_counts, *counts], {"counts": counts, "acc": acc})

    def error(self, clean: Pass, t: torch.Tensor) -> torch.Tensor:
        return output_error_torch(clean.y, t, self.error_kind, self.temperature)

    def charge_projection(self, v: torch.Tensor, m: torch.Tensor) -> None:
        """The float spiking meter counts presentations, updates and Björck only."""

    def _second(self, y, counts, in_counts, acc, twin) -> Pass:
        return Pass(y, [in_counts, *counts], {"counts": counts, "acc": acc, "twin": twin})

    def from_input(self, x: torch.Tensor, e: torch.Tensor, f: torch.Tensor, sign: float) -> Pass:
        y_m, counts_m, in_m, acc_m = self.run(MODULATED, torch.clamp(x + sign * (e @ f), 0.0, 1.0))
        twin = self.run(MODULATED, torch.clamp(x - sign * (e @ f), 0.0, 1.0)) if self.central else None
        return self._second(y_m, counts_m, in_m, acc_m, twin)

    def from_first(self, clean: Pass, signal: torch.Tensor, pre: bool) -> Pass:
        y_m, counts_m, in_m, acc_m = self.run(MODULATED, self.x, signal)
        twin = self.run(MODULATED, self.x, -signal) if self.central else None
        return self._second(y_m, counts_m, in_m, acc_m, twin)

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> torch.Tensor:
        counts, counts_m = clean.state["counts"], second.state["counts"]
        if self.central:
            return (second.state["twin"][1][l] - counts_m[l]) / 2
        if self.hidden_error == "surrogate":
            return torch.where(counts[l] + counts_m[l] > 0, clean.state["acc"][l] - second.state["acc"][l], 0.0)
        return counts[l] - counts_m[l]

    def output_error(self, second: Pass, t: torch.Tensor) -> torch.Tensor:
        raise ConfigError("PEPITA's output_error=modulated does not run on spiking devices")

    def local_output_error(self, clean: Pass, second: Pass) -> torch.Tensor:
        """y - tau_L: the clean minus the modulated output (central: (y^- - y^+) / 2)."""
        return (second.state["twin"][0] - second.y) / 2 if self.central else clean.y - second.y

    def correlate(self, l: int, delta: torch.Tensor, h_in: torch.Tensor) -> torch.Tensor:
        if l < self.n_layers - 1:
            return self.lr * delta.T @ h_in / (self.timesteps ** 2 * self.batch)
        return self.lr * delta.T @ h_in / (self.timesteps * self.batch)
