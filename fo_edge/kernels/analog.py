"""Analog crossbar kernels (memristor-rram): the matrix-vector product through DAC, conductances, read noise and
ADC, and the pulsed weight update.

Weights are conductances ``g`` in [g_min, g_max] (``P.g_min``/``P.g_max``, aihwkit's w_min/w_max), one float64 per
device in the flat store; a layer's real weights are ``g / w_one`` (``w_one`` is the digital output scale).
Forward (aihwkit's analog MVM with ABS_MAX noise management): each input row is divided by its max |x| and
quantised by a ``dac_bits`` DAC to steps of 1/(2**(dac_bits-1) - 1); the column sums get Gaussian read noise
``read_noise`` (in the normalised units where inputs and g are O(1)), are clipped to +-``out_bound`` and
quantised by an ``adc_bits`` ADC over that range; the periphery then rescales by max |x| / w_one.
Update (aihwkit's pulsed update with soft bounds): a step of ``dg`` becomes n = stochastic_round(|dg| / dw_min)
pulses, at most ``max_pulses``; each pulse moves g by dw_min (1 + d asym) (1 + c2c xi) (1 - g / bound_d) for
direction d = +-1 and clips to the bounds. Randomness comes from the explicit xorshift state.
"""
import numpy as np
from numba import njit

from .activations import activate
from .counters import (ADC, CELL_MACS, DAC, LOST, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SRAM_READ,
                       SRAM_WRITE, WEIGHT_WRITES, WRITE_PULSES)
from .rng import next_u53

__all__ = ["gaussian", "analog_forward_", "pulse_update_"]


@njit(cache=True, inline="always")
def _unit(state):
    return (next_u53(state) + 0.5) / 9007199254740992.0  # in (0, 1)


@njit(cache=True)
def gaussian(state):
    """A standard normal draw (Box-Muller on two uniforms from ``state``)."""
    return np.sqrt(-2.0 * np.log(_unit(state))) * np.cos(2.0 * np.pi * _unit(state))


@njit(cache=True)
def analog_forward_(hin, w, off, d_out, d_in, w_one, linear, P, pre, h, C, rng):
    """pre = periphery(ADC(g @ DAC(hin / max|hin|) + noise)) * max|hin| / w_one; h = sigma(pre).

    hin: (B, d_in) float64; pre, h: (B, d_out). Counts cell MACs, DAC row activations, ADC conversions, clipped
    outputs (saturation), input/output bytes and active/inactive neuron updates.
    """
    batch = hin.shape[0]
    codes = np.empty(d_in)  # the DAC codes of one input row (the row driver's register)
    dac_half = P.dac_half
    adc_step = 2.0 * P.out_bound / (2.0 * P.adc_half)
    for b in range(batch):
        amax = 0.0
        for j in range(d_in):
            amax = max(amax, abs(hin[b, j]))
        scale = amax if amax > 0 else 1.0
        for j in range(d_in):
            codes[j] = np.rint(hin[b, j] / scale * dac_half) / dac_half
        for i in range(d_out):
            acc = 0.0
            base = off + i * d_in
            for j in range(d_in):
                acc += codes[j] * w[base + j]
            if P.read_noise > 0:
                acc += P.read_noise * gaussian(rng)
            if acc > P.out_bound or acc < -P.out_bound:
                C[SATURATION] += 1
                acc = min(max(acc, -P.out_bound), P.out_bound)
            acc = np.rint(acc / adc_step) * adc_step * (amax / w_one)
            pre[b, i] = acc
            out = acc if linear else activate(acc, P.act, 1.0, False)
            h[b, i] = out
            if out != 0:
                C[NEURON_ACTIVE] += 1
            else:
                C[NEURON_INACTIVE] += 1
    C[CELL_MACS] += batch * d_out * d_in
    C[DAC] += batch * d_in
    C[ADC] += batch * d_out
    C[SRAM_READ] += batch * d_in * P.a_bytes
    C[SRAM_WRITE] += batch * d_out * P.a_bytes


@njit(cache=True)
def pulse_update_(w, k, dg, P, C, rng):
    """Move conductance w[k] by about ``dg`` with pulses (see the module docstring); returns the pulses fired."""
    n_real = abs(dg) / P.dw_min
    n = int(np.floor(n_real))
    if _unit(rng) < n_real - n:
        n += 1
    if n == 0:
        if dg != 0:
            C[LOST] += 1
        return 0
    if n > P.max_pulses:
        C[SATURATION] += 1
        n = P.max_pulses
    up = dg > 0
    g = w[k]
    for _ in range(n):
        if up:
            step = P.dw_min * (1.0 + P.asymmetry) * (1.0 - g / P.g_max)
        else:
            step = -P.dw_min * (1.0 - P.asymmetry) * (1.0 - g / P.g_min)
        if P.c2c_noise > 0:
            step *= 1.0 + P.c2c_noise * gaussian(rng)
        g += step
        if g > P.g_max or g < P.g_min:
            C[SATURATION] += 1
            g = min(max(g, P.g_min), P.g_max)
    C[WRITE_PULSES] += n
    if g != w[k]:
        C[WEIGHT_WRITES] += 1
        w[k] = g
    return n
