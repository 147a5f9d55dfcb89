"""FTP: Forward Target Propagation (As-Saquib et al., arXiv 2506.11030).

No public training code exists (ALGORITHMS.md, FTP). What is CONFIRMED: a fixed random frozen G of shape
(d_1, d_L) maps two output-space vectors into hidden layer 1 (the author's MAC sheet counts 2 x d_L x d_1);
the second pass starts at layer 1's target and runs through the network's own weights; each layer minimises a
local loss to its target; the first-layer target is the clean first hidden activation plus a correction formed
by contrasting the projected label and the projected current output through G and a nonlinearity, DTP-style,
scaled by a factor gamma (the ICLR-2026 reviews). INFERRED (fo-edge's reading, the form implemented):

  1. clean pass: a_l, h_l, y; e as for every rule                                     e: (B, d_L)
  2. G: (d_1, d_L) fixed random, U(-1,1) * g_scale * sqrt(6 / d_L), from ``seed``
     target="difference" (default):
         tau_1 = h_1 + gamma * (f(t G^T) - f(y_hat G^T))       y_hat = softmax(y / T) (or raw y), f = tanh
         (on the spiking device the correction is injected as input current into layer 1: an adaptation)
     target="error_preactivation" (the older working definition): tau_1 = sigma(a_1 - e G^T)
     target="label":                                              tau_1 = sigma(a_1 + t G^T)
  3. target pass: tau_l = sigma(tau_{l-1} W_l^T), l = 2..L-1, through the forward weights
  4. g_l = ((h_l - tau_l) * sigma'(a_l))^T h_{l-1} / B   (local loss 0.5||h_l - tau_l||^2 / B; clean h_{l-1})
     output_loss="error" (default): g_L = e^T h_{L-1} / B  (the ordinary output loss)
     output_loss="local": tau_L = tau_{L-1} W_L^T (the target pass continued through the linear output layer),
                          g_L = (y - tau_L)^T h_{L-1} / B   (the local loss 0.5||y - tau_L||^2 / B, as every
                          hidden layer's; ALGORITHMS.md lists both as readings of "each layer minimises a local
                          loss to its target"; on the spiking device y - tau_L is the clean minus the modulated
                          output, or half the difference of the two modulated passes with the central error)
Not known from any source: gamma's value, f, G's scale, optimizer, lr, epochs (fo-edge's defaults: gamma 1,
f tanh, y_hat softmax, g_scale 1). To first order the difference and error_preactivation targets push h_1
along the same direction G (t - y_hat); they are gated differently (f' at the projections, not sigma' at a_1).
Layer l's activations are not needed once layer l+1's target exists: the passes run in lockstep.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..errors import ConfigError
from .base import check_shape, feedback_matrix
from .mlp_passes import MLPPasses
from .passes import Passes

__all__ = ["FTPConfig", "ftp_updates", "ftp_update_torch", "ftp_feedback", "ftp_signal", "TARGETS",
           "PROJECTION_NONLINEARITIES", "OUTPUT_LOSSES"]

TARGETS = ("difference", "error_preactivation", "label")
OUTPUT_LOSSES = ("error", "local")
PROJECTION_NONLINEARITIES = ("tanh", "sigmoid", "identity")
_ALIASES = {"error": "error_preactivation"}  # the name target_mode used before the difference target


@dataclass(frozen=True)
class FTPConfig:
    """temperature: softmax T (logits divided by T); seed / g_scale: the fixed random G; target: the first
    layer's target ("difference", "error_preactivation" or "label", module docstring); gamma, target_f,
    y_hat ("softmax" or "raw"): the difference target's scale, nonlinearity f and current-output vector;
    feedback: an explicit G (d_1, d_L) instead of the seeded one. ``target_mode`` is the old name of
    ``target`` ("error" means error_preactivation), kept so saved runs and scripts still load; output_loss:
    the output layer's loss, "error" (the label error e) or "local" (to the target pass's tau_L)."""

    temperature: float = 1.0
    seed: int = 0
    g_scale: float = 1.0
    target: str = "difference"
    gamma: float = 1.0
    target_f: str = "tanh"
    y_hat: str = "softmax"
    target_mode: str | None = None
    feedback: object = None
    output_loss: str = "error"

    def __post_init__(self):
        if self.target_mode is not None:  # the old name wins only when given
            object.__setattr__(self, "target", _ALIASES.get(self.target_mode, self.target_mode))
            object.__setattr__(self, "target_mode", None)
        object.__setattr__(self, "target", _ALIASES.get(self.target, self.target))

    def validate(self):
        if not self.temperature > 0 or not self.g_scale > 0 or not self.gamma > 0:
            raise ConfigError("temperature, g_scale and gamma must be > 0")
        if self.target not in TARGETS:
            raise ConfigError(f"unknown FTP target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.target_f not in PROJECTION_NONLINEARITIES:
            raise ConfigError(f"unknown FTP target_f {self.target_f!r}; choose one of "
                              f"{', '.join(PROJECTION_NONLINEARITIES)}")
        if self.y_hat not in ("softmax", "raw"):
            raise ConfigError(f"unknown FTP y_hat {self.y_hat!r}; choose softmax or raw")
        if self.output_loss not in OUTPUT_LOSSES:
            raise ConfigError(f"unknown FTP output_loss {self.output_loss!r}; choose one of {', '.join(OUTPUT_LOSSES)}")


def ftp_feedback(dims: tuple[int, ...], config: FTPConfig):
    """G: (d_1, d_L) float64 numpy, the same on every backend for the same seed (or ``config.feedback``)."""
    if config.feedback is not None:
        return check_shape(config.feedback, (dims[1], dims[-1]), "FTP feedback G")
    return feedback_matrix((dims[1], dims[-1]), dims[-1], config.g_scale, config.seed)


def _project_f(v, name: str):
    """f(v) for torch tensors or numpy arrays."""
    xp = torch if torch.is_tensor(v) else np
    if name == "tanh":
        return xp.tanh(v)
    if name == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-v))
    return v


def ftp_signal(config: FTPConfig, target, e, y, g_fb):
    """The first layer's correction, (B, d_1), torch or numpy alike; G: (d_1, d_L).

    difference: gamma * (f(t G^T) - f(y_hat G^T)), added to h_1, with y_hat = e + t (the output the error is
    formed from: softmax(y / T) for CE, y for MSE) or the raw y; error_preactivation: -e G^T and label: t G^T,
    added to a_1 before sigma. The spiking device injects the same signal as input current into layer 1.
    """
    if config.target == "difference":
        y_hat = e + target if config.y_hat == "softmax" else y
        f = config.target_f
        return config.gamma * (_project_f(target @ g_fb.T, f) - _project_f(y_hat @ g_fb.T, f))
    return -e @ g_fb.T if config.target == "error_preactivation" else target @ g_fb.T


def _projected(config: FTPConfig, target, e, y) -> list:
    """The output-space vectors ftp_signal multiplies by G^T (each counted as a feedback product)."""
    if config.target == "difference":
        return [target, e + target if config.y_hat == "softmax" else y]
    return [e if config.target == "error_preactivation" else target]


def ftp_updates(passes: Passes, x, target, config: FTPConfig, g_fb) -> tuple[list, object]:
    """FTP's per-layer updates for one batch over a model family's passes (rules.passes; the module docstring's
    steps 1 to 4): returns (g_l for every layer, the output error g_L correlates: e, or y - tau_L with
    output_loss "local"). G: (d_1, d_L). Nothing is changed. The one definition of FTP: MLPs on torch
    (:func:`ftp_update_torch`), spiking nets on torch (engine.spiking_torch), and the MLP and spiking devices on
    Numba (rules.mlp_device_passes, rules.spiking_binding) run it."""
    clean = passes.clean(x)
    e = passes.error(clean, target)
    last = passes.n_layers - 1
    if config.output_loss == "local" and last < 1:
        raise ConfigError("FTP output_loss=local needs a hidden layer (its target comes from the target pass)")
    grads, second = [], None
    if last > 0:
        signal = ftp_signal(config, target, e, clean.y, g_fb)
        for v in _projected(config, target, e, clean.y):
            passes.charge_projection(v, g_fb.T)
        second = passes.from_first(clean, signal, pre=config.target != "difference")
        for l in range(last):
            delta = passes.delta(l, clean, second, local=True)  # the local loss's gradient at a_{l+1}
            grads.append(passes.correlate(l, delta, clean.h[l]))
    out = passes.local_output_error(clean, second) if config.output_loss == "local" else e
    grads.append(passes.correlate(last, out, clean.h[-1]))
    return grads, out


def ftp_update_torch(weights, x, target, *, activation, error, config: FTPConfig, masks=None,
                     meter: NoMeter = NO_METER):
    """FTP's per-layer updates for one batch of an MLP (see the module docstring); nothing is changed. ``masks``:
    dropout masks shared by both passes (rules.base.masked); a dropped unit has no local loss. ``meter``
    counts the passes (accounting.float_counts)."""
    dims = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
    g_fb = torch.tensor(ftp_feedback(dims, config), dtype=x.dtype, device=x.device)
    passes = MLPPasses(weights, activation, error, config.temperature, masks, meter)
    return ftp_updates(passes, x, target, config, g_fb)[0]
