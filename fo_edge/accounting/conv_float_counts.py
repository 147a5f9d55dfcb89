"""Counters for conv nets on the float PyTorch path, in the device kernels' schema (rules.conv_binding, kernels.conv).

A conv layer is counted as the Numba path runs it, a matrix product on unfolded patches: with the layer's pooled
input u (B, C_in, H, W), kernel K (C_out, C_in, k, k) and output h (B, C_out, H, W), R = B H W patch rows of
C_in k k values each:
  macs_dense R C_out C_in k k; macs_effective = synaptic_events = sum_ci nnz(u[:, ci]) nnz(K[:, ci])
      (circular padding puts every input pixel into exactly k k patch positions, one per tap);
  neuron_updates_active / _inactive the nonzero / zero outputs; sram_read R (C_out C_in k k w + C_in k k a);
  sram_write R C_out a.
Pooling (every layer after the first, and the dense layer's input): per pooled value one neuron update (active
when nonzero), sram_read 4 a and sram_write a. The dense layer, the output error and F's projection are counted as
on MLPs (accounting.float_counts). A FOTON step runs the clean pass (forward), the error and x_err = x - e F
(modulated), then per conv layer the clean layer again (recompute: the device keeps no maps) and the modulated one
(modulated), each layer's correlation update (R rows; the dense layer's: B rows, after the recompute of its pooled
input), and the kernels written back into the device (weight writes and their bytes, network column). BP
propagates the error back through each layer l > 1 (backward: the adjoint convolution's R C_out C_in k k MACs, as
MLPs' W^T, with the pooling's adjoint charged as its forward), then updates as FOTON does. F's refresh costs
d_L adjoint passes of one sample's forward MACs. Evaluation counts every layer into the inference phase.
"""
from __future__ import annotations

import torch

from ..kernels.counters import (BACKWARD, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, REFRESH, SRAM_READ,
                                SRAM_WRITE, SYN_UPDATES, UPDATE, WEIGHT_WRITES)
from .float_counts import FloatMeter

__all__ = ["ConvFloatMeter"]


class ConvFloatMeter(FloatMeter):
    """Counts one float conv run: ``spec`` a models.conv.ConvSpec, ``profile`` the device; ``dims`` are the
    activity sizes (input, each conv layer's output map, classes)."""

    def __init__(self, spec, profile, rule: str):
        shapes = spec.layer_shapes()
        dims = [shapes[0][0] * shapes[0][1] * shapes[0][2]] + \
            [c * s[1] * s[2] for c, s in zip(spec.channels, shapes)] + [spec.n_classes]
        super().__init__(dims, profile, rule, "store")
        self.recomputed = frozenset()  # a conv step recomputes explicitly (module docstring)
        self.spec = spec

    def pool(self, phase: int, l: int, pooled: torch.Tensor) -> None:
        """The 2 x 2 pooling into layer l's input ``pooled`` (B, C, H, W)."""
        count = pooled.numel()
        self._add(phase, l, NEURON_ACTIVE, torch.count_nonzero(pooled.detach()))
        row = self.shape[phase, l]
        row[NEURON_INACTIVE] += count
        row[SRAM_READ] += count * 4 * self.a_bytes
        row[SRAM_WRITE] += count * self.a_bytes

    def conv(self, phase: int, l: int, u: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor) -> None:
        """Conv layer l: pooled input u (B, C_in, H, W), kernel (C_out, C_in, k, k), output (B, C_out, H, W)."""
        batch, c_in, hgt, wid = u.shape
        c_out, k2 = kernel.shape[0], kernel.shape[2] * kernel.shape[3]
        per_channel = torch.count_nonzero(u.detach(), dim=(0, 2, 3))  # (C_in,)
        taps = torch.count_nonzero(kernel.detach(), dim=(0, 2, 3))  # nonzero weights reading each input channel
        self._add(phase, l, MACS_EFF, (per_channel * taps).sum())
        self._add(phase, l, NEURON_ACTIVE, torch.count_nonzero(out.detach()))
        rows, patch = batch * hgt * wid, c_in * k2
        row = self.shape[phase, l]
        row[NEURON_INACTIVE] += rows * c_out
        row[MACS_DENSE] += rows * c_out * patch
        row[SRAM_READ] += rows * (c_out * patch * self.w_bytes + patch * self.a_bytes)
        row[SRAM_WRITE] += rows * c_out * self.a_bytes

    def correlation(self, l: int, rows: int, d_out: int, d_in: int) -> None:
        """Layer l's update correlation over ``rows`` rows (R patches, or the batch for the dense layer) of a
        (d_out, d_in) weight matrix, formed for the host (nothing is written to the device here)."""
        row = self.shape[UPDATE, l]
        row[MACS_DENSE] += rows * d_out * d_in
        row[SYN_UPDATES] += d_out * d_in
        row[SRAM_READ] += d_out * d_in * self.w_bytes + rows * (d_out + d_in) * self.a_bytes
        row[SRAM_WRITE] += d_out * d_in * self.w_bytes

    def written(self, before: list[torch.Tensor], after: list[torch.Tensor]) -> None:
        """The kernels and dense W written back into the device after a step: the values that changed, and their
        bytes (network column)."""
        for b, a in zip(before, after):
            changed = torch.count_nonzero(b.detach() != a.detach())
            self._add(UPDATE, self.n_layers, WEIGHT_WRITES, changed)
            self._add(UPDATE, self.n_layers, SRAM_WRITE, changed * self.w_bytes)

    def conv_backward(self, l: int, delta: torch.Tensor, kernel: torch.Tensor) -> None:
        """BP's error (B, C_out, H, W) at conv layer l pushed back through its adjoint convolution."""
        batch, c_out, hgt, wid = delta.shape
        c_in, k2 = kernel.shape[1], kernel.shape[2] * kernel.shape[3]
        per_channel = torch.count_nonzero(delta.detach(), dim=(0, 2, 3))  # (C_out,)
        taps = torch.count_nonzero(kernel.detach(), dim=(1, 2, 3))
        self._add(BACKWARD, l, MACS_EFF, (per_channel * taps).sum())
        rows, patch = batch * hgt * wid, c_in * k2
        row = self.shape[BACKWARD, l]
        row[MACS_DENSE] += rows * c_out * patch
        row[SRAM_READ] += rows * (c_out * patch * self.w_bytes + c_out * self.e_bytes + patch * self.a_bytes)
        row[SRAM_WRITE] += rows * patch * self.e_bytes

    def conv_refresh(self) -> None:
        """F = A_L ... A_1 recomputed: d_L adjoint passes of one sample's forward MACs (network column)."""
        spec, shapes = self.spec, self.spec.layer_shapes()
        macs = sum(s[1] * s[2] * s[0] * c * spec.kernel ** 2 for s, c in zip(shapes, spec.channels)) + \
            spec.dense_in * spec.n_classes
        self.shape[REFRESH, self.n_layers, MACS_DENSE] += spec.n_classes * macs
