"""Fixed-point (and float) activations and their derivatives, one element at a time.

``a`` is a pre-activation mantissa in the activation format (scale ``one = 2**frac``; ``one = 1.0`` for the
float reference). tanh is evaluated as a table would be: tanh(a / one) rounded half-up to the format.
"""
import numpy as np
from numba import njit

from .fixed import ROUND_NEAREST_EVEN, round_shift_at

__all__ = ["RELU", "TANH", "IDENTITY", "ACTIVATION_CODES", "activate", "activate_grad"]

RELU, TANH, IDENTITY = 0, 1, 2
ACTIVATION_CODES = {"relu": RELU, "tanh": TANH, "identity": IDENTITY}


@njit(cache=True, inline="always")
def activate(a, act, one, quantized):
    """sigma(a) in the same format as a."""
    if act == RELU:
        return a if a > 0 else a * 0
    if act == TANH:
        if quantized:
            return np.floor(np.tanh(a / one) * one + 0.5)
        return np.tanh(a)
    return a


@njit(cache=True, inline="always")
def activate_grad(a, h, act, one, shift, quantized):
    """sigma'(a) in the activation format (``one`` = 2**shift means 1.0; the float reference passes one = 1.0
    and ignores shift), given a and h = sigma(a). The tanh derivative 1 - h**2 rounds to nearest-even
    (branch-free, so loops over it vectorise)."""
    if act == RELU:
        return one if a > 0 else one * 0
    if act == TANH:
        if quantized:
            return round_shift_at(np.int64(one * one - h * h), shift, ROUND_NEAREST_EVEN, np.uint64(0), 0)
        return 1.0 - h * h
    return one
