"""Typed, frozen device profiles. Units are suffixes (``_bits``, ``_bytes``, ``_pj``); sources travel with numbers.

A profile says how a device computes (``arithmetic``: float, fixed or analog), in which number formats,
how it rounds and overflows, how much memory it has, and what each operation costs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Arithmetic", "Rounding", "Overflow", "WeightScale", "NumberFormat", "Capacity", "AnalogParams", "SignMode",
           "LoihiWeightFormat", "SpikingParams", "DeviceProfile"]


class Arithmetic(enum.Enum):
    FLOAT = "float"    # IEEE fp32 (the numerical reference)
    FIXED = "fixed"    # integer mantissas with power-of-two (Q-format) scales
    ANALOG = "analog"  # crossbar conductances with finite levels, pulsed updates, ADC/DAC


class Rounding(enum.Enum):
    NEAREST_EVEN = "nearest-even"
    TOWARD_ZERO = "toward-zero"
    STOCHASTIC = "stochastic"

    @property
    def code(self) -> int:
        """The integer the Numba kernels take (kernels.fixed.ROUND_*)."""
        return {"nearest-even": 0, "toward-zero": 1, "stochastic": 2}[self.value]


class Overflow(enum.Enum):
    SATURATE = "saturate"
    WRAP = "wrap"


class WeightScale(enum.Enum):
    """How many power-of-two weight exponents a fixed-point layer has: one per layer (a per-tensor scale), or
    one per output channel, i.e. per row of W (CMSIS-NN's and TFLite Micro's per-channel requantisation, with
    its multipliers restricted to powers of two)."""
    PER_LAYER = "per-layer"
    PER_CHANNEL = "per-channel"
    #: per-channel exponents that follow their weights (dynamic fixed point, Courbariaux et al. 2014): after
    #: each update a channel whose weights reached the format's bound moves one bit coarser, one whose peak
    #: fell below a quarter of the range (kernels.update.rescale_rows_) one bit finer
    PER_CHANNEL_DYNAMIC = "per-channel-dynamic"

    @property
    def per_channel(self) -> bool:
        return self is not WeightScale.PER_LAYER

    @property
    def dynamic(self) -> bool:
        return self is WeightScale.PER_CHANNEL_DYNAMIC


@dataclass(frozen=True)
class NumberFormat:
    """A signed fixed-point format: value = mantissa * 2**-frac_bits, mantissa in [-2**(bits-1), 2**(bits-1)-1].

    ``bits == 32 and float_format`` means IEEE fp32 (no quantisation).
    """

    bits: int
    frac_bits: int = 0
    float_format: bool = False

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def bytes_per_value(self) -> int:
        return 4 if self.float_format else (self.bits + 7) // 8

    @property
    def step(self) -> float:
        """One LSB in real units (0.0 for float)."""
        return 0.0 if self.float_format else 2.0 ** -self.frac_bits


@dataclass(frozen=True)
class Capacity:
    """Memory available for training: ``sram_bytes`` (read-write; 0 = unlimited) and ``flash_bytes``
    (read-only, for frozen tensors such as fixed random feedback matrices; 0 = none)."""

    sram_bytes: int
    flash_bytes: int = 0


@dataclass(frozen=True)
class AnalogParams:
    """Crossbar parameters (memristor-rram): conductance ``levels`` over [w_min, w_max]; a pulse moves one
    level, up-steps scaled by (1 + asymmetry) and down-steps by (1 - asymmetry), with cycle-to-cycle noise
    ``c2c_noise`` (relative); ``read_noise`` is Gaussian at each output, relative to ``out_bound``;
    ``adc_bits`` / ``dac_bits`` quantise outputs / inputs; ``max_pulses`` per update (BL)."""

    levels: int
    w_min: float
    w_max: float
    asymmetry: float
    c2c_noise: float
    read_noise: float
    out_bound: float
    adc_bits: int
    dac_bits: int
    max_pulses: int


class SignMode(enum.Enum):
    """Lava's ``SignMode`` of a Dense weight matrix (lava/utils/weightutils.py)."""

    MIXED = "mixed"
    EXCITATORY = "excitatory"
    INHIBITORY = "inhibitory"


class InputCode(enum.Enum):
    """How a spiking device presents a sample's pixels (kernels.spiking): ``rate`` (an 8-bit phase accumulator,
    about x T spikes in T steps), ``single`` (one spike per pixel at t = 0 when x >= 0.5: the binarised image
    sent once), ``ttfs`` (time to first spike: one spike at t = round((1 - x) (T - 1)), none for x = 0)."""

    RATE = "rate"
    SINGLE = "single"
    TTFS = "ttfs"


#: Loihi's synaptic weight register: 8 magnitude bits and a sign (lava weightutils ``max_num_weight_bits = 8``)
LOIHI_MAX_WEIGHT_BITS = 8


@dataclass(frozen=True)
class LoihiWeightFormat:
    """A Dense weight matrix's format as Lava defines it: ``num_weight_bits`` (1..8) of precision in a 9-bit
    signed register, ``sign_mode``, and the ``weight_exp`` every accumulated input is shifted by.

    Lava first clips a weight to its sign mode's range (mixed [-256, 255], excitatory [0, 255], inhibitory
    [-255, 0]), then truncates its ``truncate_bits = 8 - num_weight_bits + [mixed]`` low bits: (w >> k) << k for
    mixed and excitatory, -((-w >> k) << k) for inhibitory. So the values that exist are multiples of
    ``step = 2**k`` between ``lo`` and ``hi``; at Lava's default (8, mixed) the even values in [-256, 254].
    """

    num_weight_bits: int = 8
    sign_mode: SignMode = SignMode.MIXED
    weight_exp: int = 0

    @property
    def truncate_bits(self) -> int:
        return LOIHI_MAX_WEIGHT_BITS - self.num_weight_bits + (1 if self.sign_mode is SignMode.MIXED else 0)

    @property
    def step(self) -> int:
        """The spacing of representable weights, in register LSBs."""
        return 1 << self.truncate_bits

    @property
    def grid_lo(self) -> int:
        """The smallest representable weight in steps (weight = grid value x step)."""
        if self.sign_mode is SignMode.EXCITATORY:
            return 0
        span = (1 << LOIHI_MAX_WEIGHT_BITS) if self.sign_mode is SignMode.MIXED else (1 << LOIHI_MAX_WEIGHT_BITS) - 1
        return -(span >> self.truncate_bits)

    @property
    def grid_hi(self) -> int:
        """The largest representable weight in steps."""
        if self.sign_mode is SignMode.INHIBITORY:
            return 0
        return ((1 << LOIHI_MAX_WEIGHT_BITS) - 1) >> self.truncate_bits

    @property
    def lo(self) -> int:
        return self.grid_lo * self.step

    @property
    def hi(self) -> int:
        return self.grid_hi * self.step


@dataclass(frozen=True)
class SpikingParams:
    """A spiking device's neurons and time model (``neuron = "loihi-cuba"``): 12-bit decays ``du``, ``dv``
    (0..4095, Lava's scale of 4096), ``threshold`` in real units of the layer's input, ``timesteps`` per sample
    presentation, synaptic ``delay`` in steps; packing (``neurons_per_core``, ``synapse_bytes_per_core``,
    ``cores_per_chip``) and per-event times in ns with the per-timestep ``barrier_ns``; ``weights``: the Dense
    weight format (:class:`LoihiWeightFormat`); ``input_code`` (:class:`InputCode`); ``occupied_cores``: the
    cores a mapping occupies and pays static power for (0: fo-edge's tight packing, the fewest that hold the
    net; a larger figure, e.g. another tool's mapping, is charged instead and the tight figure shown beside it)."""

    du: int
    dv: int
    threshold: float
    timesteps: int
    delay: int
    neurons_per_core: int
    synapse_bytes_per_core: int
    cores_per_chip: int
    synop_ns: float
    syn_update_ns: float
    neuron_active_ns: float
    neuron_inactive_ns: float
    barrier_ns: float
    weights: LoihiWeightFormat = LoihiWeightFormat()
    input_code: InputCode = InputCode.RATE
    occupied_cores: int = 0


@dataclass(frozen=True)
class DeviceProfile:
    """One device, as read from ``devices/<id>.toml``."""

    id: str
    name: str
    arithmetic: Arithmetic
    weight: NumberFormat
    activation: NumberFormat
    error: NumberFormat
    accumulator_bits: int
    forward_rounding: Rounding
    update_rounding: Rounding
    accumulator_overflow: Overflow
    capacity: Capacity
    energy_pj: dict[str, float]
    analog: AnalogParams | None = None
    spiking: SpikingParams | None = None
    weight_scale: WeightScale = WeightScale.PER_LAYER
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def is_float(self) -> bool:
        return self.arithmetic is Arithmetic.FLOAT

    def as_kernel_args(self) -> dict[str, int | float]:
        """Plain ints and floats for the Numba kernels (the analogue of Lava's ``as_bindings``)."""
        return {
            "w_bits": self.weight.bits, "w_frac": self.weight.frac_bits,
            "a_bits": self.activation.bits, "a_frac": self.activation.frac_bits,
            "e_bits": self.error.bits, "e_frac": self.error.frac_bits,
            "acc_bits": self.accumulator_bits,
            "fwd_round": self.forward_rounding.code, "upd_round": self.update_rounding.code,
        }
