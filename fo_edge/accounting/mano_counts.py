"""Counters of a MANO run on the float torch path, in the kernels' schema (kernels.counters).

Columns are a MANO model's stages: 0 the stem (patch embedding or lift), 1..L the blocks, L+1 the head; the
extra column L+2 holds work of no stage (FTP's projection of the output error). Forward hooks on every
``nn.Linear`` and every multipole attention module charge the phase the training loop names (:meth:`phase`):

  linear map x (rows, d_in) -> (rows, d_out), in a batch of B samples:
      macs_dense += rows d_in d_out; macs_effective += sum_j nnz(x[:, j]) nnz(W[:, j]);
      sram_read_bytes += 4 (B d_in d_out + rows d_in)   (W once per sample, as the MLP kernels; x once);
      sram_write_bytes += 4 rows d_out; neuron_updates_active / _inactive: nonzero / zero outputs
  multipole attention on x (B, H, W, C) with window w, level grids (r_l, c_l) padded to n_l windows:
      macs_dense += sum_l 2 B C n_l w^4   (q k^T and attention x v, every head; padding is computed too)
      sram_read_bytes += 4 B sum_l 3 (n_l w^2) C, sram_write_bytes += 4 B sum_l (n_l w^2) C
      (the vcycle variant's window attention is hooked once per level, the same sums for its own tiling)

A forward that builds a graph (``with_graph``) is charged its backward pass too: each linear map's dx product
(``backward``, the same MACs; none where x needs no gradient, as autograd skips it) and dW product (``update``, the same MACs, reading x and dy), the attention's two
gradient products per product (``backward``, twice its MACs). An optimiser step (:meth:`stepped`) charges every
parameter of a stage as a synaptic update (Adam reads parameter, gradient and two moments and writes three:
28 bytes per parameter) and counts the parameters whose value changed as weight writes. LayerNorm, GELU,
softmax, pooling and the residual sums are elementwise and are not charged (as the MLP path charges no
activation function).

``device_maps``: the linear maps run on a device's kernels (rules.mano_device_training), which count them into
the same array (their columns: :meth:`map_columns`); the meter then counts the host's work alone: the attention
products, and the host parameters' SGD step.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ..kernels.counters import (BACKWARD, INFERENCE, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE, SRAM_READ,
                                SRAM_WRITE, SYN_UPDATES, UPDATE, WEIGHT_WRITES, new_counters)

__all__ = ["MANOMeter", "stage_of"]


def stage_of(name: str, depth: int) -> int:
    """The stage column of a parameter or module named ``name`` in a MANO model: ``blocks.{i}.`` and block i's
    own readout ``readouts.{i}.`` -> i + 1, the embedding/lift and position table -> 0, everything else (norm,
    readout, projection) -> depth + 1."""
    if name.startswith("blocks.") or name.startswith("readouts."):
        return int(name.split(".")[1]) + 1
    if name.split(".")[0] in ("embed", "lift", "pos"):
        return 0
    return depth + 1


def _attention_windows(rows: int, cols: int, window: int, levels: int) -> list[int]:
    """Windows per level of the tiling models.mano.window_attention uses (ceil-mode pooling, padded edges)."""
    counts = []
    for level in range(levels):
        if level > 0:
            rows, cols = -(-rows // 2), -(-cols // 2)
        counts.append(math.ceil(rows / window) * math.ceil(cols / window))
    return counts


class MANOMeter:
    """Counts a MANO model's work into ``counters`` (phases, depth + 3, names); see the module docstring."""

    def __init__(self, model: torch.nn.Module, device_maps: bool = False):
        self.depth = len(model.blocks)
        self.counters = new_counters(self.depth + 2)
        self._phase, self._graph, self._batch = INFERENCE, False, 1
        self.trained = self.inferred = 0
        self._hooks = []
        self.device_maps = device_maps
        for name, module in model.named_modules():
            stage = stage_of(name, self.depth)
            if isinstance(module, torch.nn.Linear):
                if device_maps:
                    continue
                self._hooks.append(module.register_forward_hook(
                    lambda mod, args, out, s=stage: self._linear(s, mod, args[0], out)))
            elif hasattr(module, "levels") and hasattr(module, "window") and hasattr(module, "qkv"):
                self._hooks.append(module.register_forward_hook(
                    lambda mod, args, out, s=stage: self._attention(s, mod, args[0])))
            elif hasattr(module, "tiling") and hasattr(module, "qkv"):  # one level's window attention (vcycle)
                self._hooks.append(module.register_forward_hook(
                    lambda mod, args, out, s=stage: self._windows(s, mod, args[0])))
        mapped = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)} if device_maps else set()
        self._params = [(stage_of(n, self.depth), p) for n, p in model.named_parameters() if id(p) not in mapped]

    def map_columns(self, model: torch.nn.Module) -> list[int]:
        """The stage column of each of ``model``'s ``nn.Linear`` maps, in module order (where a device counts
        them: rules.mano_binding.DeviceLinears)."""
        return [stage_of(n, self.depth) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    @contextlib.contextmanager
    def phase(self, phase: int, batch: int, with_graph: bool = False):
        """Charge the forwards inside the block to ``phase`` for a batch of ``batch`` samples; ``with_graph``:
        their backward pass will run, charge it too."""
        saved = self._phase, self._graph, self._batch
        self._phase, self._graph, self._batch = phase, with_graph, batch
        try:
            yield
        finally:
            self._phase, self._graph, self._batch = saved

    def _linear(self, stage: int, module: torch.nn.Linear, x: torch.Tensor, out: torch.Tensor) -> None:
        d_out, d_in = module.weight.shape
        rows = x.numel() // d_in
        macs = rows * d_in * d_out
        with torch.no_grad():
            nz_in = (x.reshape(-1, d_in) != 0).sum(dim=0).to(torch.float64)
            nz_w = (module.weight != 0).sum(dim=0).to(torch.float64)
            effective = int(round(float(nz_in @ nz_w)))
            active = int((out != 0).sum())
        row = self.counters[self._phase, stage]
        row[MACS_DENSE] += macs
        row[MACS_EFF] += effective
        row[SRAM_READ] += 4 * (self._batch * d_in * d_out + rows * d_in)
        row[SRAM_WRITE] += 4 * rows * d_out
        row[NEURON_ACTIVE] += active
        row[NEURON_INACTIVE] += out.numel() - active
        if self._graph and x.requires_grad:  # dx: not for an input that needs no gradient (the stem's data)
            back = self.counters[BACKWARD, stage]
            back[MACS_DENSE] += macs
            back[MACS_EFF] += effective
            back[SRAM_READ] += 4 * (self._batch * d_in * d_out + rows * d_out)
            back[SRAM_WRITE] += 4 * rows * d_in
        if self._graph:
            update = self.counters[UPDATE, stage]
            update[MACS_DENSE] += macs
            update[MACS_EFF] += effective
            update[SRAM_READ] += 4 * rows * (d_in + d_out)

    def _attention(self, stage: int, module, x: torch.Tensor) -> None:
        b, rows, cols, dim = x.shape
        windows = _attention_windows(rows, cols, module.window, module.levels)
        if getattr(module, "full", False):
            points = rows * cols
            macs, moved = 2 * b * dim * points * points, b * points * dim
        else:
            w2 = module.window ** 2
            macs = sum(2 * b * dim * n * w2 * w2 for n in windows)
            moved = sum(b * n * w2 * dim for n in windows)
        self._attend(stage, macs, moved)

    def _windows(self, stage: int, module, x: torch.Tensor) -> None:
        b, rows, cols, dim = x.shape
        (w_r, w_c), (s_r, s_c), (p_r, p_c) = module.tiling(rows, cols)
        count = ((p_r - w_r) // s_r + 1) * ((p_c - w_c) // s_c + 1)
        n = w_r * w_c
        self._attend(stage, 2 * b * dim * count * n * n, b * count * n * dim)

    def _attend(self, stage: int, macs: int, moved: int) -> None:
        row = self.counters[self._phase, stage]
        row[MACS_DENSE] += macs
        row[MACS_EFF] += macs
        row[SRAM_READ] += 4 * 3 * moved
        row[SRAM_WRITE] += 4 * moved
        if self._graph:
            back = self.counters[BACKWARD, stage]
            back[MACS_DENSE] += 2 * macs
            back[MACS_EFF] += 2 * macs
            back[SRAM_READ] += 4 * 4 * moved
            back[SRAM_WRITE] += 4 * 3 * moved

    def charge(self, phase: int, column: int, macs: int, read_values: int, written_values: int) -> None:
        """Work the hooks do not see (FTP's projection e G^T): dense MACs and float32 traffic."""
        row = self.counters[phase, column]
        row[MACS_DENSE] += macs
        row[MACS_EFF] += macs
        row[SRAM_READ] += 4 * read_values
        row[SRAM_WRITE] += 4 * written_values

    def before_step(self) -> list[torch.Tensor]:
        """Copies of the parameters, for :meth:`stepped` to count the ones the step changed."""
        return [p.detach().clone() for _, p in self._params]

    def stepped(self, before: list[torch.Tensor]) -> None:
        """Charge an optimiser step (module docstring; with ``device_maps``, SGD's on the host parameters: each
        read with its gradient, 8 bytes, and written, 4)."""
        read, written = (8, 4) if self.device_maps else (16, 12)
        for (stage, p), old in zip(self._params, before):
            row = self.counters[UPDATE, stage]
            n = p.numel()
            row[SYN_UPDATES] += n
            row[WEIGHT_WRITES] += int((p.detach() != old).sum())
            row[SRAM_READ] += read * n
            row[SRAM_WRITE] += written * n

    def restore(self, counters: np.ndarray, trained: int, inferred: int) -> None:
        """Continue from a checkpoint's counts."""
        self.counters[...] = counters
        self.trained, self.inferred = trained, inferred

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
