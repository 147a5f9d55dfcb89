"""Backpropagation, the reference: autograd of the loss.

delta_L = e; delta_l = (delta_{l+1} W_{l+1}) * sigma'(a_l); g_l = delta_l^T h_{l-1} / B.
Loss: CE = mean over the batch of cross-entropy(softmax(y / T), t) (T = 1 gives e = softmax(y) - t);
MSE = 0.5 * sum((y - t)^2) / B. BP must store every h_l for its backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..errors import ConfigError
from ..kernels.counters import FORWARD
from ..models.mlp import activate_torch
from .base import hidden_layer

__all__ = ["BPConfig", "bp_update_torch"]


@dataclass(frozen=True)
class BPConfig:
    """temperature: softmax temperature T of the CE loss."""

    temperature: float = 1.0

    def validate(self):
        if not self.temperature > 0:
            raise ConfigError("temperature must be > 0")


def bp_update_torch(weights, x, target, *, activation, error, config: BPConfig, masks=None,
                    meter: NoMeter = NO_METER):
    """Autograd's gradient of the loss for each ``W_l: (d_l, d_{l-1})``; the weights are not changed.
    ``masks``: dropout masks of the hidden pre-activations (rules.base.masked). ``meter`` counts the forward
    pass and each delta_l's propagation through W_l^T (l = L..2), read from autograd's gradient with respect to
    a_l (accounting.float_counts)."""
    act = lambda a: activate_torch(a, activation)  # noqa: E731
    leaves = [w.detach().clone().requires_grad_(True) for w in weights]
    metered = meter is not NO_METER
    pres = []
    with torch.enable_grad():
        h = x
        for l, w in enumerate(leaves):
            if l < len(leaves) - 1:
                raw, _, h_next = hidden_layer(h, w, l, act, masks, meter, FORWARD)
            else:
                raw = h_next = h @ w.T
                meter.forward(FORWARD, l, h, w, h_next)
            pres.append(raw)
            h = h_next
        y = h
        if error == "ce":
            loss = torch.nn.functional.cross_entropy(y / config.temperature, target.argmax(dim=1)) \
                * config.temperature
        else:
            loss = 0.5 * ((y - target) ** 2).sum() / x.shape[0]
        if not metered:
            return [g.detach() for g in torch.autograd.grad(loss, leaves)]
        meter.error(FORWARD, x.shape[0])
        grads = torch.autograd.grad(loss, leaves + pres[1:])
    for l in range(len(leaves) - 1, 0, -1):  # delta_l (B, d_l) through W_l^T
        meter.backward(l, grads[len(leaves) + l - 1], weights[l])
    return [g.detach() for g in grads[:len(leaves)]]
