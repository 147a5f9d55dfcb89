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
from ..kernels.counters import FORWARD, MODULATED, RECOMPUTE
from ..errors import ConfigError
from .base import output_error_torch
from .foton import FOTONConfig, foton_updates
from .passes import Pass

__all__ = ["ConvTorchPasses", "conv_projection_torch", "foton_conv_update_torch", "bp_conv_update_torch",
           "adjoint_chain"]


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


def count_conv_pass(meter, phase: int, spec: ConvSpec, weights, inputs, outs) -> None:
    """A whole clean pass (``conv_forward_torch(keep=True)``'s inputs and outputs) counted into ``phase``."""
    last = len(weights) - 1
    for l in range(last):
        if l > 0:
            meter.pool(phase, l, inputs[l])
        meter.conv(phase, l, inputs[l], weights[l], outs[l])
    meter.pool(phase, last, inputs[last])
    meter.forward(phase, last, inputs[last].reshape(inputs[last].shape[0], -1), weights[last], outs[last])


class ConvTorchPasses:
    """rules.passes.Passes for a BCOP conv net (``spec``, its kernels and dense W as ``weights``) on the torch
    backend: the clean pass's presynaptic activities are the layers' pooled inputs u_0 .. u_{L-1}; a second pass
    from x + sign e F runs each conv layer (pool, circular conv, activation) beside the clean one in lockstep, as the
    device does; delta_l = h_l - h'_l (feature maps); a conv layer's g_K = adjoint-conv(u_{l-1}, delta_l) / B
    (torch.nn.grad.conv2d_weight on the circularly padded input), the dense layer's g_L = e^T u_{L-1} / B.
    ``meter`` (accounting.conv_float_counts.ConvFloatMeter, or None) counts the step as the device runs it. FOTON
    is the rule these nets run forward-only (the module docstring); FTP's target pass and PEPITA's modulated
    output error are not defined on them."""

    def __init__(self, spec: ConvSpec, weights: list[torch.Tensor], activation: str, error: str,
                 temperature: float, meter=None):
        self.spec, self.weights, self.activation, self.error_kind = spec, weights, activation, error
        self.temperature, self.meter = temperature, meter
        self.n_layers, self.batch, self._clean = len(weights), 0, ([], [])

    def clean(self, x: torch.Tensor) -> Pass:
        y, inputs, outs = conv_forward_torch(self.spec, self.weights, x, self.activation, keep=True)
        self.batch, self._clean = x.shape[0], (inputs, outs)
        if self.meter is not None:
            count_conv_pass(self.meter, FORWARD, self.spec, self.weights, inputs, outs)
        return Pass(y, inputs, {"outs": outs})

    def error(self, clean: Pass, t: torch.Tensor) -> torch.Tensor:
        e = output_error_torch(clean.y, t, self.error_kind, self.temperature)
        if self.meter is not None:
            self.meter.error(FORWARD, self.batch)
        return e

    def charge_projection(self, v: torch.Tensor, m: torch.Tensor) -> None:
        if self.meter is not None:
            self.meter.project(MODULATED, v, m)

    def from_input(self, x: torch.Tensor, e: torch.Tensor, f: torch.Tensor, sign: float) -> Pass:
        h = (x + sign * (e @ f)).reshape((x.shape[0],) + self.spec.layer_shapes()[0])
        if self.meter is not None:
            self.meter.project(MODULATED, e, f)
        clean_in, clean_out = self._clean
        hs, outs = [], []
        for l, kernel in enumerate(self.weights[:-1]):
            if l > 0:
                h = pool2(h)
            h_in = h
            h = activate_torch(conv_circular(h_in, kernel), self.activation)
            if self.meter is not None:  # the device recomputes the clean layer beside the modulated one
                for phase, u, out in ((RECOMPUTE, clean_in[l], clean_out[l]), (MODULATED, h_in, h)):
                    if l > 0:
                        self.meter.pool(phase, l, u)
                    self.meter.conv(phase, l, u, kernel, out)
            hs.append(h_in)
            outs.append(h)
        return Pass(None, hs, {"outs": outs})

    def from_first(self, clean: Pass, signal, pre: bool) -> Pass:
        raise ConfigError("conv nets train forward-only with FOTON; FTP's target pass is not defined on them")

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> torch.Tensor:
        return clean.state["outs"][l] - second.state["outs"][l]

    def output_error(self, second: Pass, t) -> torch.Tensor:
        raise ConfigError("conv nets train forward-only with FOTON; PEPITA's modulated output error is not "
                          "defined on them")

    def local_output_error(self, clean: Pass, second: Pass) -> torch.Tensor:
        raise ConfigError("conv nets train forward-only with FOTON; FTP's local output loss is not defined on them")

    def correlate(self, l: int, delta: torch.Tensor, h_in: torch.Tensor) -> torch.Tensor:
        meter, batch = self.meter, self.batch
        if l == self.n_layers - 1:
            if meter is not None:
                meter.pool(RECOMPUTE, l, h_in)
                meter.correlation(l, batch, self.spec.n_classes, self.spec.dense_in)
            return delta.T @ h_in.reshape(batch, -1) / batch
        kernel = self.weights[l]
        if meter is not None:
            meter.correlation(l, batch * delta.shape[2] * delta.shape[3], kernel.shape[0], kernel[0].numel())
        pad = kernel.shape[-1] // 2
        return conv2d_weight(_pad_circular(h_in, pad), kernel.shape, delta) / batch


def foton_conv_update_torch(spec: ConvSpec, weights, x, target, *, activation, error, config: FOTONConfig,
                            meter=None):
    """Per-layer FOTON updates (kernel-shaped for conv layers, (d_L, dense_in) for the dense one): FOTON's one
    torch definition (rules.foton.foton_updates) over :class:`ConvTorchPasses`. ``meter``
    (accounting.conv_float_counts.ConvFloatMeter) counts the step as the device runs it."""
    proj = config.projection
    proj = conv_projection_torch(spec, weights) if proj is None else torch.as_tensor(proj, dtype=x.dtype)
    passes = ConvTorchPasses(spec, weights, activation, error, config.temperature, meter)
    return foton_updates(passes, x, target, config, proj)[0]


def bp_conv_update_torch(spec: ConvSpec, weights, x, target, *, activation, error, temperature: float = 1.0,
                         meter=None):
    """Autograd's gradients of the loss whose output error is e (CE with temperature T, or MSE). ``meter``
    counts the forward pass, each delta's propagation back through layers L..2 (read from autograd's gradient
    with respect to each conv layer's output) and the correlations."""
    ws = [w.detach().requires_grad_(True) for w in weights]
    y, inputs, outs = conv_forward_torch(spec, ws, x, activation, keep=True)
    e = output_error_torch(y.detach(), target, error, temperature)
    if meter is None:
        return list(torch.autograd.grad(y, ws, grad_outputs=e / x.shape[0]))
    batch, last = x.shape[0], len(ws) - 1
    count_conv_pass(meter, FORWARD, spec, ws, inputs, outs)
    meter.error(FORWARD, batch)
    grads = torch.autograd.grad(y, ws + outs[:-1], grad_outputs=e / batch)
    meter.backward(last, e, weights[last])  # e through the dense W^T
    for l in range(last - 1, 0, -1):  # delta_l = dL/dh_l * sigma'(a_l) through conv layer l's adjoint
        h = outs[l].detach()
        slope = (h > 0).to(h.dtype) if activation == "relu" else 1.0 - h * h if activation == "tanh" else 1.0
        meter.conv_backward(l, grads[len(ws) + l] * slope, weights[l])
    for l, kernel in enumerate(weights[:-1]):
        meter.correlation(l, batch * outs[l].shape[2] * outs[l].shape[3], kernel.shape[0], kernel[0].numel())
    meter.correlation(last, batch, spec.n_classes, spec.dense_in)
    return list(grads[:len(ws)])
