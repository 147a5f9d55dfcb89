"""An error through a layer's transpose, ``delta W``: the product of BP's backward pass, in the device's formats.

Layout, dtypes, ``P`` and ``C`` as in :mod:`fo_edge.kernels.linear`. W_l: (d_out, d_in) at ``w[off:]``, row i
scaled by ``w_one * 2**rs[i]`` (per-channel exponents; all rs zero for per-layer scales). delta: (B, d_out)
error mantissas. The rows sit at different exponents, so delta's column i is shifted left by ``top - rs[i]``
(``top = max rs``) to put every row at the finest LSB before the sum: then ``sum_i aligned[b, i] W[i, j]`` is
``(delta W_real)[b, j] * 2**(log2(w_one) + top)`` exactly (kernels.linear.exact_matmul), in delta's LSBs.

:func:`transpose_sums_` gives those sums (MLP BP's backward pass, kernels.steps.bp_step_, goes on to multiply them
by the activation's derivative); :func:`error_through_` requantises them into the error format with a block
exponent chosen from their peak (block floating point, one exponent per tensor: the error entering a MANO map
comes from float host operations, with no fixed range), for rules.mano_device_training.
"""
import numpy as np
from numba import njit

from .counters import MACS_DENSE, MACS_EFF, SATURATION, SRAM_READ, SRAM_WRITE, SYN_EVENTS
from .fixed import block_requantise_, log2_exact
from .linear import effective_macs_transposed, exact_matmul, magnitude

__all__ = ["transpose_sums_", "charge_transpose_", "error_through_"]


@njit(cache=True)
def transpose_sums_(delta, w, off, d_out, d_in, rs, P):
    """(back, top): back (B, d_in) float64, the exact sums of delta's columns aligned to the finest row times W
    (module docstring); top = max rs (0 for per-layer scales and float profiles)."""
    batch = delta.shape[0]
    top = rs.max() if rs.size > 0 else 0
    bound = magnitude(P.e_lo, P.e_hi) * magnitude(P.w_lo, P.w_hi) * d_out * 2.0 ** top
    aligned = delta
    if top > 0:
        aligned = delta.copy()
        for b in range(batch):
            for i in range(d_out):
                aligned[b, i] = delta[b, i] * (np.int64(1) << (top - rs[i]))
    mat = w[off:off + d_out * d_in].reshape((d_out, d_in))
    return exact_matmul(aligned, mat.T.copy(), bound), top


@njit(cache=True)
def charge_transpose_(delta, w, off, d_out, d_in, P, cb):
    """A backward product's counters on row ``cb``: dense and effective MACs (nonzero delta x nonzero W),
    synaptic events, W read once per sample, delta read, the result written in the error format."""
    batch = delta.shape[0]
    effective = effective_macs_transposed(delta, w, off, d_out, d_in)
    cb[MACS_DENSE] += batch * d_in * d_out
    cb[MACS_EFF] += effective
    cb[SYN_EVENTS] += effective
    cb[SRAM_READ] += batch * (d_in * d_out * P.w_bytes + d_out * P.e_bytes)
    cb[SRAM_WRITE] += batch * d_in * P.e_bytes


@njit(cache=True)
def error_through_(delta, w, off, d_out, d_in, rs, w_one, P, out, cb):
    """out (B, d_in) = delta W in the error format, with a block exponent; returns the exponent change k:
    out is in LSBs of 2**-(e + k) when delta is in LSBs of 2**-e.

    Integer: the exact sums (``transpose_sums_``, in LSBs of 2**-(e + log2(w_one) + top)) are requantised into
    the error format with a block exponent (kernels.fixed.block_requantise_: shifted right by the least s >= 0
    that brings their peak within the format, nearest-even); k = log2(w_one) + top - s. Float:
    out = delta (W / w_one) exactly, k = 0. Charges the product (``charge_transpose_``) to ``cb``.
    """
    back, top = transpose_sums_(delta, w, off, d_out, d_in, rs, P)
    charge_transpose_(delta, w, off, d_out, d_in, P, cb)
    batch = delta.shape[0]
    if not P.quantized:
        for b in range(batch):
            for j in range(d_in):
                out[b, j] = back[b, j] / w_one
        return 0
    shift = block_requantise_(back.ravel(), P.e_lo, P.e_hi, out.reshape(-1), cb, SATURATION)
    return log2_exact(w_one) + top - shift
