"""The learning rules and their registry.

``RULES`` maps each CLI id to its :class:`RuleSpec`; :func:`compute_updates` is the pure, backend-neutral
entry point that returns one batch's per-layer gradient estimates without changing anything.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..models.mlp import ACTIVATIONS
from .base import ERRORS, RuleSpec, parse_options
from .bp import BPConfig, bp_update_torch
from .foton import FOTONConfig, bjorck_torch, foton_update_torch, foton_updates, projection_torch
from .ftp import FTPConfig, ftp_feedback, ftp_update_torch, ftp_updates
from .pepita import PEPITAConfig, pepita_feedback, pepita_update_torch, pepita_updates

__all__ = ["RULES", "BACKENDS", "FORWARD_ONLY_UPDATES", "RuleSpec", "compute_updates", "rule_config",
           "bjorck_torch", "projection_torch", "pepita_feedback", "ftp_feedback"]

BACKENDS = ("torch", "numba")

#: each forward-only rule's one torch definition, over a model family's passes (rules.passes):
#: ``updates(passes, x, t, config, feedback) -> (g_l per layer, the output error g_L correlates)``
FORWARD_ONLY_UPDATES = {"ftp": ftp_updates, "pepita": pepita_updates, "foton": foton_updates}

RULES: dict[str, RuleSpec] = {
    "bp": RuleSpec("bp", "backpropagation (autograd), the reference", "Rumelhart et al. 1986",
                   BPConfig, bp_update_torch, default_lr=0.1, default_activation="relu", forward_only=False,
                   fidelity={"torch": "float_reference", "numba": "bit_exact"}),
    "pepita": RuleSpec("pepita", "error-modulated input, fixed random F, two forward passes",
                       "Dellaferrera & Kreiman, ICML 2022", PEPITAConfig, pepita_update_torch,
                       default_lr=0.1, default_activation="relu", forward_only=True,
                       fidelity={"torch": "float_reference", "numba": "bit_exact"}),
    "foton": RuleSpec("foton", "orthogonal weights, error projected through the forward weights",
                      "arXiv 2512.20668 (ECAI 2025)", FOTONConfig, foton_update_torch,
                      default_lr=0.1, default_activation="relu", forward_only=True,
                      fidelity={"torch": "float_reference", "numba": "bit_exact"}),
    "ftp": RuleSpec("ftp", "layer-wise targets from a second forward pass, fixed random G",
                    "arXiv 2506.11030 (difference target, inferred form)", FTPConfig, ftp_update_torch,
                    default_lr=0.03, default_activation="tanh", forward_only=True,
                    fidelity={"torch": "float_reference", "numba": "bit_exact"}),
}


def rule_config(rule: str, **rule_options):
    """The frozen ``<Rule>Config`` for ``rule``, with unknown or invalid options refused."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(sorted(RULES))}")
    return parse_options(RULES[rule].config_cls, rule, rule_options)


def compute_updates(rule, weights, x, onehot, *, activation="relu", error="ce", backend="torch",
                    **rule_options) -> list:
    """Per-layer gradient estimates of ``rule`` for one batch, changing nothing.

    weights: list of ``W_l: (d_l, d_{l-1})`` (numpy or torch); x: (B, d_0); onehot: the one-hot targets (B, d_L).
    error: "ce" (e = softmax(y/T) - t) or "mse" (loss 0.5*sum((y-t)^2)/B). Returns ``g_l`` with ``W_l``'s
    shape and a gradient's sign, batch-averaged (the step is ``W_l -= lr * g_l``); numpy in, numpy out.
    backend "torch" is the float reference; "numba" runs the streaming kernels in float64.
    """
    config = rule_config(rule, **rule_options)
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if error not in ERRORS:
        raise ConfigError(f"unknown error {error!r}; choose one of {', '.join(ERRORS)}")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    as_numpy = not torch.is_tensor(x)
    if backend == "numba":
        from .numba_binding import compute_updates_numba

        return compute_updates_numba(rule, config, [np.asarray(w) for w in weights], np.asarray(x),
                                     np.asarray(onehot), activation, error)
    ws = [torch.as_tensor(w) for w in weights]
    xt = torch.as_tensor(x, dtype=ws[0].dtype)
    tt = torch.as_tensor(onehot, dtype=ws[0].dtype)
    grads = RULES[rule].update_torch(ws, xt, tt, activation=activation, error=error, config=config)
    return [g.cpu().numpy() for g in grads] if as_numpy else grads
