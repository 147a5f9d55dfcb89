"""What a model family gives the forward-only rules: its passes, its errors, its correlations.

FTP (rules.ftp.ftp_updates), PEPITA (rules.pepita.pepita_updates) and FOTON (rules.foton.foton_updates) are
each written once, against this interface. On torch, MLPs (rules.mlp_passes), spiking nets (rules.spiking_passes)
and BCOP conv nets (rules.foton_conv.ConvTorchPasses) implement it; on Numba, the MLP device
(rules.mlp_device_passes.MLPDevicePasses), the spiking device (rules.spiking_binding.DevicePasses) and the conv
device (rules.conv_binding.ConvDevicePasses) do. With layers
l = 0 .. L-1 (L weight layers):

    clean(x)                          the clean pass: Pass(y (B, d_L), h = [h_0 = x's activity, h_1 .. h_{L-1}])
    error(clean, t)                   e (B, d_L): softmax(y / T) - t (CE) or y - t (MSE)
    charge_projection(v, m)           count the product v @ m where the family counts feedback products (FTP's
                                      G^T products, which rules.ftp.ftp_signal forms)
    from_input(x, e, f, sign)         a second pass from the modulated input x + sign e F (PEPITA: +1, FOTON:
                                      -1), formed and counted as the family forms inputs; its h_0 is that input
                                      as the family presents it
    from_first(clean, signal, pre)    a second pass whose first hidden layer is moved by ``signal`` (FTP's
                                      target pass): added to h_1, or to a_1 before the activation when ``pre``
    delta(l, clean, second, local)    hidden layer l's error (B, d_{l+1} or its feature maps): h_{l+1} minus the
                                      second pass's, or with ``local`` the gradient of the local loss
                                      0.5 |h_{l+1} - tau_{l+1}|^2 at the pre-activation (FTP)
    output_error(second, t)           the second pass's own output error (PEPITA's output_error="modulated")
    local_output_error(clean, second) y - tau_L, the output's local loss gradient (FTP's output_loss="local")
    correlate(l, delta, h_in)         g_l, shaped like layer l's weights: the family's batch-averaged
                                      correlation of ``delta`` with the presynaptic ``h_in`` (a device family
                                      may apply it to its weights at once and return None)

The rules ask for delta(l) and then correlate(l) layer by layer, in order, so a streaming family may run layer l
of the clean and the second pass side by side inside delta(l) and read h_in only then.

Every returned g_l has a gradient's sign (W_l <- W_l - lr g_l). A family keeps whatever else it needs (masks,
meters, timesteps, the spiking hidden error) behind these calls, so the rules need not know the family.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Pass", "Passes"]


@dataclass
class Pass:
    """One pass: ``y`` its output (None where the family has not formed it), ``h`` the presynaptic activity of
    every weight layer (h[0] the input's, None where a pass does not form it), ``state`` what else the family
    keeps of it (pre-activations, spike counts, input integrals, an opposite pass)."""

    y: Any
    h: list
    state: dict = field(default_factory=dict)


class Passes(Protocol):
    """The family's primitives (module docstring)."""

    n_layers: int

    def clean(self, x) -> Pass: ...

    def error(self, clean: Pass, t): ...

    def charge_projection(self, v, m) -> None: ...

    def from_input(self, x, e, f, sign: float) -> Pass: ...

    def from_first(self, clean: Pass, signal, pre: bool) -> Pass: ...

    def delta(self, l: int, clean: Pass, second: Pass, local: bool): ...

    def output_error(self, second: Pass, t): ...

    def local_output_error(self, clean: Pass, second: Pass): ...

    def correlate(self, l: int, delta, h_in): ...
