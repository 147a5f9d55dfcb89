"""What every rule shares: the registry entry type, option parsing, output error, seeded feedback matrices.

Notation (ALGORITHMS.md): weights ``W_l: (d_l, d_{l-1})``, inputs ``x: (B, d_0)``, one-hot target
``t: (B, d_L)``; every returned ``g_l`` has ``W_l``'s shape, a gradient's sign and batch averaging, so the
SGD step is ``W_l <- W_l - lr * g_l``.
"""
from __future__ import annotations

import dataclasses
import difflib
from functools import lru_cache
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..accounting.float_counts import NO_METER, NoMeter
from ..errors import ConfigError
from ..kernels.counters import FORWARD

__all__ = ["RuleSpec", "parse_options", "output_error_torch", "feedback_matrix", "masked", "hidden_layer", "ERRORS"]

ERRORS = ("ce", "mse")


@dataclass(frozen=True)
class RuleSpec:
    """One learning rule as the registry knows it.

    ``update_torch(weights, x, t, activation=, error=, config=) -> list[Tensor]`` is the float reference;
    ``fidelity`` maps backend -> Lava-style tag (``float_reference``, ``bit_exact``).
    ``forward_only``: True when no backward pass (and so no stored graph) is needed.
    ``default_lr`` / ``default_activation``: what ``fo-edge simulate`` uses when none is given (measured on MNIST,
    see README).
    """

    name: str
    summary: str
    paper: str
    config_cls: type
    update_torch: Callable[..., list]
    default_lr: float
    default_activation: str
    forward_only: bool
    fidelity: dict[str, str]


def parse_options(config_cls: type, rule: str, options: dict[str, Any]):
    """Build ``config_cls(**options)``, refusing unknown keys with a did-you-mean and checking types."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key in options:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {key!r} for rule {rule}{hint}; valid: {', '.join(fields)}")
    config = config_cls(**options)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def output_error_torch(y: torch.Tensor, target: torch.Tensor, error: str, temperature: float) -> torch.Tensor:
    """e: (B, d_L). CE: e = softmax(y / T) - t; MSE: e = y - t (the gradient of 0.5*sum((y-t)^2) per sample).

    Temperature has one meaning everywhere in fo-edge: the logits are *divided* by T (T > 1 softens). The
    FOTON reference multiplies (``softmax(ce_T * y)``); recipes accept its ``ce_T`` and store T = 1 / ce_T."""
    if error == "ce":
        return torch.softmax(y / temperature, dim=1) - target
    if error == "mse":
        return y - target
    raise ConfigError(f"unknown error {error!r}; choose one of {', '.join(ERRORS)}")


def check_shape(array, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``array`` as float64 numpy, refusing a shape other than ``shape``."""
    out = np.asarray(array.cpu() if torch.is_tensor(array) else array, dtype=np.float64)
    if out.shape != tuple(shape):
        raise ConfigError(f"{what} must have shape {tuple(shape)}, got {out.shape}")
    return out


@lru_cache(maxsize=32)
def feedback_matrix(shape: tuple[int, int], fan_in: int, scale: float, seed: int) -> np.ndarray:
    """A fixed random matrix, entries U(-1, 1) * scale * sqrt(6 / fan_in), float64, from ``seed``.

    PEPITA's F (d_L, d_0) uses fan_in = d_0 and scale 0.05 (Dellaferrera & Kreiman 2022). The same seed
    gives the same matrix on every backend.
    """
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1.0, 1.0, size=shape) * scale * np.sqrt(6.0 / fan_in)
    out.flags.writeable = False  # cached: shared by every caller
    return out


def masked(a: torch.Tensor, masks, l: int) -> torch.Tensor:
    """Hidden layer l's pre-activation ``a: (B, d_{l+1})`` times its dropout mask (inverted dropout: entries 0 or
    1 / (1 - p)); unchanged when ``masks`` is None. The same mask serves every pass of a step, as the FOTON
    reference's ConsistentDropout does (Linear -> dropout -> activation)."""
    return a if masks is None else a * masks[l]


def forward_torch(weights: list[torch.Tensor], x: torch.Tensor, activate: Callable, masks=None,
                  meter: NoMeter = NO_METER) -> tuple[list, list]:
    """The clean pass: pre-activations ``a_1..a_L`` and activities ``h_0 = x, h_1..h_{L-1}``; ``a_L`` is y.
    ``masks``: per hidden layer (B, d_l) dropout masks, or None (see :func:`masked`); ``meter`` counts each layer
    into the forward phase (accounting.float_counts)."""
    hs, pre = [x], []
    for l, w in enumerate(weights):
        if l < len(weights) - 1:
            _, a, h = hidden_layer(hs[-1], w, l, activate, masks, meter, FORWARD)
            pre.append(a)
            hs.append(h)
        else:
            pre.append(hs[-1] @ w.T)
            meter.forward(FORWARD, l, hs[-1], w, pre[-1])
    return pre, hs


def hidden_layer(h_in: torch.Tensor, w: torch.Tensor, l: int, activate: Callable, masks, meter: NoMeter,
                 phase: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden layer l of any pass: a = masked(h_in W^T), h = sigma(a); returns (h_in W^T, a, h), each
    (B, d_l). ``meter`` counts it into ``phase`` with the outputs as the neurons computed them, before dropout
    (as the device kernels count)."""
    raw = h_in @ w.T
    a = masked(raw, masks, l)
    h = activate(a)
    meter.forward(phase, l, h_in, w, h if masks is None or meter is NO_METER else activate(raw))
    return raw, a, h
