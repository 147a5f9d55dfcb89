"""Orthogonal convolutional nets: BCOP kernels, circular convolution, orthogonal pooling, the conv-net spec.

BCOP (block convolution orthogonal parametrization; Li et al., NeurIPS 2019, "Preventing Gradient Attenuation
in Lipschitz Constrained Convolutional Networks"): a k x k kernel on c = max(c_in, c_out) channels is built as
the matrix convolution of an orthogonal 1 x 1 kernel H (c, c) with k - 1 orthogonal 2 x 2 blocks

    block(P, R) = [[P R, P (I - R)], [(I - P) R, (I - P)(I - R)]],   P = Q_a Q_a^T, R = Q_b Q_b^T,

where each Q (c, max(1, c/2)) has orthonormal columns, so P and R are symmetric projectors. Every factor is a
paraunitary matrix polynomial, so their product is too, and the circular convolution with the result is an
orthogonal operator on (c, H, W) maps for any H, W. c_in < c keeps the first c_in input channels (an
isometry); c_out < c keeps the first c_out output channels (a co-isometry, rows orthonormal).

Padding is circular (k odd, pad (k - 1) / 2): zero padding would break exact orthogonality at the borders.
Pooling is 2 x 2 average pooling times 2 (the orthonormal Haar low-pass, P P^T = I), so that FOTON's identity
h_l - h^err_l = delta_l still holds through it for linear layers (ALGORITHMS.md: "average pooling only").

A conv net ``c16-c32-10`` on (1, 28, 28) inputs is: conv 1->16 (28x28), act, pool 2 (14x14), conv 16->32,
act, pool 2 (7x7), flatten, dense 1568->10 (rows orthonormal). Activations are kept flat, ``(B, C*H*W)``, in
channel-major order, as the MLP's are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .mlp import activate_torch

__all__ = ["ConvSpec", "parse_conv_spec", "bcop_kernel", "init_conv_params", "conv_circular", "conv_adjoint",
           "pool2", "pool2_adjoint", "conv_forward_torch", "orthonormalize_params", "kernels_of", "is_conv_spec"]

_CONV_TERM = re.compile(r"^c(\d+)$")


@dataclass(frozen=True)
class ConvSpec:
    """channels: conv output channels, one per conv layer; n_classes: the dense output; in_shape: (C, H, W);
    kernel: k (odd). Layer l > 0 pools its input by 2 first; the dense layer pools too."""

    channels: tuple[int, ...]
    n_classes: int
    in_shape: tuple[int, int, int]
    kernel: int = 3

    def layer_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of the input of every layer, after its pooling (the dense layer's last)."""
        c, h, w = self.in_shape
        shapes = [(c, h, w)]
        for out in self.channels:
            c, h, w = out, h // 2, w // 2
            shapes.append((c, h, w))
        return shapes

    @property
    def dense_in(self) -> int:
        c, h, w = self.layer_shapes()[-1]
        return c * h * w

    @property
    def n_layers(self) -> int:
        return len(self.channels) + 1


def is_conv_spec(spec: str) -> bool:
    """True for model specs that start with a conv term (``c16-...``)."""
    return isinstance(spec, str) and spec.strip().startswith("c")


def parse_conv_spec(spec: str, in_shape: tuple[int, ...], kernel: int = 3) -> ConvSpec:
    """``"c16-c32-10"`` -> ConvSpec((16, 32), 10, in_shape). in_shape: (H, W) or (C, H, W) of one sample."""
    terms = [t.strip() for t in spec.strip().split("-")] if isinstance(spec, str) else []
    if len(terms) < 2 or not terms[-1].isdigit() or not all(_CONV_TERM.match(t) for t in terms[:-1]):
        raise ConfigError(f"malformed conv model {spec!r}: expected conv terms then classes, like c16-c32-10")
    channels = tuple(int(_CONV_TERM.match(t).group(1)) for t in terms[:-1])
    shape = tuple(int(s) for s in in_shape)
    shape = (1,) + shape if len(shape) == 2 else shape
    if len(shape) != 3:
        raise ConfigError(f"conv models need image data; this dataset's samples have shape {in_shape}")
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"conv kernel must be odd, got {kernel}")
    if any(c < 1 or c > 4096 for c in channels) or int(terms[-1]) < 1:
        raise ConfigError(f"malformed conv model {spec!r}: channels must be 1..4096 and classes >= 1")
    conv = ConvSpec(channels, int(terms[-1]), shape, kernel)
    _, h, w = conv.layer_shapes()[-1]
    if h < 1 or w < 1:
        raise ConfigError(f"conv model {spec!r} pools {shape[1]}x{shape[2]} images below 1 pixel")
    return conv


def _projector(q: torch.Tensor) -> torch.Tensor:
    return q @ q.T


def _matrix_conv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix convolution of kernels a: (c, c, ka, ka) and b: (c, c, kb, kb): out[:, :, i+k, j+l] += a[i, j] @ b[k, l]
    (the coefficients of the product of the two matrix polynomials), shape (c, c, ka+kb-1, ka+kb-1)."""
    c, _, ka, _ = a.shape
    kb = b.shape[2]
    out = a.new_zeros((c, c, ka + kb - 1, ka + kb - 1))
    for i in range(ka):
        for j in range(ka):
            for k in range(kb):
                for l in range(kb):
                    out[:, :, i + k, j + l] += a[:, :, i, j] @ b[:, :, k, l]
    return out


def _block(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(p.shape[0], dtype=p.dtype, device=p.device)
    out = p.new_zeros((p.shape[0], p.shape[0], 2, 2))
    out[:, :, 0, 0], out[:, :, 0, 1] = p @ r, p @ (eye - r)
    out[:, :, 1, 0], out[:, :, 1, 1] = (eye - p) @ r, (eye - p) @ (eye - r)
    return out


def bcop_kernel(h: torch.Tensor, qs: torch.Tensor, c_in: int, c_out: int) -> torch.Tensor:
    """The BCOP kernel (c_out, c_in, k, k) from H: (c, c) and qs: (2(k-1), c, rank) (module docstring).

    Differentiable in H and qs; orthogonal when H is orthogonal and every Q has orthonormal columns.
    """
    kernel = h[:, :, None, None]
    for i in range(qs.shape[0] // 2):
        kernel = _matrix_conv(kernel, _block(_projector(qs[2 * i]), _projector(qs[2 * i + 1])))
    return kernel[:c_out, :c_in].contiguous()


def init_conv_params(spec: ConvSpec, seed: int = 0, dtype=torch.float64) -> list[dict]:
    """Seeded orthogonal BCOP parameters per conv layer ({"h": (c, c), "qs": (2(k-1), c, max(1, c//2))}) and the
    dense weight ({"w": (n_classes, dense_in)}, rows orthonormal)."""
    rng = np.random.default_rng(seed)
    params = []
    shapes = spec.layer_shapes()
    for (c_in, _, _), c_out in zip(shapes[:-1], spec.channels):
        c = max(c_in, c_out)
        rank = max(1, c // 2)  # any projector rank gives an orthogonal block; BCOP uses c/2
        h = _orthonormal_columns(rng, c, c)
        qs = np.stack([_orthonormal_columns(rng, c, rank) for _ in range(2 * (spec.kernel - 1))]) \
            if spec.kernel > 1 else np.zeros((0, c, rank))
        params.append({"h": torch.tensor(h, dtype=dtype), "qs": torch.tensor(qs, dtype=dtype)})
    w = _orthonormal_columns(rng, spec.dense_in, spec.n_classes).T
    params.append({"w": torch.tensor(np.ascontiguousarray(w), dtype=dtype)})
    return params


def _orthonormal_columns(rng, rows: int, cols: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def kernels_of(spec: ConvSpec, params: list[dict]) -> list[torch.Tensor]:
    """The layers' weights: BCOP kernels (c_out, c_in, k, k) for the conv layers, then the dense W."""
    shapes = spec.layer_shapes()
    out = [bcop_kernel(p["h"], p["qs"], shapes[l][0], spec.channels[l]) for l, p in enumerate(params[:-1])]
    return out + [params[-1]["w"]]


def orthonormalize_params(params: list[dict], bjorck, iters: int) -> list[dict]:
    """Björck on every BCOP factor (H, each Q) and on the dense W; ``bjorck(m, iters)`` handles one matrix."""
    out = []
    for p in params:
        if "w" in p:
            out.append({"w": bjorck(p["w"], iters)})
        else:
            qs = torch.stack([bjorck(q, iters) for q in p["qs"]]) if len(p["qs"]) else p["qs"]
            out.append({"h": bjorck(p["h"], iters), "qs": qs})
    return out


def conv_circular(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Circular 'same' convolution (cross-correlation, as torch's conv2d): x (B, C_in, H, W) -> (B, C_out, H, W)."""
    pad = kernel.shape[-1] // 2
    return F.conv2d(_pad_circular(x, pad), kernel)


def _pad_circular(x: torch.Tensor, pad: int) -> torch.Tensor:
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    rows = torch.arange(-pad, h + pad, device=x.device) % h
    cols = torch.arange(-pad, w + pad, device=x.device) % w
    return x[:, :, rows][:, :, :, cols]  # index, not F.pad: also valid when pad exceeds the map


def conv_adjoint(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The adjoint (transpose) of :func:`conv_circular`: y (B, C_out, H, W) -> (B, C_in, H, W)."""
    flipped = kernel.flip(-2, -1).transpose(0, 1)
    return conv_circular(y, flipped)


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 average pooling times 2 (sum / 2): (B, C, H, W) -> (B, C, H//2, W//2); rows orthonormal."""
    return F.avg_pool2d(x, 2) * 2.0


def pool2_adjoint(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The adjoint of :func:`pool2`: each value / 2 copied to its 2 x 2 block, zeros for odd leftovers."""
    up = y.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1) / 2.0
    return F.pad(up, (0, size[1] - up.shape[-1], 0, size[0] - up.shape[-2]))


def conv_forward_torch(spec: ConvSpec, weights: list[torch.Tensor], x: torch.Tensor, activation: str,
                       keep: bool = False):
    """x: (B, C*H*W) flat -> logits (B, n_classes). With ``keep``, also returns per layer the (pooled) input
    and the activity: lists ``inputs[l]`` (B, C_in, H, W) and ``outs[l]`` (B, C_out, H, W) (the logits last)."""
    shapes = spec.layer_shapes()
    h = x.reshape((x.shape[0],) + shapes[0])
    inputs, outs = [], []
    for l, kernel in enumerate(weights):
        if l > 0:
            h = pool2(h)
        inputs.append(h)
        if l < len(weights) - 1:
            h = activate_torch(conv_circular(h, kernel), activation)
        else:
            h = h.reshape(h.shape[0], -1) @ kernel.T
        outs.append(h)
    return (h, inputs, outs) if keep else h


def param_grads(spec: ConvSpec, params: list[dict], grads: list[torch.Tensor]) -> list[dict]:
    """Map per-layer weight updates (kernel-shaped g_l, dense g_L) to the BCOP parameters by the chain rule
    through :func:`bcop_kernel` alone: a graph over the weights (k^2 c^2 values per layer), never over
    activations, so forward-only rules stay forward-only."""
    out = []
    for l, (p, g) in enumerate(zip(params, grads)):
        if "w" in p:
            out.append({"w": g})
            continue
        h, qs = p["h"].detach().requires_grad_(True), p["qs"].detach().requires_grad_(True)
        c_in = spec.layer_shapes()[l][0]
        kernel = bcop_kernel(h, qs, c_in, spec.channels[l])
        gh, gq = torch.autograd.grad(kernel, (h, qs), grad_outputs=g.to(kernel.dtype), allow_unused=True)
        out.append({"h": gh, "qs": torch.zeros_like(qs) if gq is None else gq})
    return out
