"""The MLP's passes for the forward-only rules on the torch backend (rules.passes).

Weights W_l: (d_l, d_{l-1}); x: (B, d_0). A hidden layer is a = masked(h W^T), h = sigma(a) (rules.base.hidden_layer,
the same dropout mask in every pass), the output layer is linear (y = a_L). Each layer of every pass is counted by
the ``meter`` (accounting.float_counts) into its phase: the clean pass FORWARD, the second pass MODULATED.

    delta_l = h_{l+1} - h'_{l+1}                                  (PEPITA, FOTON)
    delta_l = (h_{l+1} - tau_{l+1}) * sigma'(a_{l+1}), 0 where dropped   (local: FTP's local loss)
    g_l = delta_l^T h_in / B
"""
from __future__ import annotations

from typing import Callable

import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..kernels.counters import FORWARD, MODULATED, RECOMPUTE
from ..models.mlp import activate_torch, activation_grad_torch
from .base import forward_torch, hidden_layer, output_error_torch
from .passes import Pass

__all__ = ["MLPPasses"]


class MLPPasses:
    """rules.passes.Passes for an MLP's weights (list of (d_l, d_{l-1}) tensors), its activation, the output
    error ("ce" / "mse") at ``temperature``, the step's dropout ``masks`` (or None) and a ``meter``."""

    def __init__(self, weights: list[torch.Tensor], activation: str, error: str, temperature: float, masks=None,
                 meter: NoMeter = NO_METER):
        self.weights, self.activation, self.error_kind, self.temperature = weights, activation, error, temperature
        self.masks, self.meter = masks, meter
        self.n_layers = len(weights)
        self.act: Callable = lambda a: activate_torch(a, activation)
        self.batch = 0

    def clean(self, x: torch.Tensor) -> Pass:
        pre, hs = forward_torch(self.weights, x, self.act, self.masks, self.meter)
        self.batch = x.shape[0]
        return Pass(pre[-1], hs, {"pre": pre})

    def error(self, clean: Pass, t: torch.Tensor) -> torch.Tensor:
        e = output_error_torch(clean.y, t, self.error_kind, self.temperature)
        self.meter.error(FORWARD, self.batch)
        return e

    def charge_projection(self, v: torch.Tensor, m: torch.Tensor) -> None:
        self.meter.project(MODULATED, v, m)

    def _hidden(self, h: torch.Tensor, first: int) -> list[torch.Tensor]:
        """The hidden layers first .. L-2 of a second pass from ``h`` (layer ``first``'s input)."""
        out = []
        for l in range(first, self.n_layers - 1):
            h = hidden_layer(h, self.weights[l], l, self.act, self.masks, self.meter, MODULATED)[2]
            out.append(h)
        return out

    def from_input(self, x: torch.Tensor, e: torch.Tensor, f: torch.Tensor, sign: float) -> Pass:
        h0 = x + sign * (e @ f)
        self.meter.project(MODULATED, e, f)
        return Pass(None, [h0, *self._hidden(h0, 0)])

    def from_first(self, clean: Pass, signal: torch.Tensor, pre: bool) -> Pass:
        tau1 = self.act(clean.state["pre"][0] + signal) if pre else clean.h[1] + signal
        return Pass(None, [None, tau1, *self._hidden(tau1, 1)])

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> torch.Tensor:
        delta = clean.h[l + 1] - second.h[l + 1]
        if not local:
            return delta
        delta = delta * activation_grad_torch(clean.state["pre"][l], clean.h[l + 1], self.activation)
        return delta if self.masks is None else delta * (self.masks[l] != 0)

    def output_error(self, second: Pass, t: torch.Tensor) -> torch.Tensor:
        last = self.n_layers - 1
        second.y = second.h[-1] @ self.weights[last].T
        self.meter.forward(MODULATED, last, second.h[-1], self.weights[last], second.y)
        self.meter.error(MODULATED, self.batch)
        return output_error_torch(second.y, t, self.error_kind, self.temperature)

    def local_output_error(self, clean: Pass, second: Pass) -> torch.Tensor:
        last = self.n_layers - 1
        second.y = second.h[-1] @ self.weights[last].T
        self.meter.forward(RECOMPUTE, last, clean.h[-1], self.weights[last], clean.y)  # the device recomputes y
        self.meter.forward(MODULATED, last, second.h[-1], self.weights[last], second.y)
        return clean.y - second.y

    def correlate(self, l: int, delta: torch.Tensor, h_in: torch.Tensor) -> torch.Tensor:
        return delta.T @ h_in / self.batch
