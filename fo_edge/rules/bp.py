"""Backpropagation, the reference: autograd of the loss.

delta_L = e; delta_l = (delta_{l+1} W_{l+1}) * sigma'(a_l); g_l = delta_l^T h_{l-1} / B.
Loss: CE = mean over the batch of cross-entropy(softmax(y / T), t) (T = 1 gives e = softmax(y) - t);
MSE = 0.5 * sum((y - t)^2) / B. BP must store every h_l for its backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..models.mlp import activate_torch
from .base import masked

__all__ = ["BPConfig", "bp_update_torch"]


@dataclass(frozen=True)
class BPConfig:
    """temperature: softmax temperature T of the CE loss."""

    temperature: float = 1.0

    def validate(self):
        if not self.temperature > 0:
            raise ConfigError("temperature must be > 0")


def bp_update_torch(weights, x, target, *, activation, error, config: BPConfig, masks=None):
    """Autograd's gradient of the loss for each ``W_l: (d_l, d_{l-1})``; the weights are not changed.
    ``masks``: dropout masks of the hidden pre-activations (rules.base.masked)."""
    leaves = [w.detach().clone().requires_grad_(True) for w in weights]
    with torch.enable_grad():
        h = x
        for l, w in enumerate(leaves):
            a = h @ w.T
            h = activate_torch(masked(a, masks, l), activation) if l < len(leaves) - 1 else a
        y = h
        if error == "ce":
            loss = torch.nn.functional.cross_entropy(y / config.temperature, target.argmax(dim=1)) \
                * config.temperature
        else:
            loss = 0.5 * ((y - target) ** 2).sum() / x.shape[0]
        grads = torch.autograd.grad(loss, leaves)
    return [g.detach() for g in grads]
