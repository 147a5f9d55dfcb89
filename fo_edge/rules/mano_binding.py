"""MANO inference with its linear maps on a device's quantised kernels (the Numba path).

Every bias-free ``nn.Linear`` of a MANO model (q/k/v and output projections, MLPs, embedding, lift, heads) is
run by :func:`fo_edge.kernels.linear.cached_layer_forward_` in the device's formats: its weight quantised once
into the flat store (a power-of-two exponent per layer, or per output channel on a per-channel profile:
rules.numba_binding.to_device), its input rounded into the
activation format (nearest-even, saturating; the saturations counted), int accumulation with the device's
wrap, requantisation and saturation. LayerNorm, softmax, GELU, pooling and the residual sums stay in float on
the host: the device runs the matrix products, where nearly all the MACs are. Counters are charged to the
inference phase, one column per linear map.
"""
from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..device.spec import DeviceProfile
from ..errors import ConfigError
from ..kernels.counters import INFERENCE, new_counters
from ..kernels.linear import cached_layer_forward_, no_weight_cache
from ..kernels.rng import new_state
from .numba_binding import check_exact, make_params, quantize_input, to_device

__all__ = ["DeviceLinears"]


class DeviceLinears:
    """``with DeviceLinears(model, profile) as dev: y = model(x)`` runs ``model``'s linear maps on the device;
    ``dev.counters`` (phases, n_linear + 1, names) counts them."""

    def __init__(self, model: torch.nn.Module, profile: DeviceProfile):
        if profile.analog is not None or profile.spiking is not None:
            raise ConfigError(f"device {profile.id}: MANO runs on digital non-spiking profiles")
        self.model, self.profile = model, profile
        self.linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if any(m.bias is not None for m in self.linears):
            raise ConfigError("DeviceLinears needs bias-free linear maps (MANO's are)")
        self.nets = [to_device([m.weight.detach().double().numpy()], profile) for m in self.linears]
        self.params = make_params(profile, "identity", "mse")
        self.counters = new_counters(len(self.linears))
        self.rng = new_state(0)
        self._hooks = []
        self._limits = None

    def _run(self, index: int, x: torch.Tensor) -> torch.Tensor:
        net = self.nets[index]
        d_in, d_out = int(net.dims[0]), int(net.dims[1])
        flat = x.detach().double().reshape(-1, d_in).numpy()
        check_exact(self.profile, [d_in, d_out], max(len(flat), 1))
        buf = np.zeros((len(flat), d_in), dtype=net.value_dtype)
        row = self.counters[INFERENCE, index]
        x_dev = quantize_input(flat, self.profile, buf, row, self.rng)
        pre = np.zeros((len(flat), d_out), dtype=net.value_dtype)
        out = np.zeros_like(pre)
        cached_layer_forward_(x_dev, net.w, 0, d_out, d_in, net.w_one[0], net.row_shift, True, self.params, pre, out,
                              row, self.rng, *no_weight_cache())
        real = out / float(self.params.a_one)
        return torch.as_tensor(real, dtype=x.dtype).reshape(*x.shape[:-1], d_out)

    def __enter__(self) -> "DeviceLinears":
        # The kernels call BLAS inside their OpenMP parallel loops: single-threaded there, or OpenBLAS's own
        # threads start inside an OpenMP loop ("Detect OpenMP Loop and this application may hang"); as
        # engine.threads.kernel_threads does for the training engines. scipy's BLAS (what Numba's np.dot calls) is
        # loaded first so that it is limited too.
        import scipy.linalg.cython_blas  # noqa: F401
        self._limits = threadpool_limits(limits=1, user_api="blas")
        for i, module in enumerate(self.linears):
            self._hooks.append(module.register_forward_hook(lambda mod, args, out, i=i: self._run(i, args[0])))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
