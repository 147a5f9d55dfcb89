"""Counters for the float PyTorch path: the device kernels' schema (kernels.counters) filled from shapes and activity.

The torch path computes in float32 through BLAS; what it charges is what the device kernels charge for the same
work under the run's schedule (kernels.steps, linear, update, orth), so a float device reports the same counters
and energy on either backend. Per call, with B the batch, w / a / e / p the bytes per weight, activation, error
and projection value of the profile's formats:

  forward of hin (B, d_in) through W (d_out, d_in) to out (B, d_out):
      macs_dense B d_out d_in; macs_effective = synaptic_events = sum_j nnz(hin[:, j]) nnz(W[:, j]);
      neuron_updates_active / _inactive: the nonzero / zero outputs; sram_read B (d_out d_in w + d_in a);
      sram_write B d_out a
  output error (B, K), network column: sram_read B K a, sram_write B K e
  projection src (B, K) @ M (K, D), layer 1's column: macs_dense B K D, effective sum_k nnz(src[:, k]) nnz(M[k]),
      sram_read B K D p + B (K e + D a) (flash_read for the matrix when the profile has Flash), sram_write B D a
  backward of delta (B, d_out) through W^T: macs_dense B d_in d_out, effective sum_i nnz(delta[:, i]) nnz(W[i]),
      sram_read B (d_in d_out w + d_out e + d_in a), sram_write B d_in e
  update of W (d_out, d_in): macs_dense B d_out d_in, synaptic_updates d_out d_in, weight_writes the entries whose
      stored value changed, sram_read d_out d_in w' + B (d_out + d_in) a, sram_write d_out d_in w'
      (w' = w, or w + 4 with a momentum velocity)
  Björck on the tall orientation (r, c) = (max, min) of W's shape: 20 r c for the power iteration, 2 r c^2 per
      iteration, r c^2 per tolerance check that stops it; a W already within tolerance costs one check and a read
  F refresh: d_L sum_{l < L-1} d_l d_{l+1} MACs, sram_read d_L (that + d_{L-1}) w, sram_write d_L d_0 p
The clean pass's recompute under the ``stream`` schedule (every hidden layer; FTP's first layer under ``store``,
whose a_1 is not stored) is charged to ``recompute`` with the counts of pass 1's layer, as the device kernels do.
Activity counts stay on the tensors' device as 0-d tensors, gathered once per step into one array (synaptic events
are the effective MACs, inactive neurons the outputs less the active ones), and are read back only when a record
or checkpoint is made. A W without zeros (the float case: checked by its smallest magnitude) has d_out nonzero
weights in every column; only a W with zeros is counted column by column.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import RunError
from ..kernels.counters import (BACKWARD, FLASH_READ, FORWARD, MACS_DENSE, MACS_EFF, NEURON_ACTIVE, NEURON_INACTIVE,
                                ORTHOGONALIZE, RECOMPUTE, REFRESH, SRAM_READ, SRAM_WRITE, SYN_EVENTS, SYN_UPDATES,
                                UPDATE, WEIGHT_WRITES, new_counters)
from .counters import counters_record

__all__ = ["FloatMeter", "NoMeter", "NO_METER"]


class NoMeter:
    """The meter of a run that counts nothing: every method does nothing (the rules' default)."""

    def begin_step(self) -> None:
        pass

    def forward(self, phase: int, l: int, hin, w, out) -> None:
        pass

    def error(self, phase: int, batch: int) -> None:
        pass

    def project(self, phase: int, src, mat) -> None:
        pass

    def backward(self, l: int, delta, w) -> None:
        pass

    def refresh(self) -> None:
        pass


NO_METER = NoMeter()


class FloatMeter(NoMeter):
    """Counts one float run: ``dims`` (d_0, ..., d_L), ``profile`` the device (its formats' bytes and whether it
    has Flash), ``rule`` and ``schedule`` ("stream" or "store": which clean-pass layers the device recomputes).

    ``counts()`` is the (phases, L + 1, counters) int64 array; ``record()`` the run.json record
    (accounting.counters); ``trained`` / ``inferred`` the samples stepped on and evaluated."""

    def __init__(self, dims, profile, rule: str, schedule: str = "stream"):
        self.dims = tuple(int(d) for d in dims)
        self.n_layers = len(self.dims) - 1
        self.w_bytes = profile.weight.bytes_per_value
        self.a_bytes = profile.activation.bytes_per_value
        self.e_bytes = profile.error.bytes_per_value
        self.p_bytes = profile.weight.bytes_per_value  # float profiles keep projections in the weight format
        self.proj_flash = profile.capacity.flash_bytes > 0
        if rule == "bp":
            self.recomputed = frozenset()
        elif schedule == "store":
            self.recomputed = frozenset({0}) if rule == "ftp" else frozenset()
        else:
            self.recomputed = frozenset(range(self.n_layers - 1))
        self.shape = new_counters(self.n_layers)  # counts known from shapes (numpy)
        self.activity: torch.Tensor | None = None  # counts read from the tensors (on their device)
        self.trained = self.inferred = 0
        self._nnz: dict[tuple[int, int], torch.Tensor | None] = {}
        self._index: list[int] = []  # activity slots (flat) and their 0-d values, gathered once per step
        self._values: list[torch.Tensor] = []

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Gather the last step's activity and forget the weights' nonzero counts (W may have changed)."""
        self._gather()
        self._nnz = {}

    def _add(self, phase: int, l: int, name: int, value: torch.Tensor) -> None:
        """Add the 0-d int64 ``value`` to activity slot (phase, l, name)."""
        self._index.append((phase * self.shape.shape[1] + l) * self.shape.shape[2] + name)
        self._values.append(value)

    def _gather(self) -> None:
        if not self._values:
            return
        if self.activity is None:
            self.activity = torch.zeros(self.shape.shape, dtype=torch.int64, device=self._values[0].device)
        index = torch.tensor(self._index, dtype=torch.int64, device=self.activity.device)
        self.activity.view(-1).index_add_(0, index, torch.stack(self._values).to(torch.int64))
        self._index, self._values = [], []

    def _weight_nnz(self, l: int, w: torch.Tensor, axis: int) -> torch.Tensor | None:
        """Layer l's nonzero weights per column (axis 0, (d_in,)) or per row (axis 1, (d_out,)) this step, int64;
        None when W has no zero (every column has d_out, every row d_in)."""
        key = (l, axis)
        if key not in self._nnz:
            if (l, -1) not in self._nnz:  # whether W has zeros at all: one reduction, not a count per column
                self._nnz[(l, -1)] = None if bool(torch.amin(w.detach().abs()) > 0) else w
            self._nnz[key] = None if self._nnz[(l, -1)] is None else torch.count_nonzero(w.detach(), dim=axis)
        return self._nnz[key]

    def counts(self) -> np.ndarray:
        """Every count so far: (phases, L + 1, counters) int64."""
        self._gather()
        total = self.shape.copy()
        if self.activity is not None:
            activity = self.activity.cpu().numpy().copy()  # on CPU .numpy() shares the tensor's memory
            activity[:, :, SYN_EVENTS] += activity[:, :, MACS_EFF]
            activity[:, :, NEURON_INACTIVE] -= activity[:, :, NEURON_ACTIVE]
            total += activity
        return total

    def restore(self, counts: np.ndarray, trained: int, inferred: int) -> None:
        """Continue from a checkpoint's counts (``counts()``) and sample tallies."""
        if counts.shape != self.shape.shape:
            raise RunError(f"checkpoint does not match this run: counters are {counts.shape}, expected "
                           f"{self.shape.shape}")
        self.shape = counts.astype(np.int64).copy()
        self.activity, self._index, self._values = None, [], []
        self.trained, self.inferred = int(trained), int(inferred)

    def record(self) -> dict:
        """The run.json counters record."""
        return counters_record(self.counts(), training_samples=self.trained, inference_samples=self.inferred)

    # -- the device's operations -------------------------------------------------------------------------------
    @staticmethod
    def _effective(src: torch.Tensor, nnz: torch.Tensor | None, full: int) -> torch.Tensor:
        """sum_k nnz(src[:, k]) nnz_k, nnz_k the weights' nonzero count on k's side (``full`` each when None)."""
        src = src.detach()
        if nnz is None:
            return torch.count_nonzero(src) * full
        return (torch.count_nonzero(src, dim=0) * nnz).sum()  # integer dot (CUDA has no int64 torch.dot)

    def _layer(self, phase: int, l: int, effective: torch.Tensor, active: torch.Tensor, batch: int, d_in: int,
               d_out: int) -> None:
        self._add(phase, l, MACS_EFF, effective)
        self._add(phase, l, NEURON_ACTIVE, active)
        row = self.shape[phase, l]
        row[NEURON_INACTIVE] += batch * d_out
        row[MACS_DENSE] += batch * d_out * d_in
        row[SRAM_READ] += batch * (d_out * d_in * self.w_bytes + d_in * self.a_bytes)
        row[SRAM_WRITE] += batch * d_out * self.a_bytes

    def forward(self, phase: int, l: int, hin, w, out) -> None:
        """Layer l's forward of hin (B, d_in) through w (d_out, d_in) giving out (B, d_out) (the output layer's
        linear value, a hidden layer's activation); a clean-pass layer the schedule recomputes is charged twice."""
        effective = self._effective(hin, self._weight_nnz(l, w, 0), w.shape[0])
        active = torch.count_nonzero(out.detach())
        shape = (hin.shape[0], hin.shape[1], out.shape[1])
        self._layer(phase, l, effective, active, *shape)
        if phase == FORWARD and l in self.recomputed:
            self._layer(RECOMPUTE, l, effective, active, *shape)

    def error(self, phase: int, batch: int) -> None:
        """The output error of ``batch`` samples (network column)."""
        k_dim = self.dims[-1]
        row = self.shape[phase, self.n_layers]
        row[SRAM_READ] += batch * k_dim * self.a_bytes
        row[SRAM_WRITE] += batch * k_dim * self.e_bytes

    def project(self, phase: int, src, mat) -> None:
        """src (B, K) @ mat (K, D): FOTON's and PEPITA's e F, FTP's t G^T and y_hat G^T (layer 1's column)."""
        batch, k_dim = src.shape
        d = mat.shape[1]
        self._add(phase, 0, MACS_EFF, (torch.count_nonzero(src.detach(), dim=0)
                                       * torch.count_nonzero(mat.detach(), dim=1)).sum())
        row = self.shape[phase, 0]
        row[MACS_DENSE] += batch * d * k_dim
        row[FLASH_READ if self.proj_flash else SRAM_READ] += batch * d * k_dim * self.p_bytes
        row[SRAM_READ] += batch * (k_dim * self.e_bytes + d * self.a_bytes)
        row[SRAM_WRITE] += batch * d * self.a_bytes

    def backward(self, l: int, delta, w) -> None:
        """BP's delta_{l-1} from delta (B, d_out) through layer l's w (d_out, d_in)."""
        batch, d_out = delta.shape
        d_in = w.shape[1]
        self._add(BACKWARD, l, MACS_EFF, self._effective(delta, self._weight_nnz(l, w, 1), d_in))
        row = self.shape[BACKWARD, l]
        row[MACS_DENSE] += batch * d_in * d_out
        row[SRAM_READ] += batch * (d_in * d_out * self.w_bytes + d_out * self.e_bytes + d_in * self.a_bytes)
        row[SRAM_WRITE] += batch * d_in * self.e_bytes

    def update(self, l: int, batch: int, before: torch.Tensor, after: torch.Tensor, velocity: bool) -> None:
        """Layer l's weight update on a batch of ``batch`` samples, W ``before`` -> ``after``; ``velocity``: SGD
        with a momentum/weight-decay buffer (read and written beside each weight, 4 bytes a value)."""
        d_out, d_in = before.shape
        self._add(UPDATE, l, WEIGHT_WRITES, torch.count_nonzero(before != after))
        per_weight = self.w_bytes + (4 if velocity else 0)
        row = self.shape[UPDATE, l]
        row[MACS_DENSE] += batch * d_out * d_in
        row[SYN_UPDATES] += d_out * d_in
        row[SRAM_READ] += d_out * d_in * per_weight + batch * (d_out + d_in) * self.a_bytes
        row[SRAM_WRITE] += d_out * d_in * per_weight

    def orthogonalize(self, l: int, before: torch.Tensor, after: torch.Tensor, iterations: int, unchanged: bool,
                      iters: int, tol: float) -> None:
        """Björck on layer l: ``iterations`` run (of at most ``iters``), ``unchanged`` when W was already within
        ``tol`` and came back as it was."""
        rows, cols = max(before.shape), min(before.shape)
        size = before.shape[0] * before.shape[1]
        row = self.shape[ORTHOGONALIZE, l]
        row[SRAM_READ] += size * self.w_bytes
        if unchanged:
            row[MACS_DENSE] += rows * cols * cols
            return
        stopped = tol > 0 and iterations < iters
        row[MACS_DENSE] += (20 * rows * cols + iterations * 2 * rows * cols * cols
                            + ((tol > 0) + stopped) * rows * cols * cols)
        row[SRAM_WRITE] += size * self.w_bytes
        self._add(ORTHOGONALIZE, l, WEIGHT_WRITES, torch.count_nonzero(before != after))

    def refresh(self) -> None:
        """FOTON's F = W_L ... W_1, computed row by row (network column)."""
        dims, d_last = self.dims, self.dims[-1]
        macs = sum(dims[l] * dims[l + 1] for l in range(self.n_layers - 1))
        row = self.shape[REFRESH, self.n_layers]
        row[MACS_DENSE] += d_last * macs
        row[SRAM_READ] += d_last * (macs + dims[self.n_layers - 1]) * self.w_bytes
        row[SRAM_WRITE] += d_last * dims[0] * self.p_bytes

