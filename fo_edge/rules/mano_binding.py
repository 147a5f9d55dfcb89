"""MANO inference with its linear maps on a device's quantised kernels (the Numba path).

Every bias-free ``nn.Linear`` of a MANO model (q/k/v and output projections, MLPs, embedding, lift, heads) is
run by :func:`fo_edge.kernels.linear.cached_layer_forward_` in the device's formats: its weight quantised once
into the flat store (a power-of-two exponent per layer, or per output channel on a per-channel profile:
rules.numba_binding.to_device), its input rounded into the
activation format (nearest-even, saturating; the saturations counted), int accumulation with the device's
wrap, requantisation and saturation. LayerNorm, softmax, GELU, pooling and the residual sums stay in float on
the host: the device runs the matrix products, where nearly all the MACs are. Counters are charged to the
inference phase, one column per linear map.

Activation format. By default every map reads and writes the profile's activation format (mcu-int8: Q3.4, LSB
1/16). With ``calibration`` inputs, each map gets its own power-of-two activation exponent instead, as an int8
deployment calibrates a scale per tensor (TFLite / CMSIS-NN post-training quantisation; here restricted to powers
of two, the profile's width kept): f_i = floor(log2(qmax / p_i)), p_i the largest |value| map i reads or writes on
the calibration inputs (the model run in float), so the largest fits. The residual stream MANO's first coarsening
reads is small (mean |x| about 0.07 after the embedding), and in Q3.4 most of it rounds to zero (docs/MANO.md).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..device.spec import DeviceProfile, NumberFormat
from ..errors import ConfigError
from ..kernels import single_threaded_blas
from ..kernels.counters import INFERENCE, new_counters
from ..kernels.linear import cached_layer_forward_, no_weight_cache
from ..kernels.rng import new_state
from .numba_binding import check_exact, make_params, quantize_input, to_device

__all__ = ["DeviceLinears", "activation_exponents", "MAX_FRAC_BITS"]


#: calibrated activation exponents stay within [0, MAX_FRAC_BITS]
MAX_FRAC_BITS = 24


def activation_exponents(model: torch.nn.Module, linears: list, calibration: torch.Tensor, fmt) -> list[int]:
    """Per linear map, the activation fraction bits f_i = floor(log2(qmax / p_i)) (module docstring) of ``fmt``'s
    width, from the float model run on ``calibration`` (N, ...) inputs; p_i: the largest |input| or |output| of
    map i, within [0, MAX_FRAC_BITS]."""
    peaks = [0.0] * len(linears)

    def record(i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        peaks[i] = max(peaks[i], float(x.detach().abs().max()), float(y.detach().abs().max()))

    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: record(i, args[0], out))
             for i, m in enumerate(linears)]
    try:
        with torch.no_grad():
            model(calibration)
    finally:
        for hook in hooks:
            hook.remove()
    return [min(MAX_FRAC_BITS, max(0, int(np.floor(np.log2(fmt.qmax / p))))) if p > 0 else MAX_FRAC_BITS
            for p in peaks]


class DeviceLinears:
    """``with DeviceLinears(model, profile) as dev: y = model(x)`` runs ``model``'s linear maps on the device;
    ``dev.counters`` (phases, n_linear + 1, names) counts them. ``calibration``: inputs (N, ...) from which each
    map's activation exponent is calibrated (module docstring; ``dev.frac_bits``); None: the profile's format for
    every map. ``maps``: the indices (into ``dev.linears``, the model's ``nn.Linear`` modules in module order) of
    the maps to run on the device, the others staying in float; None: all of them. ``counters``, ``columns``: an
    array (phases, columns, names) to count into instead, map i into column ``columns[i]`` (a MANO run's stage
    columns, accounting.mano_counts.stage_of), which must leave column ``columns[i] + 1`` in the array."""

    def __init__(self, model: torch.nn.Module, profile: DeviceProfile, calibration: torch.Tensor | None = None,
                 maps=None, counters: np.ndarray | None = None, columns=None):
        if profile.analog is not None or profile.spiking is not None:
            raise ConfigError(f"device {profile.id}: MANO runs on digital non-spiking profiles")
        self.model, self.profile = model, profile
        self.linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if any(m.bias is not None for m in self.linears):
            raise ConfigError("DeviceLinears needs bias-free linear maps (MANO's are)")
        self.nets = [to_device([m.weight.detach().double().numpy()], profile) for m in self.linears]
        fmt = profile.activation
        #: each map's activation fraction bits, with its profile and kernel parameters
        self.frac_bits = ([fmt.frac_bits] * len(self.linears) if calibration is None or profile.is_float
                          else activation_exponents(model, self.linears, calibration, fmt))
        self.profiles = [dataclasses.replace(profile, activation=NumberFormat(fmt.bits, f, fmt.float_format))
                         for f in self.frac_bits]
        self.params = [make_params(p, "identity", "mse") for p in self.profiles]
        self.counters = new_counters(len(self.linears)) if counters is None else counters
        self.columns = list(range(len(self.linears))) if columns is None else [int(c) for c in columns]
        if len(self.columns) != len(self.linears) or max(self.columns, default=0) + 1 >= self.counters.shape[1]:
            raise ConfigError(f"columns must give each of the {len(self.linears)} maps a column of the counters")
        self.rng = new_state(0)
        self._hooks = []
        self._limits = None
        self.maps = set(range(len(self.linears))) if maps is None else set(maps)
        if not self.maps <= set(range(len(self.linears))):
            raise ConfigError(f"maps must index the model's {len(self.linears)} linear maps, got {sorted(self.maps)}")

    def device_forward(self, index: int, x: torch.Tensor, phase: int = INFERENCE) -> tuple[torch.Tensor, np.ndarray]:
        """Map ``index`` on the device, counted on ``phase``: (y (x's leading shape, d_out; x's dtype), x_q (n, d_in)
        the input's activation mantissas (float64 values on a float profile))."""
        net, profile, params = self.nets[index], self.profiles[index], self.params[index]
        d_in, d_out = int(net.dims[0]), int(net.dims[1])
        flat = x.detach().double().reshape(-1, d_in).numpy()
        check_exact(profile, [d_in, d_out], max(len(flat), 1))
        buf = np.zeros((len(flat), d_in), dtype=net.value_dtype)
        row = self.counters[phase, self.columns[index]]
        x_dev = quantize_input(flat, profile, buf, row, self.rng)
        pre = np.zeros((len(flat), d_out), dtype=net.value_dtype)
        out = np.zeros_like(pre)
        cached_layer_forward_(x_dev, net.w, 0, d_out, d_in, net.w_one[0], net.row_shift, True, params, pre, out,
                              row, self.rng, *no_weight_cache())
        real = out / float(params.a_one)
        return torch.as_tensor(real, dtype=x.dtype).reshape(*x.shape[:-1], d_out), x_dev

    def __enter__(self) -> "DeviceLinears":
        # BLAS single-threaded inside the kernels' parallel loops, as engine.threads.kernel_threads holds it for
        # the training engines
        self._limits = single_threaded_blas()
        self._limits.__enter__()
        self._attach()
        return self

    def _attach(self) -> None:
        """Route the chosen maps' forwards to the device (a forward hook each: their outputs replaced)."""
        for i, module in enumerate(self.linears):
            if i in self.maps:
                self._hooks.append(module.register_forward_hook(
                    lambda mod, args, out, i=i: self.device_forward(i, args[0])[0]))

    def _detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def __exit__(self, *exc) -> None:
        self._detach()
        if self._limits is not None:
            self._limits.__exit__(None, None, None)
            self._limits = None
