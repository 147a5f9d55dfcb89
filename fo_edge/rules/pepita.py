"""PEPITA: Present the Error to Perturb the Input To modulate Activity (Dellaferrera & Kreiman, ICML 2022).

Fixed random F: (d_L, d_0), entries U(-1,1) * f_scale * sqrt(6 / d_0), drawn from ``seed``.
  1. clean pass: h_1..h_{L-1}, y; e as for every rule                                  e: (B, d_L)
  2. modulated input x_mod = x + e F                                                  (B, d_0)
  3. modulated pass: h^mod_l
  4. g_1 = (h_1 - h^mod_1)^T x_mod / B;  g_l = (h_l - h^mod_l)^T h^mod_{l-1} / B (1 < l < L);
     g_L = e^T h^mod_{L-1} / B, or with ``output_error="modulated"`` g_L = e_mod^T h^mod_{L-1} / B where e_mod is
     the error of the modulated pass's output (the authors' code, GiorgiaD/PEPITA
     Tutorial_PEPITA_FullyConnectedNets_CIFAR-10.ipynb: ``delta_w = -mod_error.T @ mod_layers_act[-2]``)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..errors import ConfigError
from ..kernels.counters import FORWARD, MODULATED
from ..models.mlp import activate_torch
from .base import check_shape, feedback_matrix, forward_torch, hidden_layer, output_error_torch

__all__ = ["PEPITAConfig", "pepita_update_torch", "pepita_feedback"]


@dataclass(frozen=True)
class PEPITAConfig:
    """temperature: softmax T; seed / f_scale: the fixed random F (paper scale 0.05); output_error: the last
    layer's error, "clean" (e) or "modulated" (e_mod, the authors' code); feedback: an explicit F (d_L, d_0)
    instead of the seeded one."""

    temperature: float = 1.0
    seed: int = 0
    f_scale: float = 0.05
    output_error: str = "clean"
    feedback: object = None

    def validate(self):
        if not self.temperature > 0 or not self.f_scale > 0:
            raise ConfigError("temperature and f_scale must be > 0")
        if self.output_error not in ("clean", "modulated"):
            raise ConfigError(f"PEPITA output_error must be clean or modulated, got {self.output_error!r}")


def pepita_feedback(dims: tuple[int, ...], config: PEPITAConfig):
    """F: (d_L, d_0) float64 numpy, the same on every backend for the same seed (or ``config.feedback``)."""
    if config.feedback is not None:
        return check_shape(config.feedback, (dims[-1], dims[0]), "PEPITA feedback F")
    return feedback_matrix((dims[-1], dims[0]), dims[0], config.f_scale, config.seed)


def pepita_update_torch(weights, x, target, *, activation, error, config: PEPITAConfig, masks=None,
                        meter: NoMeter = NO_METER):
    """PEPITA's per-layer updates for one batch (see the module docstring); nothing is changed. ``masks``:
    dropout masks shared by both passes (rules.base.masked); ``meter`` counts the passes
    (accounting.float_counts)."""
    act = lambda a: activate_torch(a, activation)  # noqa: E731
    dims = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
    proj = torch.tensor(pepita_feedback(dims, config), dtype=x.dtype, device=x.device)
    pre, hs = forward_torch(weights, x, act, masks, meter)
    e = output_error_torch(pre[-1], target, error, config.temperature)
    batch = x.shape[0]
    meter.error(FORWARD, batch)
    h_mod = x + e @ proj
    meter.project(MODULATED, e, proj)
    grads = []
    for l, w in enumerate(weights[:-1]):
        h_next = hidden_layer(h_mod, w, l, act, masks, meter, MODULATED)[2]
        grads.append((hs[l + 1] - h_next).T @ h_mod / batch)
        h_mod = h_next
    if config.output_error == "modulated":
        y_mod = h_mod @ weights[-1].T
        meter.forward(MODULATED, len(weights) - 1, h_mod, weights[-1], y_mod)
        meter.error(MODULATED, batch)
        e = output_error_torch(y_mod, target, error, config.temperature)
    grads.append(e.T @ h_mod / batch)
    return grads
