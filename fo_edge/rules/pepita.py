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
from .base import check_shape, feedback_matrix
from .mlp_passes import MLPPasses
from .passes import Passes

__all__ = ["PEPITAConfig", "pepita_updates", "pepita_update_torch", "pepita_feedback"]


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


def pepita_updates(passes: Passes, x, target, config: PEPITAConfig, f) -> tuple[list, object]:
    """PEPITA's per-layer updates for one batch over a model family's passes (rules.passes; the module
    docstring's steps 1 to 4): returns (g_l for every layer, the output error g_L correlates). F: (d_L, d_0).
    Nothing is changed. The one definition of PEPITA: MLPs on torch (:func:`pepita_update_torch`),
    spiking nets on torch (engine.spiking_torch), and the MLP and spiking devices on Numba (rules.mlp_device_passes,
    rules.spiking_binding) run it."""
    clean = passes.clean(x)
    e = passes.error(clean, target)
    second = passes.from_input(x, e, f, 1.0)  # x + e F
    grads = []
    for l in range(passes.n_layers - 1):
        delta = passes.delta(l, clean, second, local=False)  # h_l - h^mod_l
        grads.append(passes.correlate(l, delta, second.h[l]))
    out = passes.output_error(second, target) if config.output_error == "modulated" else e
    grads.append(passes.correlate(passes.n_layers - 1, out, second.h[-1]))
    return grads, out


def pepita_update_torch(weights, x, target, *, activation, error, config: PEPITAConfig, masks=None,
                        meter: NoMeter = NO_METER):
    """PEPITA's per-layer updates for one batch of an MLP (see the module docstring); nothing is changed.
    ``masks``: dropout masks shared by both passes (rules.base.masked); ``meter`` counts the passes
    (accounting.float_counts)."""
    dims = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
    proj = torch.tensor(pepita_feedback(dims, config), dtype=x.dtype, device=x.device)
    passes = MLPPasses(weights, activation, error, config.temperature, masks, meter)
    return pepita_updates(passes, x, target, config, proj)[0]
