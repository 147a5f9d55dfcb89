"""Convolution kernels on the device formats: circular im2col, the conv layer, orthogonal 2 x 2 pooling.

Feature maps are flat rows ``h: (B, C*H*W)`` in channel-major order (as models.conv keeps them). A conv layer
is a matrix product on unfolded patches: ``cols: (B*H*W, C_in*k*k)`` (circular padding, pad = k // 2) times
the kernel stored as ``W: (C_out, C_in*k*k)`` (torch's (C_out, C_in, k, k) flattened), so it reuses
:func:`fo_edge.kernels.linear.layer_forward_` and its accumulate / wrap / requantise / saturate / count
sequence unchanged, and the update correlation ``delta^T cols`` (the adjoint convolution) reuses
``update.outer_update_``. Counting follows layer_forward_'s traffic model per output pixel (each pixel re-reads its
patch and the kernel: no reuse, an upper bound on a naive device). ``cols`` is simulator workspace.

Pooling sums each 2 x 2 block and halves it (models.conv.pool2): ``round(sum / 2)`` with the forward
rounding, then saturation, on integer devices.
"""
from numba import njit

from .counters import NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SRAM_READ, SRAM_WRITE
from .fixed import round_div, saturate
from .linear import cached_layer_forward_, no_weight_cache

__all__ = ["im2col_", "rows_to_maps_", "maps_to_rows_", "pool2_", "conv_forward_"]


@njit(cache=True)
def im2col_(h, c, hgt, wid, k, cols):
    """cols[b*H*W + y*W + x, ci*k*k + dy*k + dx] = h[b, ci*H*W + ((y+dy-p) % H)*W + (x+dx-p) % W], p = k//2."""
    pad = k // 2
    hw = hgt * wid
    for b in range(h.shape[0]):
        for y in range(hgt):
            for x in range(wid):
                row = b * hw + y * wid + x
                for ci in range(c):
                    for dy in range(k):
                        src_y = (y + dy - pad) % hgt
                        for dx in range(k):
                            cols[row, (ci * k + dy) * k + dx] = h[b, ci * hw + src_y * wid + (x + dx - pad) % wid]


@njit(cache=True)
def rows_to_maps_(rows, batch, hw, out):
    """rows: (B*H*W, C) pixel-major -> out: (B, C*H*W) channel-major."""
    c = rows.shape[1]
    for b in range(batch):
        for p in range(hw):
            for ci in range(c):
                out[b, ci * hw + p] = rows[b * hw + p, ci]


@njit(cache=True)
def maps_to_rows_(maps, hw, rows):
    """The inverse of rows_to_maps_: maps (B, C*H*W) -> rows (B*H*W, C)."""
    c = rows.shape[1]
    for b in range(maps.shape[0]):
        for p in range(hw):
            for ci in range(c):
                rows[b * hw + p, ci] = maps[b, ci * hw + p]


@njit(cache=True)
def pool2_(h, c, hgt, wid, P, out, C, rng):
    """out (B, C*(H//2)*(W//2)) = 2 x 2 block sums of h (B, C*H*W) / 2 (rounded, saturated on devices)."""
    ho, wo = hgt // 2, wid // 2
    for b in range(h.shape[0]):
        for ci in range(c):
            base = ci * hgt * wid
            for y in range(ho):
                for x in range(wo):
                    i = base + 2 * y * wid + 2 * x
                    s = h[b, i] + h[b, i + 1] + h[b, i + wid] + h[b, i + wid + 1]
                    if P.quantized:
                        s = saturate(round_div(s, 2, P.fwd_round, rng), P.a_lo, P.a_hi, C, SATURATION)
                    else:
                        s = s / 2.0
                    out[b, (ci * ho + y) * wo + x] = s
                    if s != 0:
                        C[NEURON_ACTIVE] += 1
                    else:
                        C[NEURON_INACTIVE] += 1
    C[SRAM_READ] += h.shape[0] * c * ho * wo * 4 * P.a_bytes
    C[SRAM_WRITE] += h.shape[0] * c * ho * wo * P.a_bytes


@njit(cache=True)
def conv_forward_(hin, c_in, hgt, wid, k, w, off, c_out, w_one, rs, P, cols, pre_rows, h_rows, out, C, rng):
    """out (B, C_out*H*W) = sigma(requant(circular conv of hin (B, C_in*H*W) with W_l)).

    cols: (B*H*W, C_in*k*k) workspace (left holding hin's patches, which the update reuses); pre_rows, h_rows:
    (B*H*W, C_out) pre-activations and activities pixel-major. rs: (C_out,) per-channel exponent offsets
    (kernels.linear; zeros for a per-layer scale).
    """
    im2col_(hin, c_in, hgt, wid, k, cols)
    cached_layer_forward_(cols, w, off, c_out, c_in * k * k, w_one, rs, False, P, pre_rows, h_rows, C, rng,
                          *no_weight_cache())
    rows_to_maps_(h_rows, hin.shape[0], hgt * wid, out)
