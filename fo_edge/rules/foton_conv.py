"""FOTON on orthogonal conv nets (models.conv), and BP on the same nets as the reference.

For every layer l (conv or dense), with its pooled clean input u_{l-1} and activity h_l:
  1. clean pass: u_0..u_{L-1}, h_1..h_{L-1}, y; e = softmax(y/T) - t (CE) or y - t (MSE)     e: (B, d_L)
  2. projection F = A_L ... A_1 (d_L, d_0), the net's linear operators composed; each row is the adjoint
     chain (dense^T, pool^T, conv^T = the transposed convolution, ...) applied to a one-hot error
  3. x_err = x - e F; modulated pass: h^err_l
  4. conv layers: g_K = adjoint-conv(u_{l-1}, h_l - h^err_l) / B, i.e. sum over batch and pixels of
     (h_l - h^err_l)[p] (outer) u_{l-1}[p + offset]  (torch.nn.grad.conv2d_weight on the circularly padded input);
     dense: g_L = e^T u_{L-1} / B.
With linear activations and orthogonal operators (square BCOP kernels, pool2, row-orthonormal dense)
h_l - h^err_l equals BP's delta_l, so g_K is autograd's kernel gradient (tests/test_conv.py).
"""
from __future__ import annotations

import torch
from torch.nn.grad import conv2d_weight

from ..models.conv import ConvSpec, _pad_circular, conv_adjoint, conv_circular, conv_forward_torch, pool2, \
    pool2_adjoint
from ..models.mlp import activate_torch
from .base import output_error_torch
from .foton import FOTONConfig

__all__ = ["conv_projection_torch", "foton_conv_update_torch", "bp_conv_update_torch", "adjoint_chain"]


def adjoint_chain(spec: ConvSpec, weights: list[torch.Tensor], e: torch.Tensor) -> torch.Tensor:
    """e (B, d_L) -> e A_L ... A_1, shape (B, d_0): the error pushed through the transposed operators
    (dense^T, then per conv layer from the top: pool^T to the conv's output size, conv^T)."""
    shapes = spec.layer_shapes()
    v = (e @ weights[-1]).reshape((e.shape[0],) + shapes[-1])
    for l in range(len(weights) - 2, -1, -1):
        v = conv_adjoint(pool2_adjoint(v, shapes[l][1:]), weights[l])
    return v.reshape(e.shape[0], -1)


def conv_projection_torch(spec: ConvSpec, weights: list[torch.Tensor]) -> torch.Tensor:
    """F = A_L ... A_1: (d_L, d_0), row k being the adjoint chain of the k-th unit error."""
    eye = torch.eye(spec.n_classes, dtype=weights[-1].dtype, device=weights[-1].device)
    return adjoint_chain(spec, weights, eye)


def foton_conv_update_torch(spec: ConvSpec, weights, x, target, *, activation, error, config: FOTONConfig):
    """Per-layer FOTON updates (kernel-shaped for conv layers, (d_L, dense_in) for the dense one)."""
    y, inputs, outs = conv_forward_torch(spec, weights, x, activation, keep=True)
    e = output_error_torch(y, target, error, config.temperature)
    proj = config.projection
    proj = conv_projection_torch(spec, weights) if proj is None else torch.as_tensor(proj, dtype=x.dtype)
    h = (x - e @ proj).reshape((x.shape[0],) + spec.layer_shapes()[0])
    batch = x.shape[0]
    grads = []
    for l, kernel in enumerate(weights[:-1]):
        if l > 0:
            h = pool2(h)
        h = activate_torch(conv_circular(h, kernel), activation)
        pad = kernel.shape[-1] // 2
        grads.append(conv2d_weight(_pad_circular(inputs[l], pad), kernel.shape, outs[l] - h) / batch)
    grads.append(e.T @ inputs[-1].reshape(batch, -1) / batch)
    return grads


def bp_conv_update_torch(spec: ConvSpec, weights, x, target, *, activation, error, temperature: float = 1.0):
    """Autograd's gradients of the loss whose output error is e (CE with temperature T, or MSE)."""
    ws = [w.detach().requires_grad_(True) for w in weights]
    y = conv_forward_torch(spec, ws, x, activation)
    e = output_error_torch(y.detach(), target, error, temperature)
    return list(torch.autograd.grad(y, ws, grad_outputs=e / x.shape[0]))
