"""FOTON: Forward-Only Training of Orthogonal Networks (arXiv 2512.20668, ECAI 2025).

One step, weights ``W_l: (d_l, d_{l-1})`` kept (semi-)orthogonal:
  1. clean pass: h_1..h_{L-1}, y; e = softmax(y/T) - t (CE) or y - t (MSE)            e: (B, d_L)
  2. projection F = W_L W_{L-1} ... W_1                                                F: (d_L, d_0)
  3. modulated input x_err = x - e F                                                   (B, d_0)
  4. modulated pass: h^err_l = forward of x_err through the same weights
  5. g_l = (h_l - h^err_l)^T h_{l-1} / B for l < L (h_{l-1} clean, h_0 = x);  g_L = e^T h_{L-1} / B
  6. every ``ortho_every`` steps re-orthogonalise each W_l with Björck; every ``refresh_every`` steps
     recompute F (a stale F is used in between).
For linear layers with W_l W_l^T = I, h_l - h^err_l = e W_L ... W_{l+1} = BP's delta_l: g_l is BP's gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..errors import ConfigError
from .mlp_passes import MLPPasses
from .passes import Passes

__all__ = ["FOTONConfig", "foton_updates", "foton_update_torch", "projection_torch", "bjorck_torch"]


@dataclass(frozen=True)
class FOTONConfig:
    """temperature: softmax T (logits divided by T); ortho_every / bjorck_iters: Björck schedule (reference:
    1 / 20); bjorck_tol: stop iterating once ||W^T W - I||_F <= bjorck_tol (0: always ``bjorck_iters``);
    refresh_every: steps between recomputing F (reference: 1); projection: a given (stale) F, or None to
    compute it from the current weights."""

    temperature: float = 1.0
    ortho_every: int = 1
    bjorck_iters: int = 20
    bjorck_tol: float = 0.0
    refresh_every: int = 1
    projection: object = None

    def validate(self):
        if not self.temperature > 0:
            raise ConfigError("temperature must be > 0")
        if self.ortho_every < 0 or self.refresh_every < 1 or self.bjorck_iters < 1:
            raise ConfigError("ortho_every must be >= 0 (0 = never), refresh_every and bjorck_iters >= 1")
        if not self.bjorck_tol >= 0:
            raise ConfigError("bjorck_tol must be >= 0 (0: always run bjorck_iters iterations)")


def projection_torch(weights: list[torch.Tensor]) -> torch.Tensor:
    """F = W_L ... W_1: (d_L, d_0), computed as a chain of forward products."""
    proj = weights[0]
    for w in weights[1:]:
        proj = w @ proj
    return proj


def foton_updates(passes: Passes, x, target, config: FOTONConfig, f) -> tuple[list, object]:
    """FOTON's per-layer updates for one batch over a model family's passes (rules.passes; the module
    docstring's steps 1, 3, 4 and 5, F given): returns (g_l for every layer, the output error e). F: (d_L, d_0).
    Nothing is changed. The one definition of FOTON: on torch MLPs (:func:`foton_update_torch`), spiking nets
    (engine.spiking_torch) and BCOP conv nets (rules.foton_conv); on Numba the MLP, spiking and conv devices
    (rules.mlp_device_passes, rules.spiking_binding, rules.conv_binding)."""
    clean = passes.clean(x)
    e = passes.error(clean, target)
    second = passes.from_input(x, e, f, -1.0)  # x - e F
    grads = []
    for l in range(passes.n_layers - 1):
        delta = passes.delta(l, clean, second, local=False)  # h_l - h^err_l
        grads.append(passes.correlate(l, delta, clean.h[l]))
    grads.append(passes.correlate(passes.n_layers - 1, e, clean.h[-1]))
    return grads, e


def foton_update_torch(weights, x, target, *, activation, error, config: FOTONConfig, masks=None,
                       meter: NoMeter = NO_METER):
    """FOTON's per-layer updates for one batch of an MLP (see the module docstring); nothing is changed.
    ``masks``: dropout masks shared by both passes (rules.base.masked); ``meter`` counts the passes
    (accounting.float_counts; F's refresh is the training loop's)."""
    proj = config.projection
    proj = projection_torch(weights) if proj is None else torch.as_tensor(proj, dtype=x.dtype)
    passes = MLPPasses(weights, activation, error, config.temperature, masks, meter)
    return foton_updates(passes, x, target, config, proj)[0]


def bjorck_torch(w: torch.Tensor, iters: int = 20, power_iters: int = 10, tol: float = 0.0,
                 used: list | None = None, unchanged: list | None = None) -> torch.Tensor:
    """Order-1 Björck orthonormalisation: W <- W (1.5 I - 0.5 W^T W), at most ``iters`` times.

    W (d_out, d_in) is processed in its tall orientation m (a wide W as W^T). With ``tol > 0``, a W already
    within ||m^T m - I||_F <= tol comes back unchanged, and the iteration stops as soon as it is within tol;
    the number of iterations run is appended to ``used`` when given, and to ``unchanged`` whether W came back as
    it was (already within tol: no iteration, not even the power estimate). Otherwise m is first divided by a
    power-iteration estimate of ||m||_2 (times 1.01, never scaled up) so that the iteration converges.
    Returns a new tensor.
    """
    wide = w.shape[0] < w.shape[1]
    m = (w.T if wide else w).clone()
    eye = torch.eye(m.shape[1], dtype=m.dtype, device=m.device)
    if tol > 0 and torch.linalg.matrix_norm(m.T @ m - eye) <= tol:
        if used is not None:
            used.append(0)
        if unchanged is not None:
            unchanged.append(True)
        return w.clone()
    v = torch.ones(m.shape[1], dtype=m.dtype, device=m.device) / m.shape[1] ** 0.5
    for _ in range(power_iters):
        v = m.T @ (m @ v)
        v = v / v.norm().clamp_min(1e-30)
    sigma = (m @ v).norm() * 1.01
    if sigma > 1:
        m = m / sigma
    done = 0
    for _ in range(iters):
        gram = m.T @ m
        if tol > 0 and torch.linalg.matrix_norm(gram - eye) <= tol:
            break
        m = m @ (1.5 * eye - 0.5 * gram)
        done += 1
    if used is not None:
        used.append(done)
    if unchanged is not None:
        unchanged.append(False)
    return m.T.contiguous() if wide else m
