"""Device memory of a conv-net run: what the device holds to train an orthogonal BCOP conv net, in its formats.

A conv net's activity sizes are d_l = C_l H_l W_l per layer (run.json's ``dims``: the input, each conv layer's
output map at its resolution, the classes). The device holds, as the MLP stream schedule does
(rules.numba_binding.allocate_buffers), only the layer at hand:

  weights          every kernel (C_out C_in k k) and the dense W (d_L x dense_in), weight format
  input            x (B, d_0); FOTON also x_err (B, d_0)                              activation format
  activations      FOTON: clean and modulated maps of the layer at hand, in and out, its pre-activation and the
                   difference h - h_err: 6 x (B, max_l d_l) (the 2 x 2 pooling is applied as a map is read);
                   BP: every conv layer's output kept for the backward pass, B x sum_{0<l<L} d_l, plus the
                   pre-activation, a scratch map and two error maps of (B, max d_l)
  output_error     e (B, d_L)                                                             error format
  projection_F     FOTON's F (d_L, d_0) (projection format), refreshed in SRAM, and one adjoint-chain row
                   (2 x max_l d_l) to recompute it
  update_row       one row of a layer's correlation (C_in k k, or the dense width), accumulator width
  orthogonalize    the Björck Gram of the largest BCOP factor or the dense W (min side squared), 4 bytes each

The Numba path's unfolded patches (B H W x C_in k k) and its pooled copies are simulator workspace, not device
memory (kernels.conv: the device convolves in place).
"""
from __future__ import annotations

import numpy as np

from ..accounting.memory import MemoryArena
from ..device.spec import DeviceProfile
from ..models.conv import ConvSpec
from .numba_binding import projection_format

__all__ = ["plan_conv_memory"]


def plan_conv_memory(spec: ConvSpec, profile: DeviceProfile, rule: str, batch: int, ortho: bool = True) -> MemoryArena:
    """Allocate what a conv run of ``rule`` (foton or bp) with batches of ``batch`` holds on ``profile``
    (module docstring); returns the arena, or raises DeviceMemoryError naming what did not fit."""
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    shapes = spec.layer_shapes()
    dims = [int(np.prod(shapes[0]))] + [c * s[1] * s[2] for c, s in zip(spec.channels, shapes)] + [spec.n_classes]
    width = max(dims[1:])
    a_b, e_b = profile.activation.bytes_per_value, profile.error.bytes_per_value
    w_b = profile.weight.bytes_per_value
    kernels = sum(c_out * s[0] * spec.kernel ** 2 for c_out, s in zip(spec.channels, shapes))
    arena.alloc("weights", (kernels + spec.n_classes * spec.dense_in,), np.int8, "weights", w_b)
    arena.alloc("input", (batch * dims[0],), np.int8, "input", a_b)
    patch = max([s[0] * spec.kernel ** 2 for s in shapes[:-1]] + [spec.dense_in])
    arena.alloc("update_row", (patch,), np.int8, "workspace", max(4, (profile.accumulator_bits + 7) // 8))
    arena.alloc("pre_activation", (batch * width,), np.int8, "activations", a_b)
    arena.alloc("scratch", (batch * width,), np.int8, "activations", a_b)
    if rule == "bp":
        arena.alloc("stored_activations", (batch * sum(dims[1:-1]),), np.int8, "stored_activations", a_b)
        arena.alloc("delta_a", (batch * width,), np.int8, "errors", e_b)
        arena.alloc("delta_b", (batch * width,), np.int8, "errors", e_b)
    else:
        for name in ("clean_a", "clean_b", "modulated_a", "modulated_b"):
            arena.alloc(name, (batch * width,), np.int8, "activations", a_b)
        arena.alloc("modulated_input", (batch * dims[0],), np.int8, "activations", a_b)
    arena.alloc("output_error", (batch * spec.n_classes,), np.int8, "errors", e_b)
    if rule == "foton":
        p_b = projection_format(profile).bytes_per_value
        arena.alloc("projection_F", (spec.n_classes * dims[0],), np.int8, "projection", p_b)
        arena.alloc("projection_workspace", (2 * max(dims),), np.int8, "workspace", p_b)
    if ortho:
        factors = [max(s[0], c) for s, c in zip(shapes, spec.channels)]  # BCOP works on c = max(C_in, C_out)
        gram = max([c * c for c in factors] + [min(spec.n_classes, spec.dense_in) ** 2])
        arena.alloc("orthogonalize_workspace", (gram,), np.int8, "workspace", 4)
    return arena
