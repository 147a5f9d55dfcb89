"""Forward-only rules on a spiking device (``neuron = "loihi-cuba"``): every forward pass is a rate-coded run of
T timesteps on the bit-accurate CUBA-LIF model (kernels.spiking), activities are spike counts, and the weight
updates are applied once per learning epoch (one batch of presentations) in the device's weight format.

Weights live in the profile's Lava Dense format (device.loihi_weights: at the default, 8 bits including the
sign, i.e. even values in [-256, 254]) with a per-layer power-of-two scale 2**w_frac
(rules.numba_binding.to_device, calibrated once); the per-layer scale is carried by the threshold,
vth = threshold * 2**(w_frac + weight_exp), and every accumulated input is shifted by the profile's weight_exp
as Lava's Dense does. A hidden layer's activity is its spike count c_l (0..T), the input's is its input spike
count, and the output is a non-spiking integrator: logits = sum of its input over the
presentation / (T 2**w_frac). With e = softmax(y / temp) - t (or y - t), each rule's second pass is:
  ftp     layer 1 receives the constant extra input -e G^T (label mode: + t G^T) every timestep; targets are the
          spike counts of that pass (no surrogate derivative: the rate difference itself is the local error)
  pepita  the input rates become clip(x + e F, 0, 1)
  foton   the input rates become clip(x - e F, 0, 1), F = W_L ... W_1 (refreshed every refresh_every steps from
          the device's weights; Björck every ortho_every steps as on the non-spiking path)
(each rule is its one definition, rules.FORWARD_ONLY_UPDATES, over :class:`DevicePasses`) and the updates,
formed from integer counts and rounded stochastically at the format's step into the weights
(the learning engine's widened register, DEVICES.md 1.6; then the format's truncation, which leaves nothing),
are g_l = delta_l^T h_{l-1} / (T^2 B) with delta_l the hidden error (HIDDEN_ERRORS; spike-count: c_l - c'_l)
and h_{l-1} the clean pass's counts (pepita: the modulated pass's), and g_L = e^T c_{L-1} / (T B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..accounting.memory import MemoryArena
from ..device.loihi_weights import from_steps, to_steps
from ..device.spec import DeviceProfile
from ..errors import ConfigError
from ..kernels.counters import FORWARD, INFERENCE, MODULATED, UPDATE
from ..kernels.linear import no_row_shift
from ..kernels.update import outer_update_
from ..kernels.spiking import INPUT_CODES, PHASE_ONE, spiking_pass_
from ..kernels.steps import Params
from . import FORWARD_ONLY_UPDATES
from .ftp import FTPConfig, ftp_feedback
from .numba_binding import DeviceNet, from_device, step_scale
from .passes import Pass
from .pepita import PEPITAConfig, pepita_feedback

__all__ = ["HIDDEN_ERRORS", "SPIKING_DEFAULT_MODEL", "SPIKING_DEFAULT_HIDDEN_ERROR", "hidden_delta", "SPIKING_RULES",
           "SPIKING_ACTIVATION", "SPIKING_DEFAULT_LR", "SpikingBuffers", "allocate_spiking", "spiking_forward",
           "spiking_step", "DevicePasses", "spiking_predict", "layer_cores", "thresholds", "refresh_feedback"]

SPIKING_RULES = ("ftp", "pepita", "foton")
#: learning rates ``fo-edge simulate`` uses on a spiking device when --lr is not given (rate-coded counts make
#: the updates smaller than on the float path); FTP's 0.2 measured with the central hidden error on 784-256-10
#: (full MNIST: 94.56 % against 93.93 % at 0.1), PEPITA's and FOTON's on 784-256-10 and 784-500-10 (README)
SPIKING_DEFAULT_LR = {"ftp": 0.2, "pepita": 0.1, "foton": 0.1}
#: how a hidden layer's error is formed on a spiking device: "spike-count" c_l - c'_l (the rate difference of the
#: two passes), "central" (c_l^- - c_l^+) / 2 from a third pass with the opposite modulation (a central
#: difference: the rectifying neurons' second-order bias cancels, at 1.5x the passes), or "surrogate"
#: 1[c_l + c'_l > 0] (A_l - A'_l) / 2**(w_frac + weight_exp), A_l the neuron's synaptic input integrated over
#: the presentation (a ReLU-like derivative of the rate times the input's change)
HIDDEN_ERRORS = ("spike-count", "central", "surrogate")
#: what ``fo-edge simulate`` trains on a spiking device when --model / --hidden-error are not given (the quick
#: start; README "Spiking loihi-like")
SPIKING_DEFAULT_MODEL = "784-256-10"
SPIKING_DEFAULT_HIDDEN_ERROR = "central"
#: what run.json records as the activation of a spiking run (the neurons are the nonlinearity)
SPIKING_ACTIVATION = "loihi-cuba"


def input_scale(net: DeviceNet, profile: DeviceProfile) -> np.ndarray:
    """Per layer, the integer value of a real input of 1 after the Dense shift: 2**(w_frac + weight_exp)."""
    return net.w_one.astype(np.float64) * 2.0 ** profile.spiking.weights.weight_exp


def thresholds(net: DeviceNet, profile: DeviceProfile) -> np.ndarray:
    """vth_eff = round(threshold * 2**(w_frac + weight_exp)) << 6 per layer, checked against Lava's 17-bit vth."""
    vth = np.rint(profile.spiking.threshold * input_scale(net, profile)).astype(np.int64)
    if int(vth.max()) >= 1 << 17 or int(vth.min()) < 1:
        raise ConfigError(f"device {profile.id}: threshold x 2^weight_frac = {int(vth.max())} does not fit "
                          "Loihi's 17-bit vth; lower weight_frac_bits or the threshold")
    return vth << 6


def layer_cores(dims, profile: DeviceProfile) -> list[int]:
    """Cores per layer: enough for its neurons (neurons_per_core) and its synapses (synapse_bytes_per_core)."""
    sp, w_bytes = profile.spiking, profile.weight.bytes_per_value
    return [max(math.ceil(d_out / sp.neurons_per_core), math.ceil(d_in * d_out * w_bytes / sp.synapse_bytes_per_core))
            for d_in, d_out in zip(dims[:-1], dims[1:])]


@dataclass
class SpikingBuffers:
    """Per-neuron state for a batch (flat over layers 1..L), counts of both passes, the input phases."""

    batch: int
    phase: np.ndarray
    spk: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pending: np.ndarray
    a_buf: np.ndarray
    counts: np.ndarray
    counts_m: np.ndarray
    in_counts: np.ndarray
    in_counts_m: np.ndarray
    out_acc: np.ndarray
    e: np.ndarray
    proj: np.ndarray
    in_acc: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    in_acc_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    counts_n: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    in_counts_n: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @property
    def central(self) -> bool:
        """Whether a third pass with the opposite modulation runs (hidden error "central")."""
        return self.counts_n.shape[0] > 0

    @property
    def surrogate(self) -> bool:
        """Whether the hidden error is the surrogate one (HIDDEN_ERRORS), i.e. input integrals are kept."""
        return self.in_acc.shape[0] > 0


def allocate_spiking(arena: MemoryArena, profile: DeviceProfile, dims, batch: int, rule: str,
                     hidden_error: str = "spike-count") -> SpikingBuffers:
    """Everything a step needs, from ``arena`` (DeviceMemoryError with the breakdown when it cannot fit);
    ``hidden_error = "surrogate"`` adds the two passes' input integrals (24-bit, per hidden neuron and sample)."""
    dims = [int(d) for d in dims]
    neurons = batch * sum(dims[1:])
    state = profile.activation.bytes_per_value  # 24-bit u, v and dendritic accumulators
    count_bytes = 1 if profile.spiking.timesteps < 256 else 2
    i64 = np.int64

    def alloc(name, shape, category, nbytes):
        return arena.alloc(name, shape, i64, category, nbytes)

    bufs = SpikingBuffers(
        batch=batch,
        phase=alloc("input_phase", (batch, dims[0]), "input", 1),
        spk=alloc("spikes", (neurons,), "neuron_state", 1),
        u=alloc("current_u", (neurons,), "neuron_state", state),
        v=alloc("voltage_v", (neurons,), "neuron_state", state),
        pending=alloc("delayed_input", (neurons,), "neuron_state", state),
        a_buf=alloc("dendrite_accumulator", (neurons,), "workspace", state),
        counts=alloc("spike_counts", (batch, max(sum(dims[1:-1]), 1)), "activations", count_bytes),
        counts_m=alloc("spike_counts_second_pass", (batch, max(sum(dims[1:-1]), 1)), "activations", count_bytes),
        in_counts=alloc("input_counts", (batch, dims[0]), "activations", count_bytes),
        in_counts_m=alloc("input_counts_second_pass", (batch, dims[0]), "activations", count_bytes),
        out_acc=alloc("output_accumulator", (batch, dims[-1]), "activations", 4),
        e=alloc("output_error", (batch, dims[-1]), "errors", profile.error.bytes_per_value),
        proj=np.zeros((0, 0)))
    if hidden_error == "central":
        bufs.counts_n = alloc("spike_counts_third_pass", (batch, max(sum(dims[1:-1]), 1)), "activations", count_bytes)
        bufs.in_counts_n = alloc("input_counts_third_pass", (batch, dims[0]), "activations", count_bytes)
    if hidden_error == "surrogate":
        hidden = (batch, max(sum(dims[1:-1]), 1))
        bufs.in_acc = alloc("input_integral", hidden, "activations", state)
        bufs.in_acc_m = alloc("input_integral_second_pass", hidden, "activations", state)
    if rule == "ftp":
        bufs.proj = arena.alloc("feedback_G", (dims[1], dims[-1]), np.float64, "projection", 2)
    elif rule in ("pepita", "foton"):
        bufs.proj = arena.alloc("projection_F", (dims[-1], dims[0]), np.float64, "projection", 2)
    return bufs


def spiking_forward(net: DeviceNet, bufs: SpikingBuffers, profile: DeviceProfile, x: np.ndarray, C, phase: int,
                    inject: np.ndarray | None = None, second: bool = False, third: bool = False) -> np.ndarray:
    """One presentation of x (n, d_0) float in [0, 1]; returns the logits (n, d_L) float64. Spike counts land in
    bufs.counts / in_counts (bufs.counts_m / in_counts_m when ``second``, counts_n / in_counts_n when ``third``)."""
    sp = profile.spiking
    n = x.shape[0]
    x_q = np.clip(np.rint(np.asarray(x, dtype=np.float64) * PHASE_ONE), 0, PHASE_ONE).astype(np.int64)
    counts = (bufs.counts_n if third else bufs.counts_m if second else bufs.counts)[:n]
    in_counts = (bufs.in_counts_n if third else bufs.in_counts_m if second else bufs.in_counts)[:n]
    size = n * int(net.dims[1:].sum())
    inj = np.zeros((0, 0), dtype=np.int64) if inject is None else inject
    in_acc = (bufs.in_acc_m if second or third else bufs.in_acc)[:n]
    wexp = np.full(net.n_layers, sp.weights.weight_exp, dtype=np.int64)
    spiking_pass_(x_q, sp.timesteps, INPUT_CODES[sp.input_code.value], net.w, net.dims, net.offs, wexp,
                  thresholds(net, profile), sp.du, sp.dv, sp.delay, inj, bufs.phase[:n], bufs.spk[:size],
                  bufs.u[:size], bufs.v[:size], bufs.pending[:size], bufs.a_buf[:size], counts, in_counts,
                  bufs.out_acc[:n], in_acc if bufs.surrogate else bufs.in_acc, C, phase)
    return bufs.out_acc[:n] / (sp.timesteps * float(input_scale(net, profile)[-1]))


def _error(y: np.ndarray, t: np.ndarray, error: str, temperature: float) -> np.ndarray:
    if error == "mse":
        return y - t
    z = y / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True) - t


def spiking_step(rule: str, config, net: DeviceNet, bufs: SpikingBuffers, profile: DeviceProfile, params: Params,
                 x: np.ndarray, t: np.ndarray, lr: float, error: str, C, rng) -> None:
    """One learning epoch of ``rule`` on a batch: clean run, second run, integer updates (module docstring). The
    rule is its one definition (rules.FORWARD_ONLY_UPDATES) over the device's passes (:class:`DevicePasses`),
    whose correlations apply each layer's update in place."""
    FORWARD_ONLY_UPDATES[rule](DevicePasses(net, bufs, profile, params, config, error, lr, C, rng), x, t, config,
                               bufs.proj)


class DevicePasses:
    """rules.passes.Passes on the spiking device: presentations on the bit-accurate kernels (spiking_forward), the
    output error quantised to the error format (e_q in bufs.e; the rules see e_q / 2**e_frac), FTP's signal
    injected as integer current (rounded at layer 1's input scale), the hidden error of ``bufs``
    (:func:`hidden_delta`), and each correlation applied to the weights at once (:func:`_update_layer`:
    lr / B 2**w_frac / T^2 times the delta's factor for hidden layers, lr / B 2**w_frac / (2**e_frac T) on e_q
    for the output), so every returned g_l is None."""

    def __init__(self, net: DeviceNet, bufs: SpikingBuffers, profile: DeviceProfile, params: Params, config,
                 error: str, lr: float, C, rng):
        self.net, self.bufs, self.profile, self.params, self.config = net, bufs, profile, params, config
        self.error_kind, self.lr, self.C, self.rng = error, lr, C, rng
        self.n_layers = net.n_layers
        self.e_one = float(1 << profile.error.frac_bits)
        dims = [int(d) for d in net.dims]
        self.hoff = np.concatenate([[0], np.cumsum(dims[1:-1])]).astype(np.int64)
        self.scales = input_scale(net, profile)
        self.x, self.n = None, 0

    def _h(self, counts: np.ndarray, in_counts: np.ndarray) -> list:
        n, hoff = self.n, self.hoff
        return [in_counts[:n]] + [counts[:n, hoff[l]:hoff[l + 1]] for l in range(self.n_layers - 1)]

    def _quantised(self, e: np.ndarray) -> np.ndarray:
        """e into bufs.e as error-format mantissas; returns their real value."""
        e_q = self.bufs.e[:self.n]
        e_q[:] = np.clip(np.rint(e * self.e_one), self.profile.error.qmin, self.profile.error.qmax)
        return e_q / self.e_one

    def clean(self, x: np.ndarray) -> Pass:
        self.x, self.n = x, x.shape[0]
        y = spiking_forward(self.net, self.bufs, self.profile, x, self.C, FORWARD)
        return Pass(y, self._h(self.bufs.counts, self.bufs.in_counts))

    def error(self, clean: Pass, t: np.ndarray) -> np.ndarray:
        return self._quantised(_error(clean.y, t, self.error_kind, getattr(self.config, "temperature", 1.0)))

    def charge_projection(self, v, m) -> None:
        """The device's feedback products are not counted (as before the rules were shared)."""

    def _second(self, x, y_m, third) -> Pass:
        return Pass(y_m, self._h(self.bufs.counts_m, self.bufs.in_counts_m), {"y_n": third})

    def from_input(self, x: np.ndarray, e: np.ndarray, f: np.ndarray, sign: float) -> Pass:
        net, bufs, profile, C = self.net, self.bufs, self.profile, self.C
        shift = sign * (e @ f)
        y_m = spiking_forward(net, bufs, profile, np.clip(x + shift, 0.0, 1.0), C, MODULATED, second=True)
        y_n = spiking_forward(net, bufs, profile, np.clip(x - shift, 0.0, 1.0), C, MODULATED, third=True) \
            if bufs.central else None
        return self._second(x, y_m, y_n)

    def from_first(self, clean: Pass, signal: np.ndarray, pre: bool) -> Pass:
        net, bufs, profile, C = self.net, self.bufs, self.profile, self.C
        inject = np.rint(signal * float(self.scales[0])).astype(np.int64)
        y_m = spiking_forward(net, bufs, profile, self.x, C, MODULATED, inject=inject, second=True)
        y_n = spiking_forward(net, bufs, profile, self.x, C, MODULATED, inject=-inject, third=True) \
            if bufs.central else None
        return self._second(self.x, y_m, y_n)

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> tuple[np.ndarray, float]:
        return hidden_delta(self.bufs, slice(self.hoff[l], self.hoff[l + 1]), self.n, float(self.scales[l]))

    def output_error(self, second: Pass, t) -> np.ndarray:
        raise ConfigError("PEPITA's output_error=modulated does not run on spiking devices")

    def local_output_error(self, clean: Pass, second: Pass) -> np.ndarray:
        """y - tau_L (central: (y^- - y^+) / 2), quantised as the output error."""
        y_n = second.state["y_n"]
        return self._quantised((y_n - second.y) / 2 if y_n is not None else clean.y - second.y)

    def correlate(self, l: int, delta, h_in: np.ndarray) -> None:
        net, n, T = self.net, self.n, self.profile.spiking.timesteps
        if l < self.n_layers - 1:
            d, factor = delta
            scale = self.lr / n * float(net.w_one[l]) / T ** 2 * factor
        else:
            d = np.rint(delta * self.e_one).astype(np.int64)  # the error mantissas: exact, e_one a power of two
            scale = self.lr / n * float(net.w_one[l]) / (self.e_one * T)
        _update_layer(net, l, d, h_in, scale, self.profile, self.params, self.C, self.rng)


def hidden_delta(bufs: SpikingBuffers, span: slice, n: int, input_scale_l: float) -> tuple[np.ndarray, float]:
    """A hidden layer's integer error (n, d_l) and the factor that turns it into spike-count units
    (HIDDEN_ERRORS): spike-count c - c' (1); central c^- - c^+ (1/2); surrogate
    1[c + c' > 0] (A - A') (1 / 2**(w_frac + weight_exp), ``input_scale_l``)."""
    if bufs.central:
        return bufs.counts_n[:n, span] - bufs.counts_m[:n, span], 0.5
    if bufs.surrogate:
        active = (bufs.counts[:n, span] + bufs.counts_m[:n, span]) > 0
        return np.where(active, bufs.in_acc[:n, span] - bufs.in_acc_m[:n, span], 0), 1.0 / input_scale_l
    return bufs.counts[:n, span] - bufs.counts_m[:n, span], 1.0


def _update_layer(net: DeviceNet, l: int, delta: np.ndarray, hin: np.ndarray, scale: float,
                  profile: DeviceProfile, params: Params, C, rng) -> None:
    """W_l -= round(scale * delta^T hin) in the profile's weight format: the layer's weights become step counts
    (multiples of 2**k -> integers), the update kernel rounds stochastically at one step and saturates to the
    format's range in steps, and the counts become weights again (device.loihi_weights)."""
    fmt = profile.spiking.weights
    chunk = net.w[net.offs[l]:net.offs[l + 1]]
    mul, div = step_scale(scale / fmt.step)
    to_steps(chunk, fmt)
    try:
        outer_update_(net.w, net.offs[l], int(net.dims[l + 1]), int(net.dims[l]), np.ascontiguousarray(delta),
                      np.ascontiguousarray(hin), mul, div, 0.0, no_row_shift(int(net.dims[l + 1])),
                      params._replace(w_lo=np.int64(fmt.grid_lo), w_hi=np.int64(fmt.grid_hi)), C[UPDATE, l], rng,
                      np.zeros(0))
    finally:
        from_steps(chunk, fmt)


def refresh_feedback(rule: str, config, net: DeviceNet, bufs: SpikingBuffers) -> None:
    """Fill FTP's G (d_1, d_L), PEPITA's F (d_L, d_0), or FOTON's F = W_L ... W_1 from the device's weights."""
    dims = tuple(int(d) for d in net.dims)
    if rule == "ftp":
        bufs.proj[:] = ftp_feedback(dims, config if isinstance(config, FTPConfig) else FTPConfig())
    elif rule == "pepita":
        bufs.proj[:] = pepita_feedback(dims, config if isinstance(config, PEPITAConfig) else PEPITAConfig())
    else:
        mats = from_device(net)
        proj = mats[0]
        for m in mats[1:]:
            proj = m @ proj
        bufs.proj[:] = proj


def spiking_predict(net: DeviceNet, bufs: SpikingBuffers, profile: DeviceProfile, x: np.ndarray, C) -> np.ndarray:
    """Labels (N,) by presentations of x (N, d_0) in chunks of the batch size (counted as inference)."""
    labels = np.zeros(len(x), dtype=np.int64)
    for start in range(0, len(x), bufs.batch):
        labels[start:start + bufs.batch] = np.argmax(
            spiking_forward(net, bufs, profile, x[start:start + bufs.batch], C, INFERENCE), axis=1)
    return labels

