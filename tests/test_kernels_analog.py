"""Crossbar kernels (memristor-rram): pulsed updates are unbiased in expectation and bounded; the analog
matrix-vector product equals the float product up to its DAC/ADC quantisation when read noise is off."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fo_edge.device import load_device
from fo_edge.kernels.analog import analog_forward_, gaussian, pulse_update_
from fo_edge.kernels.counters import ADC, CELL_MACS, COUNTERS, DAC, LOST, SATURATION, WRITE_PULSES
from fo_edge.kernels.rng import new_state
from fo_edge.rules.numba_binding import make_params

PROFILE = load_device("memristor-rram")


def _params(**changes):
    return make_params(PROFILE, "identity", "mse")._replace(**changes)


def test_gaussian_draws_have_unit_variance():
    rng = new_state(1)
    draws = np.array([gaussian(rng) for _ in range(20000)])
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 1.0) < 0.03


@settings(max_examples=25)
@given(st.floats(-3.0, 3.0), st.integers(0, 2**32))
def test_pulse_count_is_an_unbiased_stochastic_rounding(steps, seed):
    """With no noise, asymmetry or soft bounds in play (g = 0, tiny steps), mean pulses = |dg| / dw_min."""
    P = _params(c2c_noise=0.0, asymmetry=0.0, g_min=-1e9, g_max=1e9)
    rng, C = new_state(seed), np.zeros(len(COUNTERS), dtype=np.int64)
    fired = [pulse_update_(np.zeros(1), 0, steps * P.dw_min, P, C, rng) for _ in range(2000)]
    assert abs(np.mean(fired) - abs(steps)) < 0.06
    assert C[WRITE_PULSES] == sum(fired)
    nonzero = steps * P.dw_min != 0  # a denormal step can underflow to no update at all
    assert C[LOST] == (sum(1 for f in fired if f == 0) if nonzero else 0)


def test_pulses_respect_bounds_soft_bounds_and_the_pulse_cap():
    P = _params(c2c_noise=0.0, asymmetry=0.0)
    C = np.zeros(len(COUNTERS), dtype=np.int64)
    w = np.array([0.0])
    n = pulse_update_(w, 0, 1000.0, P, C, new_state(0))
    assert n == P.max_pulses and C[SATURATION] == 1  # capped at BL pulses
    assert 0 < w[0] < P.g_max  # soft bounds: steps shrink towards g_max and never cross it
    expected = P.g_max * (1 - (1 - P.dw_min / P.g_max) ** P.max_pulses)  # closed form of the soft-bound series
    assert w[0] == pytest.approx(expected, rel=1e-12)


def test_asymmetry_makes_up_and_down_steps_differ():
    P = _params(c2c_noise=0.0)
    up, down = np.array([0.0]), np.array([0.0])
    pulse_update_(up, 0, P.dw_min, P, np.zeros(len(COUNTERS), dtype=np.int64), new_state(0))
    pulse_update_(down, 0, -P.dw_min, P, np.zeros(len(COUNTERS), dtype=np.int64), new_state(0))
    assert up[0] == pytest.approx(P.dw_min * (1 + P.asymmetry))
    assert down[0] == pytest.approx(-P.dw_min * (1 - P.asymmetry))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noiseless_crossbar_mvm_matches_the_float_product_within_quantisation(seed):
    rng = np.random.default_rng(seed)
    d_in, d_out, batch = 40, 12, 5
    g = rng.uniform(-1, 1, size=d_out * d_in)
    w_one = 2.5
    x = rng.uniform(-2, 2, size=(batch, d_in))
    P = _params(read_noise=0.0)
    pre, h = np.zeros((batch, d_out)), np.zeros((batch, d_out))
    C = np.zeros(len(COUNTERS), dtype=np.int64)
    analog_forward_(x, g, 0, d_out, d_in, w_one, True, P, pre, h, C, new_state(0))
    exact = x @ (g.reshape(d_out, d_in) / w_one).T
    amax = np.abs(x).max(axis=1, keepdims=True)
    dac_err = d_in * 0.5 / P.dac_half  # per output, in normalised units (|g| <= 1)
    adc_err = 0.5 * 2 * P.out_bound / (2 * P.adc_half)
    assert np.all(np.abs(pre - exact) <= (dac_err + adc_err) * amax / w_one + 1e-12)
    assert C[CELL_MACS] == batch * d_out * d_in and C[DAC] == batch * d_in and C[ADC] == batch * d_out


def test_read_noise_has_the_profile_sigma():
    d_in, batch = 1, 4000
    P = _params(adc_half=1 << 30)  # fine ADC so only the read noise shows
    x = np.ones((batch, d_in))
    pre = np.zeros((batch, 1))
    analog_forward_(x, np.zeros(1), 0, 1, d_in, 1.0, True, P, pre, pre.copy(), np.zeros(len(COUNTERS), np.int64),
                    new_state(3))
    assert abs(pre.std() - PROFILE.analog.read_noise) < 0.005
