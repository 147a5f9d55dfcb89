"""Orthogonal conv nets on the Numba device path: the quantised weight store, the forward passes (inference,
clean and modulated, run in lockstep layer by layer) and FOTON's update correlations, bit-exact on integer
profiles.

What runs where. The device holds the kernels ``W_l: (C_out, C_in*k*k)`` and the dense W as integer mantissas
with a per-layer power-of-two exponent, or one per output channel on a per-channel profile (calibrated once,
as rules.numba_binding does), and runs every pass
and every correlation ``g = delta^T patches`` in its formats (kernels.conv). The BCOP parameters (H and the
Q's of models.conv) are the master copy: the host maps g to them by the chain rule through the kernel
construction alone (models.conv.param_grads), applies the step and Björck, and writes the new kernels back
into the device formats (counted as weight writes). F = A_L ... A_1 is recomputed the same way, from the
device's (dequantised) weights, and stored in the projection format; its MACs are charged to the
feedback_refresh phase as the d_L adjoint passes a device would run. Buffers here are simulator workspace:
conv nets are not yet accounted against the device's capacity (MLPs are, via accounting.memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..device.spec import DeviceProfile
from ..errors import ConfigError
from ..kernels import threads_ready
from ..kernels.conv import conv_forward_, pool2_
from ..kernels.counters import (COUNTERS, FORWARD, INFERENCE, MACS_DENSE, MODULATED, RECOMPUTE, REFRESH, SATURATION,
                                SRAM_WRITE, UPDATE, WEIGHT_WRITES)
from ..kernels.fixed import quantize_array
from ..kernels.linear import cached_layer_forward_, no_row_shift, no_weight_cache, project_
from ..kernels.update import outer_update_
from ..kernels.rng import new_state
from ..kernels.steps import Params, output_error_
from ..models.conv import ConvSpec
from .foton import FOTONConfig, foton_updates
from .foton_conv import conv_projection_torch
from .numba_binding import _calibrate, _proj_div, _row_exponents, _store_projection, quantize_input
from .passes import Pass

__all__ = ["ConvDeviceNet", "conv_to_device", "store_kernels", "dequantize", "ConvPasses", "ConvDevicePasses",
           "foton_conv_step",
           "refresh_conv_projection", "projection_buffer", "check_conv_exact",
           "conv_predict"]


@dataclass
class ConvDeviceNet:
    """w: flat mantissas (int64; float64 on float profiles); offs: (L+1,) layer offsets; w_frac / w_one: per
    layer exponents and scales; shapes: each layer's stored matrix shape (C_out, C_in*k*k) or (d_L, d);
    row_shift: per layer, (rows,) int64 exponent offsets of its output channels (per-channel scales: row i
    holds W_l[i] * 2**(w_frac_l + row_shift_l[i]); zeros for per-layer ones)."""

    spec: ConvSpec
    w: np.ndarray
    offs: np.ndarray
    w_frac: np.ndarray
    w_one: np.ndarray
    shapes: list
    quantized: bool
    row_shift: list
    #: per-channel exponents re-calibrated from the kernels at every store (``weight_scale = per-channel-dynamic``)
    dynamic: bool = False

    def __post_init__(self) -> None:
        threads_ready()  # before any (cached) kernel is loaded: fo_edge.kernels

    def real_scale(self, l: int) -> np.ndarray:
        """(rows, 1) float64 divisors of layer l's stored values."""
        return (float(self.w_one[l]) * 2.0 ** self.row_shift[l].astype(np.float64)).reshape(-1, 1)


def check_conv_exact(spec: ConvSpec, profile: DeviceProfile, batch: int) -> None:
    """Refuse formats whose integer sums could exceed 2**53 (kernels.linear.exact_matmul): the forward sums
    run over C_in*k*k patch terms (or the dense input), the update correlations over B*H*W pixels."""
    if profile.is_float:
        return
    a, e, w = profile.activation.bits, profile.error.bits, profile.weight.bits
    shapes = spec.layer_shapes()
    terms = max([s[0] * spec.kernel ** 2 for s in shapes[:-1]] + [spec.dense_in])
    pixels = max(batch * s[1] * s[2] for s in shapes)
    need = max(a + w - 2 + math.ceil(math.log2(max(terms, 2))), max(a, e) + a - 2 + math.ceil(math.log2(max(pixels, 2))))
    if need > 53:
        raise ConfigError(f"device {profile.id}: formats too wide for exact conv simulation (sums need {need} bits, "
                          "at most 53); use a smaller batch or narrower formats")


def conv_to_device(spec: ConvSpec, weights: list[np.ndarray], profile: DeviceProfile) -> ConvDeviceNet:
    """Calibrate per-layer exponents from the initial weights (kernels (C_out, C_in, k, k), dense W) and
    store them."""
    if profile.analog is not None:
        raise ConfigError(f"device {profile.id}: conv nets run on digital profiles only (no crossbar conv model)")
    mats = [np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1) for w in weights]
    offs = np.zeros(len(mats) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([m.size for m in mats])
    quantized = not profile.is_float
    fracs = np.array([_calibrate(m, profile.weight) if quantized else 0 for m in mats], dtype=np.int64)
    shifts = [np.zeros(m.shape[0], dtype=np.int64) for m in mats]
    if quantized and profile.weight_scale.per_channel:  # each output channel its own exponent
        rows = [_row_exponents(m, profile.weight) for m in mats]
        fracs = np.array([int(r.min()) for r in rows], dtype=np.int64)
        shifts = [r - f for r, f in zip(rows, fracs)]
    one = (2 ** fracs).astype(np.int64) if quantized else np.ones(len(mats))
    net = ConvDeviceNet(spec, np.zeros(int(offs[-1]), dtype=np.int64 if quantized else np.float64), offs, fracs,
                        one, [m.shape for m in mats], quantized, shifts,
                        quantized and profile.weight_scale.dynamic)
    store_kernels(net, weights, profile, np.zeros(len(COUNTERS), dtype=np.int64))
    return net


def store_kernels(net: ConvDeviceNet, weights: list, profile: DeviceProfile, counters: np.ndarray) -> None:
    """Write real-valued weights into the store with the calibrated exponents (nearest-even, saturating; a
    dynamic per-channel net re-calibrates each channel's exponent from the kernel first);
    counters: one row, charged with the weights that changed and their bytes."""
    rng = new_state(0)
    for l, w in enumerate(weights):
        chunk = net.w[net.offs[l]:net.offs[l + 1]]
        old = chunk.copy()
        mat = np.ascontiguousarray(np.asarray(w, dtype=np.float64)).reshape(net.shapes[l])
        flat = mat.ravel()
        if net.dynamic:  # each channel's exponent from the kernel being written (its own peak, as at init)
            rows = _row_exponents(mat, profile.weight)
            net.w_frac[l] = rows.min()
            net.w_one[l] = 2 ** net.w_frac[l]
            net.row_shift[l] = rows - rows.min()
        if net.quantized and not np.any(net.row_shift[l]):
            quantize_array(flat, float(net.w_one[l]), profile.weight.qmin, profile.weight.qmax, 0, rng, chunk,
                           counters, SATURATION)
        elif net.quantized:  # per-channel: each output channel at its own scale
            rows = chunk.reshape(net.shapes[l])
            for i, scale in enumerate(net.real_scale(l)[:, 0]):
                quantize_array(mat[i], float(scale), profile.weight.qmin, profile.weight.qmax, 0, rng, rows[i],
                               counters, SATURATION)
        else:
            chunk[:] = flat
        changed = int(np.count_nonzero(chunk != old))
        counters[WEIGHT_WRITES] += changed
        counters[SRAM_WRITE] += changed * profile.weight.bytes_per_value


def dequantize(net: ConvDeviceNet) -> list[np.ndarray]:
    """Real-valued weights: kernels (C_out, C_in, k, k) and the dense W, float64."""
    spec, out = net.spec, []
    shapes = spec.layer_shapes()
    for l in range(len(net.shapes)):
        mat = net.w[net.offs[l]:net.offs[l + 1]].astype(np.float64).reshape(net.shapes[l]) / net.real_scale(l)
        if l < len(spec.channels):
            out.append(mat.reshape(spec.channels[l], shapes[l][0], spec.kernel, spec.kernel))
        else:
            out.append(mat.reshape(net.shapes[l]))
    return out


class ConvPasses:
    """Workspace for one batch size and the forward passes over it (clean ``c`` and modulated ``m``)."""

    def __init__(self, net: ConvDeviceNet, batch: int):
        spec = net.spec
        dtype = net.w.dtype
        self.net, self.batch = net, batch
        self.shapes = spec.layer_shapes()
        self.bufs = {}
        for tag in ("c", "m"):
            for l, c_out in enumerate(spec.channels):
                c_in, h, w = self.shapes[l]
                k2 = spec.kernel ** 2
                self.bufs[tag, "in", l] = np.zeros((batch, c_in * h * w), dtype=dtype)  # pooled input
                self.bufs[tag, "cols", l] = np.zeros((batch * h * w, c_in * k2), dtype=dtype)
                self.bufs[tag, "pre", l] = np.zeros((batch * h * w, c_out), dtype=dtype)
                self.bufs[tag, "rows", l] = np.zeros((batch * h * w, c_out), dtype=dtype)
                self.bufs[tag, "out", l] = np.zeros((batch, c_out * h * w), dtype=dtype)
            self.bufs[tag, "in", len(spec.channels)] = np.zeros((batch, spec.dense_in), dtype=dtype)
        self.pre_y = np.zeros((batch, spec.n_classes), dtype=dtype)
        self.y = np.zeros((batch, spec.n_classes), dtype=dtype)
        self.x = np.zeros((batch, int(np.prod(self.shapes[0]))), dtype=dtype)
        self.xm = np.zeros_like(self.x)
        self.e = np.zeros((batch, spec.n_classes), dtype=dtype)
        self.delta = [np.zeros((batch * s[1] * s[2], c), dtype=dtype)
                      for s, c in zip(self.shapes, spec.channels)]

    def layer(self, tag: str, l: int, src: np.ndarray, P: Params, C_row, rng) -> np.ndarray:
        """Run layer l of pass ``tag`` on src (B, ...) (its pooling first, for l > 0); returns its output."""
        net, spec, n = self.net, self.net.spec, src.shape[0]
        b = lambda kind: self.bufs[tag, kind, l][:n * (self.bufs[tag, kind, l].shape[0] // self.batch)]  # noqa: E731
        if l > 0:
            c_prev, h_prev, w_prev = spec.channels[l - 1], *self.shapes[l - 1][1:]
            pooled = self.bufs[tag, "in", l][:n]
            pool2_(src, c_prev, h_prev, w_prev, P, pooled, C_row, rng)
            src = pooled
        if l == len(spec.channels):
            y = self.y[:n]
            cached_layer_forward_(src, net.w, net.offs[l], spec.n_classes, spec.dense_in, net.w_one[l],
                                  net.row_shift[l], True, P, self.pre_y[:n], y, C_row, rng, *no_weight_cache())
            return y
        c_in, h, w = self.shapes[l]
        out = self.bufs[tag, "out", l][:n]
        conv_forward_(src, c_in, h, w, spec.kernel, net.w, net.offs[l], spec.channels[l], net.w_one[l],
                      net.row_shift[l], P,
                      b("cols"), b("pre"), b("rows"), out, C_row, rng)
        return out

    def forward(self, tag: str, x_dev: np.ndarray, P: Params, C, phase: int, rng) -> np.ndarray:
        """The whole net on x_dev (n, d_0) in the activation format; returns y (n, d_L); counts C[phase, l]."""
        h = x_dev
        for l in range(self.net.spec.n_layers):
            h = self.layer(tag, l, h, P, C[phase, l], rng)
        return h


def refresh_conv_projection(net: ConvDeviceNet, proj: np.ndarray, profile: DeviceProfile, counters) -> None:
    """F = A_L ... A_1 from the device's weights, stored in the projection format; MACs charged to
    feedback_refresh as d_L adjoint passes (the forward MACs of one sample, per output)."""
    weights = [torch.as_tensor(w) for w in dequantize(net)]
    _store_projection(proj, conv_projection_torch(net.spec, weights).numpy(), profile)
    spec, shapes = net.spec, net.spec.layer_shapes()
    macs = sum(s[1] * s[2] * s[0] * c * spec.kernel ** 2 for s, c in zip(shapes, spec.channels)) + \
        spec.dense_in * spec.n_classes
    counters[REFRESH, spec.n_layers, MACS_DENSE] += spec.n_classes * macs


def foton_conv_step(passes: ConvPasses, profile: DeviceProfile, P: Params, x_dev: np.ndarray, t: np.ndarray,
                    proj: np.ndarray, counters, rng, a_frac_shift: tuple[int, int]) -> list[np.ndarray]:
    """One FOTON step's update correlations on the device (P.collect must be True): returns the real,
    batch-averaged g_l (kernel-shaped for conv layers, (d_L, d) for the dense one); nothing is updated. FOTON's
    one definition (rules.foton.foton_updates) over :class:`ConvDevicePasses`.

    x_dev: (n, d_0) activation mantissas; t: (n, d_L) float one-hot; proj: F (d_L, d_0) in the projection
    format; a_frac_shift: (activation frac, error frac) bits (0, 0 on float profiles).
    """
    device = ConvDevicePasses(passes, profile, P, counters, rng, a_frac_shift)
    foton_updates(device, x_dev, t, FOTONConfig(), proj)
    return _unflatten(passes.net, device.g_out)


class ConvDevicePasses:
    """rules.passes.Passes of a BCOP conv net on the device, streaming: the clean pass (its output error in the
    error format), the modulated input x - e F formed by the projection kernel (kernels.orth.project_), and then,
    layer by layer inside delta(l), the clean layer recomputed beside the modulated one (RECOMPUTE and MODULATED
    counters), delta_l = rows_c - rows_m saturated to the activation format; correlate(l) collects
    delta_l^T cols_l / B into ``g_out`` (outer_update_ with P.collect: the weights are the host's to step), the
    dense layer's from the pooled clean input. The order of every kernel call, and so of every random draw, is
    the step's as the device runs it."""

    def __init__(self, passes: ConvPasses, profile: DeviceProfile, P: Params, counters, rng,
                 a_frac_shift: tuple[int, int]):
        self.passes, self.profile, self.P, self.counters, self.rng = passes, profile, P, counters, rng
        self.net, self.spec = passes.net, passes.net.spec
        self.n_layers = self.spec.n_layers
        self.a_frac, self.e_frac = a_frac_shift
        self.g_out = np.zeros(self.net.w.size)
        self.one = np.zeros(1, dtype=self.net.w.dtype)  # mul / div placeholders: P.collect skips the weight step
        self.n, self.hc, self.hm = 0, None, None

    def clean(self, x_dev: np.ndarray) -> Pass:
        passes, n = self.passes, x_dev.shape[0]
        self.n, self.hc = n, x_dev
        y = passes.forward("c", x_dev, self.P, self.counters, FORWARD, self.rng)
        cols = [passes.bufs["c", "cols", l][:n * (passes.bufs["c", "cols", l].shape[0] // passes.batch)]
                for l in range(self.n_layers - 1)]
        return Pass(y, cols + [passes.bufs["c", "in", self.n_layers - 1][:n]])  # filled by the recompute

    def error(self, clean: Pass, t: np.ndarray) -> np.ndarray:
        e = self.passes.e[:self.n]
        output_error_(clean.y, np.ascontiguousarray(t, dtype=np.float64), self.P, e,
                      self.counters[FORWARD, self.n_layers])
        return e

    def charge_projection(self, v, m) -> None:
        raise ConfigError("conv nets train forward-only with FOTON; FTP's target pass is not defined on them")

    def from_input(self, x_dev: np.ndarray, e: np.ndarray, proj: np.ndarray, sign: float) -> Pass:
        xm = self.passes.xm[:self.n]
        project_(x_dev, e, proj, int(sign), _proj_div(self.profile), self.P, xm, self.counters[MODULATED, 0],
                 self.rng)
        self.hm = xm
        return Pass(None, [])

    def from_first(self, clean: Pass, signal, pre: bool) -> Pass:
        raise ConfigError("conv nets train forward-only with FOTON; FTP's target pass is not defined on them")

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> np.ndarray:
        passes, P, counters, rng = self.passes, self.P, self.counters, self.rng
        self.hc = passes.layer("c", l, self.hc, P, counters[RECOMPUTE, l], rng)
        self.hm = passes.layer("m", l, self.hm, P, counters[MODULATED, l], rng)
        delta = passes.delta[l][:self.n * (passes.delta[l].shape[0] // passes.batch)]
        np.subtract(passes.bufs["c", "rows", l][:delta.shape[0]], passes.bufs["m", "rows", l][:delta.shape[0]],
                    out=delta)
        if self.net.quantized:
            _saturate_all(delta, P, counters[UPDATE, l])
        return delta

    def output_error(self, second: Pass, t) -> np.ndarray:
        raise ConfigError("conv nets train forward-only with FOTON; PEPITA's modulated output error is not "
                          "defined on them")

    def local_output_error(self, clean: Pass, second: Pass) -> np.ndarray:
        raise ConfigError("conv nets train forward-only with FOTON; FTP's local output loss is not defined on them")

    def correlate(self, l: int, delta: np.ndarray, h_in: np.ndarray) -> None:
        net, spec, P, n, one = self.net, self.spec, self.P, self.n, self.one
        if l < self.n_layers - 1:
            outer_update_(net.w, net.offs[l], spec.channels[l], h_in.shape[1], delta, h_in, one[0], one[0],
                          2.0 ** -(2 * self.a_frac) / n, no_row_shift(spec.channels[l]), P,
                          self.counters[UPDATE, l], self.rng, self.g_out)
            return None
        c_last, h_last, w_last = spec.channels[l - 1], *self.passes.shapes[l - 1][1:]
        pool2_(self.hc, c_last, h_last, w_last, P, h_in, self.counters[RECOMPUTE, l], self.rng)  # the dense input
        outer_update_(net.w, net.offs[l], spec.n_classes, spec.dense_in, delta, h_in, one[0], one[0],
                      2.0 ** -(self.a_frac + self.e_frac) / n, no_row_shift(spec.n_classes), P,
                      self.counters[UPDATE, l], self.rng, self.g_out)
        return None


def _saturate_all(delta: np.ndarray, P: Params, row) -> None:
    """kernels.fixed.saturate over a whole array: clip to the activation range, counting clipped values."""
    flat = delta.reshape(-1)
    clipped = int(np.count_nonzero((flat > P.a_hi) | (flat < P.a_lo)))
    np.clip(flat, P.a_lo, P.a_hi, out=flat)
    row[SATURATION] += clipped


def _unflatten(net: ConvDeviceNet, flat: np.ndarray) -> list[np.ndarray]:
    spec, shapes = net.spec, net.spec.layer_shapes()
    out = []
    for l in range(spec.n_layers):
        chunk = flat[net.offs[l]:net.offs[l + 1]]
        if l < len(spec.channels):
            out.append(chunk.reshape(spec.channels[l], shapes[l][0], spec.kernel, spec.kernel))
        else:
            out.append(chunk.reshape(net.shapes[l]))
    return out


def conv_predict(passes: ConvPasses, profile: DeviceProfile, P: Params, x: np.ndarray, counters, rng,
                 logits: np.ndarray | None = None) -> np.ndarray:
    """Labels (N,) of float inputs x (N, d_0), in chunks of the passes' batch; optional real logits (N, d_L)."""
    labels = np.zeros(len(x), dtype=np.int64)
    L = passes.net.spec.n_layers
    for start in range(0, len(x), passes.batch):
        x_dev = quantize_input(x[start:start + passes.batch], profile, passes.x, counters[INFERENCE, L], rng)
        y = passes.forward("c", x_dev, P, counters, INFERENCE, rng)
        labels[start:start + len(y)] = np.argmax(y, axis=1)
        if logits is not None:
            logits[start:start + len(y)] = y / float(P.a_one)
    return labels


def projection_buffer(net: ConvDeviceNet, profile: DeviceProfile) -> np.ndarray:
    """An (d_L, d_0) array for F in the store's dtype."""
    spec = net.spec
    return np.zeros((spec.n_classes, int(np.prod(spec.in_shape))), dtype=net.w.dtype)
