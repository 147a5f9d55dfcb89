"""Loihi's synaptic weight format as Lava's bit-accurate Dense applies it (lava/utils/weightutils.py), and the
landing of float weights and learned updates in it.

Lava, on a Dense process's first step:
  clip_weights:     mixed [-256, 255]; excitatory [0, 255]; inhibitory [-255, 0] (via -clip(-w, 0, 255))
  truncate_weights: k = 8 - num_weight_bits + [mixed]; w <- (w >> k) << k (floor), inhibitory -(((-w) >> k) << k)
so a weight is a multiple of 2**k in [lo, hi] (spec.LoihiWeightFormat). fo-edge keeps every stored weight in
that set: float weights are rounded to the nearest member (``quantize_to_format``), and learned updates are
rounded stochastically at the 2**k boundary of the widened register before the truncation (``to_steps`` /
``from_steps`` around the update kernel), so the truncation never has a remainder to floor. Rounding at the
9-bit LSB and then truncating would floor half of the odd results, a systematic -0.5 LSB drift per touched
synapse in mixed mode.
"""
from __future__ import annotations

import numpy as np

from .spec import LOIHI_MAX_WEIGHT_BITS, LoihiWeightFormat, SignMode

__all__ = ["clip_weights", "truncate_weights", "apply_format", "quantize_to_format", "to_steps", "from_steps"]


def clip_weights(weights: np.ndarray, fmt: LoihiWeightFormat) -> np.ndarray:
    """Lava's clip_weights(weights, sign_mode, num_bits=8): the sign mode's range of the 9-bit register."""
    w = np.asarray(weights).astype(np.int64)
    top = (1 << LOIHI_MAX_WEIGHT_BITS) - 1
    if fmt.sign_mode is SignMode.INHIBITORY:
        return -np.clip(-w, 0, top)
    return np.clip(w, -(1 << LOIHI_MAX_WEIGHT_BITS) if fmt.sign_mode is SignMode.MIXED else 0, top)


def truncate_weights(weights: np.ndarray, fmt: LoihiWeightFormat) -> np.ndarray:
    """Lava's truncate_weights(weights, sign_mode, num_weight_bits): zero the low ``fmt.truncate_bits`` bits."""
    w = np.asarray(weights).astype(np.int64)
    k = fmt.truncate_bits
    if fmt.sign_mode is SignMode.INHIBITORY:
        return -(((-w) >> k) << k)
    return (w >> k) << k


def apply_format(weights: np.ndarray, fmt: LoihiWeightFormat) -> np.ndarray:
    """What Lava's Dense makes of integer weights: truncate(clip(w))."""
    return truncate_weights(clip_weights(weights, fmt), fmt)


def quantize_to_format(real: np.ndarray, scale: float, fmt: LoihiWeightFormat) -> tuple[np.ndarray, int]:
    """Round real weights x ``scale`` to the nearest representable weight (ties to even steps); returns
    (weights int64, how many were clipped to the format's range)."""
    steps = np.rint(np.asarray(real, dtype=np.float64) * (scale / fmt.step))
    clipped = int(np.count_nonzero((steps < fmt.grid_lo) | (steps > fmt.grid_hi)))
    return np.clip(steps, fmt.grid_lo, fmt.grid_hi).astype(np.int64) * fmt.step, clipped


def to_steps(chunk: np.ndarray, fmt: LoihiWeightFormat) -> None:
    """In place: weights (multiples of ``fmt.step``) -> their step counts, the update kernel's mantissas."""
    chunk >>= fmt.truncate_bits


def from_steps(chunk: np.ndarray, fmt: LoihiWeightFormat) -> None:
    """In place: step counts -> weights; the inverse of :func:`to_steps`."""
    chunk <<= fmt.truncate_bits
