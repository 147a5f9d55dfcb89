"""MANO training with its linear maps on a device's kernels: the forward pass, the backward product and the
weight update of every map in the device's formats (the Numba path), SGD.

``with DeviceTraining(model, profile, lr) as dev:`` makes each bias-free ``nn.Linear`` of the model a device map
(its weight quantised into the flat store as rules.mano_binding.DeviceLinears does: per-channel dynamic exponents
on mcu-int8) that autograd runs through. Every tensor a map reads or writes has its own power-of-two exponent,
chosen from its peak at each use (dynamic fixed point per tensor, as int8 training schemes scale tensors: the
scales of a model's activations and errors move by orders of magnitude while it trains, and exponents calibrated
once at the start saturate the grown outputs; docs/MANO.md). For map i, W_i: (d_out, d_in), at each use with
input x (n, d_in) (every point of every sample; a map shared by the V-cycle's levels is used once per level):

  forward   x_q = round(x 2**a) in the activation format, a = floor(log2(qmax / max|x|)) within
            [0, MAX_FRAC_BITS]; the device's integer product W_i x_q requantised to the exponent a in the
            accumulator's width (kernels.linear), then into the activation format with a block exponent
            (kernels.fixed.block_requantise_); x_q (the activation format's bytes) and a are kept for the backward.
  backward  given dL/dy (float, from the host's operations), delta = round(dL/dy 2**e) in the error format,
            e = floor(log2(qmax / max|dL/dy|)) within [-MAX_ERROR_BITS, MAX_ERROR_BITS]; dL/dx = delta W_i
            (kernels.transpose.error_through_: exact integer sums, requantised with a block exponent) goes back to
            the host; the use's update (delta, e, x_q, a) waits.
  step      for every waiting use, W_i <- W_i - round(lr 2**(w_i + rs_r) (delta^T x_q) 2**-(e + a)) (row r;
            kernels.update.outer_update_ in the profile's update rounding, stochastic on mcu-int8; saturating),
            then the dynamic per-channel exponents follow the weights (kernels.update.rescale_network_).
            Every backward product of a step reads the weights before any of its updates, as SGD's gradient does.

LayerNorm, softmax, GELU, the residual sums, pooling, and their parameters (LayerNorm gains and biases, and the
classifier's position table: 17 % of the default MNIST classifier's parameters, 1 % of the Darcy operator's)
stay on the host in float; :meth:`DeviceTraining.optimizer`
gives the SGD that steps those (torch.optim.SGD) and the device maps together. On a float profile (gpu-fp32)
the same path runs in float64 through the same kernels, and a step equals autograd's SGD step (tests).
Counters: the forward on the forward phase (inference under ``torch.no_grad``), the error quantisation and
product on the backward phase, the updates and rescales on the update phase, one column per map (or the
columns given: a run's stages).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..device.spec import DeviceProfile, NumberFormat
from ..errors import RunError
from ..kernels.counters import BACKWARD, FORWARD, INFERENCE, SATURATION, UPDATE
from ..kernels.fixed import block_requantise_, quantize_array
from ..kernels.linear import cached_layer_forward_, no_weight_cache
from ..kernels.transpose import error_through_
from ..kernels.update import outer_update_, rescale_network_
from .mano_binding import MAX_FRAC_BITS, DeviceLinears
from .numba_binding import check_exact, from_device, make_params, mantissa_dtype, step_scale

__all__ = ["DeviceTraining", "MAX_ERROR_BITS"]

#: the error exponents a tensor may take, |e| <= MAX_ERROR_BITS
MAX_ERROR_BITS = 40


def _exponent(peak: float, qmax: int, low: int, high: int) -> int:
    """floor(log2(qmax / peak)) within [low, high] (high for a zero tensor): the fraction bits that fit the peak."""
    return high if peak == 0.0 else max(low, min(high, math.floor(math.log2(qmax / peak))))


class _DeviceMap(torch.autograd.Function):
    """y = map ``index`` of ``trainer`` applied to x on the device. ``weight`` (the module's parameter) is an
    input only so that autograd runs the backward even when x needs no gradient (the first map reads the data);
    its gradient is None: the device updates the weight itself."""

    @staticmethod
    def forward(ctx, x, weight, trainer, index):
        y, x_dev, x_exp = trainer.training_forward(index, x, FORWARD)
        trainer.graph_outputs += y.numel()
        ctx.trainer, ctx.index, ctx.x_exp = trainer, index, x_exp
        ctx.save_for_backward(trainer.kept(x_dev))
        return y

    @staticmethod
    def backward(ctx, grad):
        (x_dev,) = ctx.saved_tensors
        return ctx.trainer.device_backward(ctx.index, x_dev.numpy(), ctx.x_exp, grad), None, None, None


class DeviceTraining(DeviceLinears):
    """DeviceLinears whose maps also train on the device (module docstring). ``lr``: SGD's step size (the
    optimizer's, which sets it per epoch); ``seed``: the stream of the update rounding. ``dev.pending``: the uses
    whose updates wait for the step. ``sync()`` writes the device weights (dequantised) into the modules."""

    def __init__(self, model: torch.nn.Module, profile: DeviceProfile, lr: float, seed: int = 0,
                 counters: np.ndarray | None = None, columns=None):
        super().__init__(model, profile, counters=counters, columns=columns)
        self.lr = float(lr)
        self.rng[:] = np.random.SeedSequence(seed).generate_state(self.rng.size, dtype=np.uint64)
        self.pending: list[tuple[int, np.ndarray, int, np.ndarray, int]] = []
        #: outputs of the maps' uses with a graph so far: the error values their backward will queue
        self.graph_outputs = 0
        self._kept_dtype = mantissa_dtype(profile.activation) if not profile.is_float else np.float64
        self._wide: dict[int, object] = {}  # kernel parameters per activation exponent (training_forward)
        #: the kernel parameters of the backward product and the update (the error, weight and update formats;
        #: the activation's exponent is per tensor, not DeviceLinears' calibrated one)
        self._train_params = make_params(profile, "identity", "mse")

    # -- the map's three operations -------------------------------------------------------------------------
    def training_forward(self, index: int, x: torch.Tensor, phase: int) -> tuple[torch.Tensor, np.ndarray, int]:
        """Map ``index`` with per-tensor exponents (module docstring), counted on ``phase``: (y (x's leading shape,
        d_out; x's dtype), x_q (n, d_in) int64 mantissas, a). A float profile: DeviceLinears' float map, a = 0."""
        net = self.nets[index]
        if not net.quantized:
            return (*self.device_forward(index, x, phase), 0)
        d_in, d_out = int(net.dims[0]), int(net.dims[1])
        fmt = self.profile.activation
        flat = x.detach().double().reshape(-1, d_in).numpy()
        check_exact(self.profile, [d_in, d_out], max(len(flat), 1))
        row = self.counters[phase, self.columns[index]]
        a = _exponent(float(np.abs(flat).max()) if flat.size else 0.0, fmt.qmax, 0, MAX_FRAC_BITS)
        x_dev = np.zeros(flat.shape, dtype=np.int64)
        quantize_array(np.ascontiguousarray(flat).ravel(), 2.0 ** a, fmt.qmin, fmt.qmax, 0, self.rng,
                       x_dev.reshape(-1), row, SATURATION)
        wide = self._wide_params(a)
        pre = np.zeros((len(flat), d_out), dtype=np.int64)
        acc = np.zeros_like(pre)
        cached_layer_forward_(x_dev, net.w, 0, d_out, d_in, net.w_one[0], net.row_shift, True, wide, pre, acc, row,
                              self.rng, *no_weight_cache())
        y = np.zeros(acc.size, dtype=np.int64)
        shift = block_requantise_(acc.reshape(-1), fmt.qmin, fmt.qmax, y, row, SATURATION)
        real = y * 2.0 ** (shift - a)
        return torch.as_tensor(real, dtype=x.dtype).reshape(*x.shape[:-1], d_out), x_dev, a

    def _wide_params(self, a: int):
        """Kernel parameters whose activation format is the accumulator's width with ``a`` fraction bits (the
        forward's requantisation before the block exponent), its bytes the activation format's."""
        if a not in self._wide:
            fmt = self.profile.activation
            wide = dataclasses.replace(self.profile, activation=NumberFormat(self.profile.accumulator_bits, a, False))
            self._wide[a] = make_params(wide, "identity", "mse")._replace(a_bytes=fmt.bytes_per_value)
        return self._wide[a]

    def kept(self, x_dev: np.ndarray) -> torch.Tensor:
        """x_q as the device keeps it for the backward: the activation format's integer width (or float64)."""
        return torch.from_numpy(x_dev.astype(self._kept_dtype))

    def device_backward(self, index: int, x_dev: np.ndarray, x_exp: int, grad: torch.Tensor) -> torch.Tensor:
        """dL/dx (x's shape, grad's dtype) from dL/dy on the device; the use's update is queued (``pending``)."""
        net, params = self.nets[index], self._train_params
        d_in, d_out = int(net.dims[0]), int(net.dims[1])
        flat = grad.detach().double().reshape(-1, d_out).numpy()
        row = self.counters[BACKWARD, self.columns[index]]
        delta = np.zeros(flat.shape, dtype=net.value_dtype)
        exponent = 0
        if net.quantized:
            peak = float(np.abs(flat).max())
            if peak == 0.0:
                return torch.zeros((*grad.shape[:-1], d_in), dtype=grad.dtype)
            fmt = self.profile.error
            exponent = _exponent(peak, fmt.qmax, -MAX_ERROR_BITS, MAX_ERROR_BITS)
            quantize_array(np.ascontiguousarray(flat).ravel(), 2.0 ** exponent, fmt.qmin, fmt.qmax, 0, self.rng,
                           delta.reshape(-1), row, SATURATION)
        else:
            delta[:] = flat
        out = np.zeros((len(flat), d_in), dtype=net.value_dtype)
        change = error_through_(delta, net.w, 0, d_out, d_in, net.row_shift, net.w_one[0], params, out, row)
        self.pending.append((index, delta, exponent, x_dev.reshape(-1, d_in).astype(net.value_dtype), x_exp))
        real = out * 2.0 ** -(exponent + change) if net.quantized else out
        return torch.as_tensor(real, dtype=grad.dtype).reshape(*grad.shape[:-1], d_in)

    def apply_updates(self) -> None:
        """Every pending use's weight step (module docstring), in the order the backward formed them, then the
        dynamic exponents; ``pending`` is emptied."""
        touched = set()
        for index, delta, exponent, x_dev, x_exp in self.pending:
            net, params = self.nets[index], self._train_params
            d_in, d_out = int(net.dims[0]), int(net.dims[1])
            if net.quantized:
                mul, div = step_scale(self.lr * 2.0 ** (int(net.w_frac[0]) - exponent - x_exp))
            else:
                mul, div = self.lr * float(net.w_one[0]), 1.0
            outer_update_(net.w, 0, d_out, d_in, delta, x_dev, mul, div, 1.0, net.row_shift, params,
                          self.counters[UPDATE, self.columns[index]], self.rng, np.zeros(0))
            touched.add(index)
        self.pending.clear()
        for index in sorted(touched):
            net = self.nets[index]
            if net.dynamic:
                net.rescan[:] = 1
                column = self.columns[index]
                rescale_network_(net.w, net.dims, net.offs, net.row_shift, net.w_frac, net.w_one, self._train_params,
                                 self.counters[UPDATE, column:column + 2], net.rescan)

    # -- wiring -----------------------------------------------------------------------------------------------
    def host_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the host trains: every one but the device maps' weights."""
        mapped = {id(m.weight) for m in self.linears}
        return [p for p in self.model.parameters() if id(p) not in mapped]

    def optimizer(self) -> "DeviceSGD":
        """SGD at ``lr`` over the host parameters whose step also applies the device maps' updates."""
        return DeviceSGD(self)

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The device's part of a checkpoint: ``device_w`` every map's store (mantissas, or float64 values),
        ``w_exp`` every map's row exponents, ``rng`` the update rounding's stream."""
        return {"device_w": np.concatenate([net.w.astype(np.float64) for net in self.nets]),
                "w_exp": np.concatenate([net.all_row_exponents() for net in self.nets]), "rng": self.rng.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Put :meth:`checkpoint_state`'s arrays back (sizes checked; RunError), then ``sync``."""
        sizes = [net.w.size for net in self.nets]
        rows = [net.row_shift.size for net in self.nets]
        if any(key not in state for key in ("device_w", "w_exp", "rng")) or \
                state["device_w"].shape != (sum(sizes),) or state["w_exp"].shape != (sum(rows),) or \
                state["rng"].shape != self.rng.shape:
            raise RunError("checkpoint does not hold this MANO model's device stores")
        w_at, e_at = np.cumsum([0, *sizes]), np.cumsum([0, *rows])
        for i, net in enumerate(self.nets):
            net.w[:] = state["device_w"][w_at[i]:w_at[i + 1]].astype(net.w.dtype)
            net.set_row_exponents(state["w_exp"][e_at[i]:e_at[i + 1]].astype(np.int64))
        self.rng[:] = state["rng"]
        self.sync()

    def sync(self) -> None:
        """The device weights, dequantised, into the modules' float weights (for evaluation off the device,
        checkpoints and export)."""
        with torch.no_grad():
            for module, net in zip(self.linears, self.nets):
                module.weight.copy_(torch.as_tensor(from_device(net)[0], dtype=module.weight.dtype))

    def _attach(self) -> None:
        """Every map's forward through :class:`_DeviceMap` (with a graph) or the device's inference (without)."""
        for i, module in enumerate(self.linears):
            module.forward = (lambda x, i=i, module=module:
                              _DeviceMap.apply(x, module.weight, self, i) if torch.is_grad_enabled()
                              else self.training_forward(i, x, INFERENCE)[0])

    def _detach(self) -> None:
        for module in self.linears:
            module.__dict__.pop("forward", None)
        self.pending.clear()
        self.sync()


class DeviceSGD:
    """SGD for a DeviceTraining model, with the optimiser interface the training loop uses (``param_groups``,
    ``zero_grad``, ``step``, ``state``): torch.optim.SGD over the host parameters (DeviceTraining.host_parameters;
    none for a model of maps alone), then the device maps' waiting updates, at the group's lr (which the loop's
    schedule sets per epoch)."""

    def __init__(self, trainer: DeviceTraining):
        self.trainer = trainer
        host = trainer.host_parameters()
        self.host = torch.optim.SGD(host, lr=trainer.lr) if host else None
        self.param_groups = self.host.param_groups if self.host else [{"params": [], "lr": trainer.lr}]
        self.state = self.host.state if self.host else {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.host is not None:
            self.host.zero_grad(set_to_none=set_to_none)

    def local_step(self) -> None:
        """Apply the device maps' waiting updates now (a block-local rule, once a block's graph is done: no later
        graph of the step reads that block's maps); the host parameters wait for ``step``."""
        self.trainer.lr = float(self.param_groups[0]["lr"])
        self.trainer.apply_updates()

    def step(self) -> None:
        """The host parameters' SGD step, the device maps' waiting updates, then the modules' weights synced
        (the health checks and checkpoints read them)."""
        if self.host is not None:
            self.host.step()
        self.local_step()
        self.trainer.sync()
