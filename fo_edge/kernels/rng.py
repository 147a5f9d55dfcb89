"""A seeded xorshift64* generator whose state is passed in explicitly (a ``(1,) uint64`` array).

Numba kernels draw from it for stochastic rounding, so that a run with the same seed is bit-identical on
every machine, and a checkpoint can store the state.
"""
import numpy as np
from numba import njit

__all__ = ["new_state", "next_u53", "xorshift_u53", "uniform"]


def new_state(seed: int) -> np.ndarray:
    """A ``(1,) uint64`` state from ``seed`` (never zero, as xorshift requires)."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64)
    return np.array([mixed or 1], dtype=np.uint64)


@njit(cache=True, inline="always")
def xorshift_u53(x):
    """The generator on a scalar state x (uint64): returns (next state, uniform int64 in [0, 2**53)).

    Hot loops keep the state in a local variable with this and write it back once, which lets the compiler
    hold it in a register; the draws are those of ``next_u53``.
    """
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, np.int64((x * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(11))


@njit(cache=True, inline="always")
def next_u53(state):
    """Advance the state; return a uniform integer in [0, 2**53) as int64."""
    x, u = xorshift_u53(state[0])
    state[0] = x
    return u


@njit(cache=True)
def uniform(state):
    """A uniform float64 in [0, 1)."""
    return next_u53(state) / 9007199254740992.0
