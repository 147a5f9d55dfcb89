"""Number formats, rounding and saturation: the small pieces every device kernel is built from.

Fixed-point values are integer mantissas ``q`` with a power-of-two scale: ``value = q / 2**frac``. Division by
a power of two ``d`` rounds by ``mode``: ``ROUND_NEAREST_EVEN`` (ties to even), ``ROUND_TOWARD_ZERO``
(truncate the magnitude, as Loihi's decays do) or ``ROUND_STOCHASTIC`` (round up with probability equal to
the remainder, from an explicit RNG state: unbiased and reproducible). Saturation clips to [lo, hi] and counts
the clipped values in ``counters[slot]`` (Lava's BitCheck idea: overflow observed, not silent). Affine
(scale, zero-point) formats are here too, for int8 tensors described TFLite-style.

The scalar helpers are written with ``//``, ``*`` and comparisons only, so one kernel body compiles for int64
mantissas (the device) and for float64 values (the float reference), where quantisation is skipped.
"""
import math

import numpy as np
from numba import njit

from .rng import counter_u53, next_u53, xorshift_u53

__all__ = ["ROUND_NEAREST_EVEN", "ROUND_TOWARD_ZERO", "ROUND_STOCHASTIC", "round_div", "round_shift", "round_by",
           "round_shift_at", "round_div_at",
           "log2_exact", "saturate",
           "wrap", "quantize_array", "quantize_affine", "dequantize_affine", "affine_params", "fixed_multiplier"]

ROUND_NEAREST_EVEN = 0
ROUND_TOWARD_ZERO = 1
ROUND_STOCHASTIC = 2


@njit(cache=True, inline="always")
def round_div(x, d, mode, state):
    """x / d rounded to an integer by ``mode`` (x: int64, d: a positive int64, usually a power of two)."""
    q = x // d  # floor
    rem = x - q * d  # 0 <= rem < d
    if rem == 0:
        return q
    if mode == ROUND_NEAREST_EVEN:
        twice = 2 * rem
        if twice > d or (twice == d and q % 2 != 0):
            return q + 1
        return q
    if mode == ROUND_TOWARD_ZERO:
        return q + 1 if x < 0 else q
    # stochastic: up with probability rem / d
    return q + 1 if next_u53(state) % d < rem else q


@njit(cache=True, inline="always")
def round_shift(x, k, mode, s):
    """``round_div(x, 2**k, mode)`` by shifts and masks, with the RNG state as a scalar: returns (q, s).

    x: int64, k: int64 in [0, 62], s: uint64 state (see ``rng.xorshift_u53``). Bit-identical to round_div:
    x >> k is the floor, x & (2**k - 1) the remainder, and a draw u % 2**k is u & (2**k - 1).
    """
    q = x >> k
    mask = (np.int64(1) << k) - 1
    rem = x & mask
    if rem == 0:
        return q, s
    if mode == ROUND_NEAREST_EVEN:
        twice = 2 * rem
        if twice > mask + 1 or (twice == mask + 1 and q % 2 != 0):
            return q + 1, s
        return q, s
    if mode == ROUND_TOWARD_ZERO:
        return (q + 1 if x < 0 else q), s
    s, u = xorshift_u53(s)
    return (q + 1 if (u & mask) < rem else q), s


@njit(cache=True, inline="always")
def round_shift_at(x, k, mode, key, index):
    """``round_shift`` without branches, its stochastic draw the counter-based ``counter_u53(key, index)``:
    x: int64, k: int64 in [0, 53]; returns q = floor(x / 2**k) + up, where up is 1 when the remainder r rounds
    up (nearest-even: 2r > 2**k, or 2r = 2**k and q odd; toward zero: r > 0 and x < 0; stochastic: the draw's
    low k bits < r, i.e. with probability r / 2**k). The same (x, key, index) give the same result in any
    order, which lets an update round its weights in parallel."""
    q = x >> k
    mask = (np.int64(1) << k) - 1
    rem = x & mask
    if mode == ROUND_NEAREST_EVEN:
        twice = 2 * rem
        up = (twice > mask + 1) | ((twice == mask + 1) & ((q & 1) != 0))
    elif mode == ROUND_TOWARD_ZERO:
        up = (rem != 0) & (x < 0)
    else:
        up = (counter_u53(key, index) & mask) < rem
    return q + np.int64(up)


@njit(cache=True, inline="always")
def round_div_at(x, d, mode, key, index):
    """``round_div`` (any positive int64 divisor d) with the stochastic draw ``counter_u53(key, index)``:
    up with probability rem / d, from the draw modulo d."""
    q = x // d
    rem = x - q * d
    if rem == 0:
        return q
    if mode == ROUND_NEAREST_EVEN:
        twice = 2 * rem
        return q + 1 if twice > d or (twice == d and q % 2 != 0) else q
    if mode == ROUND_TOWARD_ZERO:
        return q + 1 if x < 0 else q
    return q + 1 if counter_u53(key, index) % d < rem else q


@njit(cache=True, inline="always")
def round_by(x, d, k, mode, s, state):
    """``round_div(x, d, mode)`` with the RNG state held in the scalar s: by shifts (``round_shift``) when
    k = log2(d) >= 0, else by division, drawing from ``state`` (the (1,) array, which holds s meanwhile).
    x: int64; returns (q, s)."""
    if k >= 0:
        return round_shift(x, k, mode, s)
    state[0] = s
    q = np.int64(round_div(x, d, mode, state))
    return q, state[0]


@njit(cache=True, inline="always")
def log2_exact(d):
    """k with 2**k == d, or -1 when d is not a positive power of two (d: int64, or a float, which compiles
    for the float reference's kernels)."""
    n = np.int64(d)
    if n <= 0 or n != d or (n & (n - 1)) != 0:
        return -1
    k = 0
    while (np.int64(1) << k) < n:
        k += 1
    return k


@njit(cache=True, inline="always")
def saturate(x, lo, hi, counters, slot):
    """clip(x, lo, hi); each clipped value adds 1 to counters[slot]."""
    if x > hi:
        counters[slot] += 1
        return hi
    if x < lo:
        counters[slot] += 1
        return lo
    return x


@njit(cache=True, inline="always")
def wrap(x, lo, hi, counters, slot):
    """Two's-complement wrap-around of x into [lo, hi] (hi - lo + 1 a power of two); counts wraps."""
    if x > hi or x < lo:
        counters[slot] += 1
        span = hi - lo + 1
        return (x - lo) % span + lo
    return x


@njit(cache=True)
def quantize_array(x, scale, lo, hi, mode, state, out, counters, slot):
    """out = saturate(round(x * scale)) elementwise; x: float32 or float64 (N,) (float32 widened exactly),
    scale a power of two, out int64 (N,); counters[slot] += the saturated values.

    Nearest-even uses numpy's rint; stochastic adds a uniform draw in [0, 1) before flooring (the serial
    stream, in index order). The two draw-free modes count in a local tally, so their loop vectorises.
    """
    clipped = 0
    for i in range(x.size):
        v = np.float64(x[i]) * scale
        if mode == ROUND_NEAREST_EVEN:
            r = np.rint(v)
        elif mode == ROUND_TOWARD_ZERO:
            r = np.trunc(v)
        else:
            r = np.floor(v + next_u53(state) / 9007199254740992.0)
        clipped += (r > hi) | (r < lo)
        out[i] = np.int64(min(max(r, lo), hi))
    counters[slot] += clipped
    return out


@njit(cache=True)
def block_requantise_(acc, lo, hi, out, counters, slot):
    """Block floating point, one exponent for a tensor: out = saturate(round(acc / 2**s)) (nearest-even), s >= 0
    the least shift whose rounding brings max|acc| within [lo, hi]; returns s. acc: int64 or integral float64
    (N,); out: int64 (N,); counters[slot] += the saturated values (none, as s is chosen; counted as every
    requantisation counts them)."""
    peak = np.int64(0)
    for i in range(acc.size):
        peak = max(peak, abs(np.int64(acc[i])))
    shift = np.int64(0)
    while shift < 62 and round_shift(peak, shift, ROUND_NEAREST_EVEN, np.uint64(0))[0] > min(hi, -lo):
        shift += 1
    for i in range(acc.size):
        q, _ = round_shift(np.int64(acc[i]), shift, ROUND_NEAREST_EVEN, np.uint64(0))
        out[i] = saturate(q, lo, hi, counters, slot)
    return shift


def affine_params(x_min: float, x_max: float, bits: int = 8, symmetric: bool = True) -> tuple[float, int]:
    """(scale, zero_point) for a signed ``bits``-bit affine format covering [x_min, x_max] (TFLite rules).

    Symmetric: zero_point 0 and range [-(2**(bits-1) - 1), 2**(bits-1) - 1]; asymmetric: the full range with
    a zero_point that represents 0.0 exactly.
    """
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
    if symmetric:
        bound = max(abs(x_min), abs(x_max)) or 1.0
        return bound / qmax, 0
    span = (x_max - x_min) or 1.0
    scale = span / (qmax - qmin)
    return scale, int(np.clip(round(qmin - x_min / scale), qmin, qmax))


@njit(cache=True)
def quantize_affine(x, scale, zero_point, qmin, qmax):
    """q = clip(rint(x / scale) + zero_point, qmin, qmax) as int64."""
    out = np.empty(x.shape, dtype=np.int64)
    for i in range(x.size):
        q = np.rint(x.flat[i] / scale) + zero_point
        out.flat[i] = np.int64(min(max(q, qmin), qmax))
    return out


@njit(cache=True)
def dequantize_affine(q, scale, zero_point):
    """x = (q - zero_point) * scale as float64."""
    out = np.empty(q.shape, dtype=np.float64)
    for i in range(q.size):
        out.flat[i] = (q.flat[i] - zero_point) * scale
    return out


def fixed_multiplier(factor: float, bits: int = 12) -> tuple[int, int]:
    """(M, k) with factor ~= M / 2**k and 2**(bits-1) <= M < 2**bits (the requantisation multiplier of
    integer-only inference, Jacob et al. 2018); factor 0 gives (0, 0)."""
    if factor <= 0:
        return 0, 0
    mantissa, exponent = math.frexp(factor)  # factor = mantissa * 2**exponent, 0.5 <= mantissa < 1
    m = int(round(mantissa * (1 << bits)))
    k = bits - int(exponent)
    if m == 1 << bits:
        m, k = m >> 1, k - 1
    return m, k
