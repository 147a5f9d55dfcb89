"""FTP: Forward Target Propagation (As-Saquib et al., arXiv 2506.11030) -- fo-edge's working definition.

No public code exists and the paper's exact equations could not be confirmed offline (ALGORITHMS.md), so
this follows the certain parts (a second forward pass, a fixed random frozen G carrying the output signal
top-down, layer-wise targets from feedforward computation only, local losses) in this form:
  1. clean pass: a_l, h_l, y; e as for every rule                                     e: (B, d_L)
  2. G: (d_1, d_L) fixed random, U(-1,1) * g_scale * sqrt(6 / d_L), from ``seed``
     target_mode="error" (default): tau_1 = sigma(a_1 - e G^T);  target_mode="label": tau_1 = sigma(a_1 + t G^T)
  3. target pass: tau_l = sigma(tau_{l-1} W_l^T), l = 2..L-1, through the forward weights
  4. g_l = ((h_l - tau_l) * sigma'(a_l))^T h_{l-1} / B   (local loss 0.5||h_l - tau_l||^2 / B)
     g_L = e^T h_{L-1} / B                               (ordinary output loss)
Layer l's activations are not needed once layer l+1's target exists: the passes run in lockstep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..models.mlp import activate_torch, activation_grad_torch
from .base import check_shape, feedback_matrix, forward_torch, output_error_torch

__all__ = ["FTPConfig", "ftp_update_torch", "ftp_feedback", "TARGETS"]

TARGETS = ("error", "label")


@dataclass(frozen=True)
class FTPConfig:
    """temperature: softmax T; seed / g_scale: the fixed random G; target_mode: "error" or "label";
    feedback: an explicit G (d_1, d_L) instead of the seeded one."""

    temperature: float = 1.0
    seed: int = 0
    g_scale: float = 1.0
    target_mode: str = "error"
    feedback: object = None

    def validate(self):
        if not self.temperature > 0 or not self.g_scale > 0:
            raise ConfigError("temperature and g_scale must be > 0")
        if self.target_mode not in TARGETS:
            raise ConfigError(f"unknown FTP target_mode {self.target_mode!r}; choose one of {', '.join(TARGETS)}")


def ftp_feedback(dims: tuple[int, ...], config: FTPConfig):
    """G: (d_1, d_L) float64 numpy, the same on every backend for the same seed (or ``config.feedback``)."""
    if config.feedback is not None:
        return check_shape(config.feedback, (dims[1], dims[-1]), "FTP feedback G")
    return feedback_matrix((dims[1], dims[-1]), dims[-1], config.g_scale, config.seed)


def ftp_update_torch(weights, x, target, *, activation, error, config: FTPConfig):
    """FTP's per-layer updates for one batch (see the module docstring); nothing is changed."""
    act = lambda a: activate_torch(a, activation)  # noqa: E731
    dims = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
    g_fb = torch.tensor(ftp_feedback(dims, config), dtype=x.dtype, device=x.device)
    pre, hs = forward_torch(weights, x, act)
    e = output_error_torch(pre[-1], target, error, config.temperature)
    batch = x.shape[0]
    grads = []
    tau = None
    for l in range(len(weights) - 1):
        if l == 0:
            signal = -e @ g_fb.T if config.target_mode == "error" else target @ g_fb.T
            tau = act(pre[0] + signal)
        else:
            tau = act(tau @ weights[l].T)
        delta = (hs[l + 1] - tau) * activation_grad_torch(pre[l], hs[l + 1], activation)
        grads.append(delta.T @ hs[l] / batch)
    grads.append(e.T @ hs[-1] / batch)
    return grads
