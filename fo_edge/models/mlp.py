"""Bias-free MLPs: the model spec parser, orthogonal initialisation, and a torch module.

An MLP with L weight layers has dims ``(d_0, d_1, ..., d_L)`` and weights ``W_l: (d_l, d_{l-1})``;
``h_l = sigma(h_{l-1} W_l^T)`` for l < L and the output ``y = h_{L-1} W_L^T`` is linear. Biases are off,
as in FOTON's reference configuration.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["ACTIVATIONS", "INITS", "MLP", "init_weights", "parse_model_spec"]

ACTIVATIONS = ("relu", "tanh", "identity")
INITS = ("orthogonal", "uniform", "he_uniform")
_MAX_WIDTH = 1 << 16
_MAX_LAYERS = 1000
_TERM = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_model_spec(spec: str) -> tuple[int, ...]:
    """Parse ``"784-256x12-10"`` into ``(784, 256, ..., 256, 10)`` (``256x12`` repeats 256 twelve times).

    Raises ConfigError naming the bad term; at least one weight layer is required.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("--model must look like 784-256-256-10 (widths joined by '-', 'WxN' repeats W N times)")
    dims: list[int] = []
    for term in spec.strip().split("-"):
        match = _TERM.match(term.strip())
        if not match:
            raise ConfigError(f"malformed --model {spec!r}: term {term!r} is not a width like 256 or 256x12")
        width, repeat = int(match.group(1)), int(match.group(2) or 1)
        if not 1 <= width <= _MAX_WIDTH or not 1 <= repeat <= _MAX_LAYERS:
            raise ConfigError(f"malformed --model {spec!r}: widths must be 1..{_MAX_WIDTH} and repeats 1..{_MAX_LAYERS}")
        dims.extend([width] * repeat)
    if len(dims) < 2 or len(dims) - 1 > _MAX_LAYERS:
        raise ConfigError(f"malformed --model {spec!r}: need between 2 and {_MAX_LAYERS + 1} widths")
    return tuple(dims)


def init_weights(dims: tuple[int, ...], seed: int = 0, init: str = "orthogonal") -> list[np.ndarray]:
    """Weights ``W_l: (d_l, d_{l-1}) float32``.

    ``orthogonal``: semi-orthogonal (rows orthonormal when wide, columns when tall), from the QR of a
    seeded Gaussian matrix, so the same seed gives the same weights on every backend.
    ``uniform``: PyTorch's default Linear init, U(-1/sqrt(d_in), 1/sqrt(d_in)).
    ``he_uniform``: U(-sqrt(6/d_in), sqrt(6/d_in)), the PEPITA reference's (Dellaferrera & Kreiman 2022).
    """
    rng = np.random.default_rng(seed)
    weights = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        if init == "orthogonal":
            big, small = max(d_in, d_out), min(d_in, d_out)
            q, r = np.linalg.qr(rng.standard_normal((big, small)))
            q *= np.sign(np.diag(r))  # unique Q (Mezzadri 2007)
            w = q if d_out >= d_in else q.T
        elif init in ("uniform", "he_uniform"):
            bound = (1.0 if init == "uniform" else np.sqrt(6.0)) / np.sqrt(d_in)
            w = rng.uniform(-bound, bound, size=(d_out, d_in))
        else:
            raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        weights.append(np.ascontiguousarray(w, dtype=np.float32))
    return weights


class MLP(torch.nn.Module):
    """The torch module of a bias-free MLP (used for autograd BP, evaluation and export).

    forward(x: (B, d_0)) -> y: (B, d_L) logits.
    """

    def __init__(self, weights: list, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.layers = torch.nn.ModuleList()
        for w in weights:
            w = torch.as_tensor(np.asarray(w) if not torch.is_tensor(w) else w)
            layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
            with torch.no_grad():
                layer.weight.copy_(w)
            self.layers.append(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers[:-1]:
            h = activate_torch(layer(h), self.activation)
        return self.layers[-1](h)


def activate_torch(a: torch.Tensor, activation: str) -> torch.Tensor:
    """sigma(a) for the named activation."""
    if activation == "relu":
        return torch.relu(a)
    if activation == "tanh":
        return torch.tanh(a)
    return a


def activation_grad_torch(a: torch.Tensor, h: torch.Tensor, activation: str) -> torch.Tensor:
    """sigma'(a), given a and h = sigma(a)."""
    if activation == "relu":
        return (a > 0).to(a.dtype)
    if activation == "tanh":
        return 1.0 - h * h
    return torch.ones_like(a)
