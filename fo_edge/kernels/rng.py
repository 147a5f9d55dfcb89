"""Random numbers for the kernels: a seeded serial stream and an order-independent, counter-based draw.

The stream is xorshift64* with its state passed in explicitly (a ``(1,) uint64`` array), so a run with the same
seed is bit-identical on every machine and a checkpoint can store the state.

The weight updates' stochastic rounding draws instead from ``counter_u53(key, index)``: SplitMix64's output
function (Steele, Lea & Flood, OOPSLA 2014) applied to ``key + (index + 1) * golden``, a strong 64-bit hash of
the counter. Each update takes one ``key`` from the stream (one draw per layer update, so the key is a
function of the seed, the step and the layer), and the weight with flat index ``index`` inside the layer
draws ``counter_u53(key, index)``: its draw depends on its coordinates only, never on the order in which the
update visits the weights, so the update runs vectorised and across threads with bit-identical results for
any thread count.
"""
import numpy as np
from numba import njit

__all__ = ["new_state", "next_u53", "xorshift_u53", "uniform", "counter_u53", "GOLDEN"]

#: 2**64 / golden ratio, SplitMix64's counter increment
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


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


@njit(cache=True, inline="always")
def counter_u53(key, index):
    """A uniform int64 in [0, 2**53) that depends only on (key, index): key uint64, index int64 >= 0.

    z = key + (index + 1) * GOLDEN (mod 2**64), then SplitMix64's finaliser
    z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31,
    and the top 53 bits of z.
    """
    z = key + (np.uint64(index) + np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z >> np.uint64(11))
