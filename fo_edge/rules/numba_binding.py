"""The rules' binding to the Numba kernels: a network on a device (flat quantised weight store), the kernel
parameters derived from a device profile, the step buffers (allocated from the memory arena), and one step.

Weights are stored as integer mantissas with a shared power-of-two exponent per layer, calibrated once from
the initial weights so that max|W_l| leaves ``weight_frac_bits`` bits of headroom (Lava's
``optimize_weight_bits`` idea; the power-of-two case of a per-tensor int8 scale), or, on a profile with
``weight_scale = "per-channel"``, one exponent per row calibrated the same way from the row's own max|W_l[i]|
(CMSIS-NN's per-output-channel requantisation with power-of-two multipliers); with ``"per-channel-dynamic"``
each row's exponent then follows its weights after every step (``rescale_rows``). Activations, errors and
projections use the profile's formats. The float profile runs the same kernels on float64 values.
Analog profiles store conductances on the profile's level grid, with a per-layer digital scale chosen so that
max|W_l| maps to g_max / 2**weight_frac_bits (aihwkit's weight_scaling_omega idea); their periphery (errors,
projections, activations) computes in float64, the crossbar effects live in kernels.analog.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..accounting.memory import MemoryArena
from ..device.loihi_weights import from_steps, quantize_to_format, to_steps
from ..device.spec import DeviceProfile, NumberFormat
from ..errors import ConfigError
from ..kernels import threads_ready
from ..kernels.activations import ACTIVATION_CODES
from ..kernels.counters import (COUNTERS, FORWARD, INFERENCE, ORTHOGONALIZE, REFRESH, SATURATION, UPDATE,
                                new_counters)
from ..kernels.fixed import fixed_multiplier, quantize_array
from ..kernels.orth import bjorck_, projection_rows_
from ..kernels.rng import new_state
from ..kernels.steps import RULE_CODES, Params, bp_step_, forward_only_step_, predict_, swap_threads
from ..kernels.update import rescale_network_
from . import FORWARD_ONLY_UPDATES
from .ftp import ftp_feedback
from .mlp_device_passes import MLPDevicePasses
from .pepita import pepita_feedback

__all__ = ["DeviceNet", "mantissa_dtype", "step_scale",
           "to_device", "from_device", "from_stored", "make_params", "StepBuffers", "allocate_buffers",
           "run_step", "compute_updates_numba", "check_exact", "quantize_input", "refresh_projection", "orthogonalize",
           "predict", "projection_format", "FLOAT64", "ftp_kernel_options", "kept_pass1"]

#: the float reference as a kernel profile (float64 values, no quantisation)
FLOAT64 = NumberFormat(64, 0, float_format=True)


def projection_format(profile: DeviceProfile) -> NumberFormat:
    """Format of projection matrices (F, G^T): twice the weight width (at most 32 bits), range +-2."""
    if profile.is_float:
        return profile.weight
    if profile.analog is not None:  # the digital periphery holds projections in fp32
        return NumberFormat(32, 0, float_format=True)
    bits = min(2 * profile.weight.bits, 32)
    return NumberFormat(bits, bits - 2)


def mantissa_dtype(fmt: NumberFormat) -> type:
    """The narrowest signed integer dtype holding ``fmt``'s mantissas (int8 for 8-bit weights), as the device's
    memory holds them; the kernels widen every product and sum to int64."""
    for dtype in (np.int8, np.int16, np.int32):
        if fmt.bits <= np.iinfo(dtype).bits:
            return dtype
    return np.int64


@dataclass
class DeviceNet:
    """w: flat mantissas (the weight format's integer dtype, see ``mantissa_dtype``, or float64 for float
    devices); dims: (L+1,) int64; offs: (L+1,) int64 layer offsets into w; w_frac: (L,) per-layer exponents;
    w_one: (L,) 2**w_frac (int64; float for float devices; analog: the float digital scale, real W = g /
    w_one); row_shift: (sum_l d_l,) int64, row i of layer l holds W_l[i, :] * 2**(w_frac_l + row_shift_i)
    (per-channel scales, ``per_channel``; zeros, the default, for per-layer ones)."""

    w: np.ndarray
    dims: np.ndarray
    offs: np.ndarray
    w_frac: np.ndarray
    w_one: np.ndarray
    quantized: bool
    row_shift: np.ndarray | None = None
    per_channel: bool = False
    #: per-channel exponents that follow the weights (``rescale_rows``) after every update
    dynamic: bool = False
    #: (sum_l d_l,) uint8, the rows ``rescale_rows`` must look at (kernels.update.rescale_rows_): marked by the
    #: step's updates, by ``orthogonalize`` and ``set_row_exponents``; simulator bookkeeping, not device memory
    rescan: np.ndarray | None = None

    def __post_init__(self) -> None:
        threads_ready()  # before any (cached) kernel is loaded: fo_edge.kernels
        if self.row_shift is None:
            self.row_shift = np.zeros(int(self.dims[1:].sum()), dtype=np.int64)
        if self.rescan is None:
            self.rescan = np.ones(self.row_shift.size, dtype=np.uint8)

    @property
    def n_layers(self) -> int:
        return self.dims.size - 1

    def rows(self, l: int) -> np.ndarray:
        """Layer l's slice of ``row_shift`` (a view: the kernels' rs), (d_l,) int64."""
        start = int(self.dims[1:l + 1].sum())
        return self.row_shift[start:start + int(self.dims[l + 1])]

    def row_exponents(self, l: int) -> np.ndarray:
        """Layer l's exponent per row, (d_l,) int64: real W_l[i, :] = mantissas / 2**exponent_i."""
        return int(self.w_frac[l]) + self.rows(l)

    def all_row_exponents(self) -> np.ndarray:
        """Every row's exponent, layer after layer: (sum_l d_l,) int64."""
        return np.concatenate([self.row_exponents(l) for l in range(self.n_layers)])

    def set_row_exponents(self, exps: np.ndarray) -> None:
        """Take every row's exponent from ``exps`` (as ``all_row_exponents`` gives them), re-basing each layer
        on its coarsest row."""
        start = 0
        for l in range(self.n_layers):
            rows = exps[start:start + int(self.dims[l + 1])]
            self.w_frac[l] = rows.min()
            self.w_one[l] = 2 ** int(rows.min())
            self.rows(l)[:] = rows - rows.min()
            start += rows.size
        self.rescan[:] = 1

    def real_scale(self, l: int) -> np.ndarray:
        """(d_l, 1) float64 divisors of layer l's stored values (w_one, times 2**row_shift per row)."""
        return (float(self.w_one[l]) * 2.0 ** self.rows(l).astype(np.float64)).reshape(-1, 1)

    @property
    def value_dtype(self) -> type:
        """dtype of activations, errors and sums on this device: int64 mantissas, or float64."""
        return np.int64 if self.quantized else np.float64


def _calibrate(w: np.ndarray, fmt: NumberFormat) -> int:
    """The exponent f that puts max|w| within qmax / 2**weight_frac_bits: floor(log2(qmax / max|w|)) - headroom."""
    peak = float(np.abs(w).max()) or 1.0
    return max(0, int(math.floor(math.log2(fmt.qmax / peak))) - fmt.frac_bits)


def _row_exponents(w: np.ndarray, fmt: NumberFormat) -> np.ndarray:
    """Per-row ``_calibrate`` of W: (d_out, d_in) -> (d_out,) int64."""
    return np.array([_calibrate(row, fmt) for row in np.asarray(w)], dtype=np.int64)


def to_device(weights: list[np.ndarray], profile: DeviceProfile, arena: MemoryArena | None = None) -> DeviceNet:
    """Quantise float weights ``W_l: (d_l, d_{l-1})`` into the device's flat weight store."""
    dims = np.array([weights[0].shape[1]] + [w.shape[0] for w in weights], dtype=np.int64)
    offs = np.zeros(len(dims), dtype=np.int64)
    offs[1:] = np.cumsum([w.size for w in weights])
    analog = profile.analog
    quantized = not profile.is_float and analog is None
    dtype = mantissa_dtype(profile.weight) if quantized else np.float64
    shape = (int(offs[-1]),)
    flat = arena.alloc("weights", shape, dtype, "weights", profile.weight.bytes_per_value) if arena \
        else np.zeros(shape, dtype=dtype)
    per_channel = quantized and profile.weight_scale.per_channel
    fracs = np.array([_calibrate(w, profile.weight) if quantized else 0 for w in weights], dtype=np.int64)
    row_fracs = [_row_exponents(w, profile.weight) if per_channel else np.full(w.shape[0], fracs[l], dtype=np.int64)
                 for l, w in enumerate(weights)]
    if per_channel:  # the layer's exponent is its coarsest row's; every other row sits row_shift bits finer
        fracs = np.array([int(r.min()) for r in row_fracs], dtype=np.int64)
    if arena is not None and per_channel:
        arena.alloc("weight scales", (int(dims[1:].sum()),), np.int32, "weights", 4)
    if analog is not None:
        return _to_crossbar(weights, profile, flat, dims, offs)
    counters = np.zeros(len(COUNTERS), dtype=np.int64)
    rng = new_state(0)
    for l, w in enumerate(weights):
        chunk = flat[offs[l]:offs[l + 1]]
        if quantized and profile.spiking is not None:  # Loihi: the Dense weight format (device.loihi_weights)
            chunk[:] = quantize_to_format(np.asarray(w).ravel(), float(2 ** int(fracs[l])), profile.spiking.weights)[0]
        elif per_channel:
            rows = chunk.reshape(w.shape)
            for i, f in enumerate(row_fracs[l]):
                quantize_array(np.ascontiguousarray(w[i], dtype=np.float64), float(2 ** int(f)), profile.weight.qmin,
                               profile.weight.qmax, 0, rng, rows[i], counters, SATURATION)
        elif quantized:
            quantize_array(np.ascontiguousarray(w, dtype=np.float64).ravel(), float(2 ** int(fracs[l])),
                           profile.weight.qmin, profile.weight.qmax, 0, rng, chunk, counters, SATURATION)
        else:
            chunk[:] = np.asarray(w, dtype=np.float64).ravel()
    one = (2 ** fracs).astype(np.int64) if quantized else np.ones(len(weights))
    shift = np.concatenate([r - fracs[l] for l, r in enumerate(row_fracs)]).astype(np.int64)
    return DeviceNet(flat, dims, offs, fracs, one, quantized, shift, per_channel,
                     per_channel and profile.weight_scale.dynamic)


def _to_crossbar(weights, profile: DeviceProfile, flat, dims, offs) -> DeviceNet:
    """Program each layer's conductances to the nearest level: g = W * w_one, w_one = g_max / (2**h max|W|)."""
    a = profile.analog
    dw_min = (a.w_max - a.w_min) / (a.levels - 1)
    ones = np.zeros(len(weights))
    for l, w in enumerate(weights):
        peak = float(np.abs(w).max()) or 1.0
        ones[l] = a.w_max / (peak * 2 ** profile.weight.frac_bits)
        g = np.asarray(w, dtype=np.float64).ravel() * ones[l]
        flat[offs[l]:offs[l + 1]] = np.clip(a.w_min + np.rint((g - a.w_min) / dw_min) * dw_min, a.w_min, a.w_max)
    return DeviceNet(flat, dims, offs, np.zeros(len(weights), dtype=np.int64), ones, False)


def from_stored(stored: dict[str, np.ndarray], profile: DeviceProfile) -> DeviceNet:
    """The DeviceNet of a checkpoint as ``engine.stream`` stores it (W{l} mantissas int32 with exp{l} = -frac, a
    scalar per layer or a (d_l,) vector per row for per-channel scales; or float32 real weights for float and
    analog profiles, and from float-path runs of integer devices, which are rounded onto the device)."""
    n = sum(1 for k in stored if k.startswith("W"))
    mats = [stored[f"W{l}"] for l in range(n)]
    dims = np.array([mats[0].shape[1]] + [m.shape[0] for m in mats], dtype=np.int64)
    offs = np.zeros(n + 1, dtype=np.int64)
    offs[1:] = np.cumsum([m.size for m in mats])
    if profile.analog is not None or (not profile.is_float and "exp0" not in stored):
        # real weights (a crossbar's, or a float path's run of an integer device: the snnTorch path of
        # loihi-like), calibrated and rounded onto the device as a training run starts
        return to_device([m.astype(np.float64) for m in mats], profile)
    if profile.is_float:
        flat = np.concatenate([m.astype(np.float64).ravel() for m in mats])
        return DeviceNet(flat, dims, offs, np.zeros(n, dtype=np.int64), np.ones(n), False)
    row_fracs = [np.broadcast_to(-np.asarray(stored[f"exp{l}"], dtype=np.int64), (int(dims[l + 1]),))
                 for l in range(n)]
    fracs = np.array([int(r.min()) for r in row_fracs], dtype=np.int64)
    shift = np.concatenate([r - fracs[l] for l, r in enumerate(row_fracs)]).astype(np.int64)
    flat = np.concatenate([m.astype(mantissa_dtype(profile.weight)).ravel() for m in mats])
    return DeviceNet(flat, dims, offs, fracs, (2 ** fracs).astype(np.int64), True, shift,
                     profile.weight_scale.per_channel, profile.weight_scale.dynamic)


def from_device(net: DeviceNet) -> list[np.ndarray]:
    """The real-valued weights ``W_l: (d_l, d_{l-1})`` float64 (mantissa / 2**w_frac, per row for per-channel
    scales)."""
    out = []
    for l in range(net.n_layers):
        chunk = net.w[net.offs[l]:net.offs[l + 1]].astype(np.float64).reshape(int(net.dims[l + 1]), int(net.dims[l]))
        out.append(chunk / net.real_scale(l))
    return out


#: the f of FTP's difference target that the kernels evaluate (kernels.activations)
_KERNEL_TARGET_F = ("tanh", "identity")


def ftp_kernel_options(config) -> dict:
    """make_params' rule keywords: FTP's from an FTPConfig, PEPITA's output_error from a PEPITAConfig (anything
    else: the defaults, which no kernel reads)."""
    if getattr(config, "output_error", "clean") == "modulated":
        return {"out_modulated": True}
    target = getattr(config, "target", "error_preactivation")
    if target == "difference" and config.target_f not in _KERNEL_TARGET_F:
        raise ConfigError(f"FTP target_f {config.target_f!r} runs on the torch path only; the device kernels "
                          f"evaluate {' or '.join(_KERNEL_TARGET_F)}")
    local = getattr(config, "output_loss", "error") == "local"
    if target != "difference":
        return {"ftp_label": target == "label", "ftp_local": local}
    return {"ftp_diff": True, "ftp_gamma": float(config.gamma), "ftp_f": ACTIVATION_CODES[config.target_f],
            "ftp_raw": config.y_hat == "raw", "ftp_local": local}


def make_params(profile: DeviceProfile, activation: str, error: str, temperature: float = 1.0,
                collect: bool = False, ftp_label: bool = False, ftp_diff: bool = False, ftp_gamma: float = 1.0,
                ftp_f: int = 1, ftp_raw: bool = False, ftp_local: bool = False,
                out_modulated: bool = False) -> Params:
    """Kernel parameters for ``profile`` (float and analog profiles give float64 values and infinite bounds)."""
    act, err = ACTIVATION_CODES[activation], {"ce": 0, "mse": 1}[error]
    ftp = (ftp_label, ftp_diff, float(ftp_gamma), ftp_f, ftp_raw, ftp_local, out_modulated)
    a, e, w = profile.activation, profile.error, profile.weight
    sizes = (w.bytes_per_value, a.bytes_per_value, e.bytes_per_value, projection_format(profile).bytes_per_value,
             profile.capacity.flash_bytes > 0)
    if profile.analog is not None:
        an = profile.analog
        crossbar = (True, (1 << (an.dac_bits - 1)) - 1, (1 << (an.adc_bits - 1)) - 1, an.read_noise, an.out_bound,
                    (an.w_max - an.w_min) / (an.levels - 1), an.asymmetry, an.c2c_noise, an.w_min, an.w_max,
                    an.max_pulses)
    else:
        crossbar = (False, 1, 1, 0.0, 1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 1)
    if profile.is_float or profile.analog is not None:
        inf = np.inf
        return Params(False, 1.0, -inf, inf, 1.0, -inf, inf, -inf, inf, -inf, inf, 0, 0, act, err,
                      float(temperature), collect, *ftp, *sizes, *crossbar)
    acc = profile.accumulator_bits
    i64 = np.int64
    return Params(True, i64(1 << a.frac_bits), i64(a.qmin), i64(a.qmax), i64(1 << e.frac_bits), i64(e.qmin),
                  i64(e.qmax), i64(w.qmin), i64(w.qmax), i64(-(1 << (acc - 1))), i64((1 << (acc - 1)) - 1),
                  profile.forward_rounding.code, profile.update_rounding.code, act, err, float(temperature),
                  collect, *ftp, *sizes, *crossbar)


def step_scale(value: float) -> tuple[np.int64, np.int64]:
    """(mul, div), div a power of two, with mul / div ~= value: the fixed-point multiplier of a weight step."""
    m, k = fixed_multiplier(value)
    if k < 0:
        if m.bit_length() - k > 62:
            raise ConfigError(f"the weight step multiplier {value:.3g} (lr / batch x 2^(weight - data fraction "
                              f"bits)) does not fit the device's 64-bit update arithmetic; lower --lr")
        m, k = m << -k, 0
    return np.int64(m), np.int64(1 << min(k, 62))


def update_scales(net: DeviceNet, profile: DeviceProfile, rule: str, lr: float, batch: int):
    """Per-layer (mul, div, g_scale) so that the weight step is round(g * mul / div) in weight LSBs, i.e.
    lr / B times the real gradient, and g * g_scale is the real batch-averaged gradient estimate."""
    n = net.n_layers
    if not net.quantized:  # float: W -= g lr / B; analog: the conductance step is that times w_one
        return lr / batch * np.asarray(net.w_one, dtype=np.float64), np.ones(n), np.full(n, 1.0 / batch)
    return _integer_scales(tuple(net.w_frac.tolist()), profile.activation.frac_bits, profile.error.frac_bits,
                           rule == "bp", float(lr), int(batch))


@functools.lru_cache(maxsize=64)
def _integer_scales(w_fracs: tuple, a_frac: int, e_frac: int, bp: bool, lr: float, batch: int):
    """update_scales for integer devices, memoised: every step of a run asks for the same numbers. The arrays
    are shared between calls, so callers only read them (kept writeable: a read-only array is another type
    to Numba, and would compile every kernel again)."""
    n = len(w_fracs)
    mul, div, g_scale = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n)
    for l, w_frac in enumerate(w_fracs):
        d_frac = e_frac if (l == n - 1 or bp) else a_frac
        mul[l], div[l] = step_scale(lr / batch * 2.0 ** (w_frac - d_frac - a_frac))
        g_scale[l] = 2.0 ** -(d_frac + a_frac) / batch
    return mul, div, g_scale


@dataclass
class StepBuffers:
    """Preallocated device buffers for one step (flat activation buffers of batch x widest layer)."""

    x: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    m0: np.ndarray
    m1: np.ndarray
    pre: np.ndarray
    tmp: np.ndarray
    store: np.ndarray
    e: np.ndarray
    xm: np.ndarray
    proj: np.ndarray
    proj_work: np.ndarray
    #: the kernels' float32 copy of W (steps.layer_cache): simulator bookkeeping, not device memory
    cache: tuple
    #: the step's dropout mask (B x sum of hidden d_l, one byte per unit); empty without dropout
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    #: SGD's velocity, one value per weight (int32 on integer devices); empty without momentum or weight decay
    vel: np.ndarray | None = None
    #: the simulator's copies of pass 1 (hidden activations, a_1, per-layer counts) that spare it the
    #: schedule's recompute (kernels.steps.forward_only_step_, ``kept``); not device memory. Empty: recompute.
    kept: tuple = ()


def check_exact(profile: DeviceProfile, dims, batch: int) -> None:
    """Refuse formats so wide that the simulator's float64 matrix products (kernels.linear.exact_matmul) could
    round: every integer sum of n products of a- and b-bit mantissas must stay below 2**53."""
    if profile.is_float or profile.analog is not None:
        return
    a, e, w = profile.activation.bits, profile.error.bits, profile.weight.bits
    p = projection_format(profile).bits

    def log2(n: int) -> int:
        return math.ceil(math.log2(max(int(n), 2)))

    sums = {"forward": a + w - 2 + log2(max(dims[:-1])),          # h (a bits) x W, over d_in terms
            "backward": e + w - 2 + log2(max(dims[1:])),          # delta (e bits) x W, over d_out terms
            "update": max(a, e) + a - 2 + log2(batch),           # delta x h over the batch
            "projection": e + p - 2 + log2(dims[-1])}             # e x F or G, over the outputs
    name, need = max(sums.items(), key=lambda item: item[1])
    if need > 53:
        raise ConfigError(f"device {profile.id}: formats too wide for exact simulation (the {name} sums need "
                          f"{need} bits, at most 53); narrow the activation/error/weight bits, the model or the batch")


def allocate_buffers(arena: MemoryArena, profile: DeviceProfile, dims, batch: int, rule: str,
                     schedule: str, ortho: bool, dropout: bool = False, momentum: bool = False) -> StepBuffers:
    """Allocate what ``rule`` needs under ``schedule`` from ``arena`` (raising DeviceMemoryError early).
    ``dropout``: also the step's mask, one byte per hidden unit of the batch; ``momentum``: SGD's velocity, one
    value per weight (4 bytes on integer devices, the weights' width on float ones).

    stream: 6 x (B, max d_l) activation buffers; store (and BP): also B x sum_{0<l<L} d_l stored activations.
    FOTON: F (d_L, d_0) in SRAM plus its row workspace, and the Björck Gram workspace; PEPITA's F and FTP's
    G^T are fixed, so they go to Flash where the device has it.
    """
    dims = [int(d) for d in dims]
    check_exact(profile, dims, batch)
    dtype = np.float64 if profile.is_float or profile.analog is not None else np.int64
    a_b, e_b = profile.activation.bytes_per_value, profile.error.bytes_per_value
    p_fmt = projection_format(profile)
    width = max(dims[1:])
    hidden = sum(dims[1:-1])
    bp = rule == "bp"
    stores = bp or schedule == "store"

    def act(name, count, category="activations"):
        return arena.alloc(name, (count,), dtype, category, a_b)

    x = arena.alloc("input", (batch, dims[0]), dtype, "input", a_b)
    # the update accumulates one row of g = delta^T h (accumulator width) before writing it to W_l
    arena.alloc("update_row", (max(dims),), np.int8, "workspace", max(4, (profile.accumulator_bits + 7) // 8))
    pre, tmp = act("pre_activation", batch * width), act("scratch", batch * width)
    if bp:
        c0 = c1 = pre[:0]
        m0 = arena.alloc("delta_a", (batch * width,), dtype, "errors", e_b)
        m1 = arena.alloc("delta_b", (batch * width,), dtype, "errors", e_b)
    else:
        c0, c1 = (act("clean_a", batch * width), act("clean_b", batch * width)) if not stores else (pre[:0], pre[:0])
        m0, m1 = act("modulated_a", batch * width), act("modulated_b", batch * width)
    store = act("stored_activations", batch * hidden, "stored_activations") if stores else pre[:0]
    e = arena.alloc("output_error", (batch, dims[-1]), dtype, "errors", e_b)
    if rule in ("foton", "pepita"):
        xm = arena.alloc("modulated_input", (batch, dims[0]), dtype, "activations", a_b)
    else:
        xm = np.zeros((0, dims[0]), dtype=dtype)
    proj = np.zeros((0, 0), dtype=dtype)
    proj_work = np.zeros(0, dtype=dtype)
    if rule == "foton":
        proj = arena.alloc("projection_F", (dims[-1], dims[0]), dtype, "projection", p_fmt.bytes_per_value)
        proj_work = arena.alloc("projection_workspace", (2 * max(dims),), dtype, "workspace", p_fmt.bytes_per_value)
        if ortho:
            gram = max(min(a, b) ** 2 for a, b in zip(dims[:-1], dims[1:]))
            arena.alloc("orthogonalize_workspace", (gram,), np.int8, "workspace", 4)
    elif rule == "pepita":
        proj = arena.alloc("feedback_F", (dims[-1], dims[0]), dtype, "projection", p_fmt.bytes_per_value, "flash")
    elif rule == "ftp":
        proj = arena.alloc("feedback_G", (dims[-1], dims[1]), dtype, "projection", p_fmt.bytes_per_value, "flash")
    n_weights = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    cache = (np.zeros(n_weights, dtype=np.float32), np.zeros(sum(dims[:-1]), dtype=np.int32),
             np.zeros((len(dims) - 1, 2), dtype=np.bool_), np.zeros(n_weights, dtype=np.int8))
    bufs = StepBuffers(x, c0, c1, m0, m1, pre, tmp, store, e, xm, proj, proj_work, cache)
    bufs.kept = kept_pass1(dtype, dims, batch, keep=not bp)
    if dropout:
        bufs.keep = arena.alloc("dropout_mask", (batch * hidden,), np.uint8, "activations", 1)
    bufs.vel = arena.alloc("velocity", (n_weights,), dtype, "optimizer", 4 if dtype == np.int64 else
                           profile.weight.bytes_per_value) if momentum else np.zeros(0, dtype=dtype)
    return bufs


def kept_pass1(dtype, dims, batch: int, keep: bool = True) -> tuple:
    """``StepBuffers.kept``: (B x sum of hidden d_l,) activations and (B x d_1,) a_1 in ``dtype``, and the
    (L + 1, counters) per-layer counts of pass 1; with keep=False empty arrays (the step recomputes)."""
    hidden = sum(dims[1:-1]) if keep else 0
    return (np.zeros(batch * hidden, dtype=dtype), np.zeros(batch * dims[1] if keep else 0, dtype=dtype),
            np.zeros((len(dims), len(COUNTERS)), dtype=np.int64))


#: fraction bits of the integer velocity below one weight LSB (per unit lr)
VELOCITY_FRAC_BITS = 8


def momentum_multipliers(net: DeviceNet, profile: DeviceProfile, rule: str, lr: float, batch: int, momentum: float,
                         weight_decay: float) -> np.ndarray:
    """(L, 8) float64, per layer the multipliers of ``linear.momentum_update_``: float devices (1/B, 1, mu, 1,
    wd, 1, lr, 1); integer devices the (mul, div) pairs of g -> velocity (2**(w_frac + 8 - d_frac - a_frac) / B,
    d_frac the error format's for the output layer and BP, the activation format's otherwise), mu, wd 2**8 and
    lr 2**-8 (``step_scale``: div a power of two)."""
    n = net.n_layers
    out = np.zeros((n, 8))
    if not net.quantized:
        out[:] = (1.0 / batch, 1.0, momentum, 1.0, weight_decay, 1.0, lr, 1.0)
        return out
    a_frac, e_frac, f = profile.activation.frac_bits, profile.error.frac_bits, VELOCITY_FRAC_BITS
    for l in range(n):
        d_frac = e_frac if (l == n - 1 or rule == "bp") else a_frac
        pairs = [step_scale(2.0 ** (int(net.w_frac[l]) + f - d_frac - a_frac) / batch), step_scale(momentum),
                 step_scale(weight_decay * 2.0 ** f), step_scale(lr * 2.0 ** -f)]
        out[l] = [float(v) for pair in pairs for v in pair]
    return out


def dropout_drop(bufs: StepBuffers, profile: DeviceProfile, dims, n: int, p: float, seed: int, step: int) -> tuple:
    """The kernels' ``drop`` for one step of n samples: the mask written into ``bufs.keep`` (the same Bernoulli
    draws as the torch path's engine.torch_loop.dropout_masks, from (seed, step), so both paths drop the same
    units) and 1 / (1 - p) as a fixed-point multiplier (m, k) with m / 2**k ~= 1 / (1 - p) on integer
    devices (12-bit m, kernels.fixed.fixed_multiplier), or the float itself; no dropout when p = 0."""
    if p <= 0:
        return np.zeros(0, dtype=np.uint8), 1.0, 0
    import torch

    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 0xD0]).generate_state(1)[0]))
    keep_p = 1.0 - p
    blocks = [(torch.rand(n, int(d), generator=gen) < keep_p).numpy().astype(np.uint8).ravel()
              for d in dims[1:-1]]
    mask = bufs.keep[:n * sum(int(d) for d in dims[1:-1])]
    mask[:] = np.concatenate(blocks) if blocks else mask[:0]
    if profile.is_float or profile.analog is not None:
        return mask, 1.0 / keep_p, 0
    m, k = fixed_multiplier(1.0 / keep_p)
    return mask, float(m), int(k)


def fill_fixed_projection(bufs: StepBuffers, profile: DeviceProfile, rule: str, dims, config) -> None:
    """Write PEPITA's F or FTP's G^T (from the rule's seed, as on the torch path) in the projection format."""
    if rule == "pepita":
        matrix = pepita_feedback(tuple(int(d) for d in dims), config)
    elif rule == "ftp":
        matrix = ftp_feedback(tuple(int(d) for d in dims), config).T
    else:
        return
    _store_projection(bufs.proj, matrix, profile)


def _store_projection(out: np.ndarray, matrix: np.ndarray, profile: DeviceProfile) -> None:
    if out.dtype == np.float64:
        out[:] = matrix
        return
    fmt = projection_format(profile)
    quantize_array(np.ascontiguousarray(matrix, dtype=np.float64).ravel(), float(2 ** fmt.frac_bits), fmt.qmin,
                   fmt.qmax, 0, new_state(0), out.reshape(-1), np.zeros(1, dtype=np.int64), 0)


def refresh_projection(net: DeviceNet, bufs: StepBuffers, profile: DeviceProfile, counters, rng) -> None:
    """FOTON: F = W_L ... W_1 recomputed in place (row by row) in the projection format; counters: (phases,
    L + 1, names), charged to the feedback_refresh phase."""
    fmt = projection_format(profile)
    p_one = np.int64(1 << fmt.frac_bits) if net.quantized else 1.0
    lo, hi = (np.int64(fmt.qmin), np.int64(fmt.qmax)) if net.quantized else (-np.inf, np.inf)
    half = bufs.proj_work.size // 2
    params = make_params(profile, "identity", "mse")
    projection_rows_(net.w, net.dims, net.offs, net.w_one, net.row_shift, p_one, lo, hi, params, rng, bufs.proj,
                     bufs.proj_work[:half], bufs.proj_work[half:], counters[REFRESH, net.n_layers])


def orthogonalize(net: DeviceNet, profile: DeviceProfile, iters: int, counters, rng, tol: float = 0.0) -> list[int]:
    """Björck on every layer, in place (counted in the orthogonalize phase); returns the iterations each ran
    (``tol``: kernels.orth.bjorck_)."""
    params = make_params(profile, "identity", "mse")
    fmt = profile.spiking.weights if profile.spiking is not None else None
    net.rescan[:] = 1  # every row may change
    if fmt is None:
        return [int(bjorck_(net.w, net.offs[l], net.dims[l + 1], net.dims[l], net.w_one[l], net.rows(l), iters,
                            params, rng, counters[ORTHOGONALIZE, l], float(tol))) for l in range(net.n_layers)]
    # Loihi: iterate on the format's step counts, so every written weight is representable (device.loihi_weights)
    params = params._replace(w_lo=np.int64(fmt.grid_lo), w_hi=np.int64(fmt.grid_hi))
    used = []
    for l in range(net.n_layers):
        chunk = net.w[net.offs[l]:net.offs[l + 1]]
        to_steps(chunk, fmt)
        try:
            used.append(int(bjorck_(net.w, net.offs[l], net.dims[l + 1], net.dims[l],
                                    np.int64(max(int(net.w_one[l]) >> fmt.truncate_bits, 1)), net.rows(l), iters,
                                    params, rng, counters[ORTHOGONALIZE, l], float(tol))))
        finally:
            from_steps(chunk, fmt)
    return used


def quantize_input(x: np.ndarray, profile: DeviceProfile, out: np.ndarray, counters, rng) -> np.ndarray:
    """x: (n, d_0) float in [0, 1] -> out[:n] in the activation format (nearest-even); counters: one row."""
    n = x.shape[0]
    view = out[:n]
    if out.dtype == np.float64:
        view[:] = x
    else:
        a = profile.activation
        flat = np.ascontiguousarray(x).ravel()  # float32 as it is (widened exactly in the kernel)
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(np.float64)
        quantize_array(flat, float(2 ** a.frac_bits), a.qmin, a.qmax,
                       0, rng, view.reshape(-1), counters, SATURATION)
    return view


def _proj_div(profile: DeviceProfile):
    if profile.is_float or profile.analog is not None:
        return 1.0
    p = projection_format(profile)
    return np.int64(1 << (profile.error.frac_bits + p.frac_bits - profile.activation.frac_bits))


#: a step or prediction chunk of at most this many samples runs its kernels on one thread: their parallel loops
#: have too little work to pay for waking the others (784-256-256-10 FTP on mcu-int8, 2 cores, one thread against
#: two: 0.87x the step's time at batch 1, 0.79-0.85x at 8, 1.19x at 16; results do not depend on the thread count)
SERIAL_BATCH = 8


def run_step(rule: str, net: DeviceNet, bufs: StepBuffers, profile: DeviceProfile, params: Params, x_dev, t,
             lr: float, schedule: str, counters, rng, g_out=None, drop=None, sgd=(0.0, 0.0), *, config=None,
             fused: bool = True) -> None:
    """One training step of ``rule`` on a batch already in the device format (x_dev: (n, d_0)); counters:
    (phases, L + 1, names) from kernels.counters.new_counters; drop: the step's dropout (``dropout_drop``);
    sgd: (momentum, weight decay), which need ``bufs.vel`` (allocate_buffers(momentum=True)). At most
    SERIAL_BATCH samples run on one thread.

    A forward-only rule runs as one compiled kernel (``kernels.steps.forward_only_step_``), or with
    ``fused=False`` (and the rule's ``config``) from its one definition over the device's kernels
    (rules.mlp_device_passes), bit for bit the same step; a forward-only rule without a fused kernel always runs
    the latter."""
    if rule != "bp" and (not fused or rule not in RULE_CODES):
        if config is None:
            raise ConfigError(f"the {rule} step from its definition needs the rule's config")
        _threads_for(x_dev.shape[0], _defined_step, rule, config, net, bufs, profile, params, x_dev, t, lr, schedule,
                     counters, rng, g_out, drop, sgd)
        return
    _threads_for(x_dev.shape[0], _run_step, rule, net, bufs, profile, params, x_dev, t, lr, schedule, counters, rng,
                 g_out, drop, sgd)


def _threads_for(batch: int, call, *args) -> None:
    """call(*args) on one Numba thread when ``batch`` <= SERIAL_BATCH, else on the threads set (the count set back
    after, also on an error)."""
    if batch > SERIAL_BATCH:
        call(*args)
        return
    threads = swap_threads(1)
    try:
        call(*args)
    finally:
        swap_threads(threads)


def _step_arguments(rule, net, bufs, profile, params, x_dev, t, lr, g_out, drop, sgd) -> tuple:
    """What every step kernel takes besides the network and buffers: (drop, opt, (mul, div, g_scale), g_out, t
    as float64, FTP's label targets tq and y_hat workspace yq in the error format)."""
    n = x_dev.shape[0]
    drop = (np.zeros(0, dtype=np.uint8), 1.0, 0) if drop is None else drop
    vel = bufs.vel if bufs.vel is not None else net.w[:0]
    opt = (vel, momentum_multipliers(net, profile, rule, lr, n, *sgd) if vel.size else np.zeros((0, 8)))
    scales = update_scales(net, profile, rule, lr, n)
    g_out = np.zeros(0) if g_out is None else g_out
    t = np.ascontiguousarray(t, dtype=np.float64)
    # only FTP's label targets read t in the error format; other steps get an empty array (no per-step work)
    labels = params.ftp_label or params.ftp_diff
    tq = np.rint(t * float(params.e_one)).astype(net.value_dtype) if labels and rule != "bp" else \
        np.zeros((0, t.shape[1]), dtype=net.value_dtype)
    yq = np.zeros_like(tq) if params.ftp_diff and rule != "bp" else tq[:0]
    if params.quantized and params.ftp_diff:  # one-hot 1.0 saturates to the error format's largest value
        np.minimum(tq, params.e_hi, out=tq)
    return drop, opt, scales, g_out, t, tq, yq


def _defined_step(rule, config, net, bufs, profile, params, x_dev, t, lr, schedule, counters, rng, g_out, drop,
                  sgd) -> None:
    """A forward-only step from the rule's one definition (rules.FORWARD_ONLY_UPDATES) over the device's passes
    (rules.mlp_device_passes.MLPDevicePasses)."""
    drop, opt, scales, g_out, t, tq, yq = _step_arguments(rule, net, bufs, profile, params, x_dev, t, lr, g_out, drop,
                                                          sgd)
    passes = MLPDevicePasses(net, bufs, params, scales, _proj_div(profile), schedule == "store", counters, rng,
                             g_out, drop, opt, tq, yq)
    p_one = float(2 ** projection_format(profile).frac_bits) if net.quantized else 1.0
    feedback = bufs.proj.T / p_one if rule == "ftp" else bufs.proj  # FTP's G (d_1, d_L), real; F as stored
    FORWARD_ONLY_UPDATES[rule](passes, x_dev, t, config, feedback)
    rescale_rows(net, params, counters)


def _run_step(rule, net, bufs, profile, params, x_dev, t, lr, schedule, counters, rng, g_out, drop, sgd) -> None:
    n = x_dev.shape[0]
    drop, opt, (mul, div, g_scale), g_out, t, tq, yq = _step_arguments(rule, net, bufs, profile, params, x_dev, t, lr,
                                                                       g_out, drop, sgd)
    if rule == "bp":
        bp_step_(net.w, net.dims, net.offs, net.w_one, net.row_shift, mul, div, g_scale, x_dev, t, params, bufs.c0,
                 bufs.c1, bufs.m0, bufs.m1, bufs.pre, bufs.tmp, bufs.store, bufs.e[:n], counters, rng, g_out,
                 bufs.cache, drop, opt, net.rescan)
        rescale_rows(net, params, counters)
        return
    forward_only_step_(RULE_CODES[rule], schedule == "store", net.w, net.dims, net.offs, net.w_one, net.row_shift,
                       mul, div, g_scale, x_dev, t, tq, bufs.proj, _proj_div(profile), params, bufs.c0, bufs.c1,
                       bufs.m0, bufs.m1, bufs.pre, bufs.tmp, bufs.store, bufs.e[:n], bufs.xm[:n], counters, rng, g_out,
                       bufs.cache, yq, drop, opt, bufs.kept, net.rescan)
    rescale_rows(net, params, counters)


def rescale_rows(net: DeviceNet, params: Params, counters) -> None:
    """Dynamic per-channel exponents (``net.dynamic``; else nothing): every layer's rows re-scaled after the
    step (``kernels.update.rescale_network_``, charged to the update phase), then each layer re-based so that its
    coarsest row has row_shift 0 (w_frac and w_one follow). Only the rows marked in ``net.rescan`` are looked at
    (the others cannot change); code that writes ``net.w`` other than through a step marks the rows it wrote."""
    if not net.dynamic or params.collect:
        return
    rescale_network_(net.w, net.dims, net.offs, net.row_shift, net.w_frac, net.w_one, params, counters[UPDATE],
                     net.rescan)


def predict(net: DeviceNet, bufs: StepBuffers, profile: DeviceProfile, params: Params, x: np.ndarray,
            counters, rng, logits: np.ndarray | None = None) -> np.ndarray:
    """Labels (N,) for float inputs x: (N, d_0), in chunks of the step's batch size; with ``logits`` (N, d_L)
    float64, also the outputs in real units."""
    batch = bufs.x.shape[0]
    labels = np.zeros(len(x), dtype=np.int64)
    raw = np.zeros((0, int(net.dims[-1])), dtype=net.value_dtype) if logits is None else \
        np.zeros((len(x), int(net.dims[-1])), dtype=net.value_dtype)
    bufs.cache[2][:] = False  # W is fixed while predicting: each layer is converted once for all chunks
    for start in range(0, len(x), batch):
        x_dev = quantize_input(x[start:start + batch], profile, bufs.x, counters[INFERENCE, net.n_layers], rng)
        _threads_for(batch, predict_, net.w, net.dims, net.offs, net.w_one, net.row_shift, x_dev, params, bufs.pre,
                     bufs.tmp, bufs.m0, bufs.m1, counters, rng, labels[start:start + batch], raw[start:start + batch],
                     bufs.cache)
    if logits is not None:
        logits[:] = raw / float(params.a_one)
    return labels


def compute_updates_numba(rule: str, config, weights: list[np.ndarray], x: np.ndarray, target: np.ndarray,
                          activation: str, error: str) -> list[np.ndarray]:
    """``compute_updates(..., backend="numba")``: the streaming kernels in float64, collecting g_l."""
    from ..device.spec import Arithmetic, Capacity, DeviceProfile, Overflow, Rounding

    profile = DeviceProfile("float64", "float64 reference", Arithmetic.FLOAT, FLOAT64, FLOAT64, FLOAT64, 64,
                            Rounding.NEAREST_EVEN, Rounding.NEAREST_EVEN, Overflow.SATURATE, Capacity(2**62), {})
    net = to_device([np.asarray(w, dtype=np.float64) for w in weights], profile)
    if x.ndim != 2 or x.shape[1] != net.dims[0] or target.shape != (x.shape[0], net.dims[-1]):
        raise ConfigError(f"x must be (B, {net.dims[0]}) and target (B, {net.dims[-1]})")
    arena = MemoryArena(2**62)
    bufs = allocate_buffers(arena, profile, net.dims, x.shape[0], rule, "stream", ortho=False)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    counters = new_counters(net.n_layers)
    rng = new_state(0)
    if rule == "foton":
        if config.projection is None:
            refresh_projection(net, bufs, profile, counters, rng)
        else:
            bufs.proj[:] = np.asarray(config.projection, dtype=np.float64)
    params = make_params(profile, activation, error, getattr(config, "temperature", 1.0), collect=True,
                         **ftp_kernel_options(config))
    x_dev = quantize_input(np.asarray(x, dtype=np.float64), profile, bufs.x, counters[FORWARD, net.n_layers], rng)
    g_out = np.zeros(net.w.size)
    run_step(rule, net, bufs, profile, params, x_dev, target, 1.0, "stream", counters, rng, g_out, config=config)
    return [g_out[net.offs[l]:net.offs[l + 1]].reshape(int(net.dims[l + 1]), int(net.dims[l]))
            for l in range(net.n_layers)]
