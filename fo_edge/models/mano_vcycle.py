"""MANO's multipole attention as its authors structure it (``Multipole_Attention2D`` in their MANO.py, as the
issue that asked for it describes that code; the paper's Fig. 1 V-cycle): the default MANO in fo-edge.

On a grid x_0 = x (B, H, W, C) with ``levels`` levels and coarsening rate r:

  down:     x_l = D(x_{l-1})        one learned strided convolution Conv2d(C, C, k=r, s=r), shared by all levels
                                    (here a bias-free linear map of each r x r patch: the same operator)
  attend:   o_l = A(x_l)            one windowed self-attention module shared by all levels: LayerNorm, q/k/v,
                                    softmax within windows of w x w points of level l's own grid (stride s <= w;
                                    overlapping windows' outputs averaged where they fold back), output projection
  combine:  res = o_{L-1};  res = o_l + up(res) / (l + 1) for l = L-2, ..., 0
                                    up: one learned transposed convolution ConvTranspose2d(C, C, k=r, s=r), shared
                                    (here a bias-free linear map of each point to an r x r patch), the combination
                                    weights 1 / (l + 1) fixed

Grids that do not divide are zero-padded at the bottom and right before a coarsening and cropped after the
matching refinement; windows at the ragged edge are padded and the padding masked out of the softmax. With one
level and a window covering the grid it is LayerNorm, then full softmax attention, then the output projection
(tests/test_mano_vcycle.py). Levels: until the grid is 2 x 2 (1 + floor(log_r(min(H, W) / 2))). Every linear
map is a bias-free ``nn.Linear`` so the device path (rules.mano_binding) and the counters (accounting.mano_counts)
see all of them; the shared maps' parameters do not grow with the number of levels.

What could not be confirmed offline (the authors' repository is not in the stored sources): whether the
combination index l counts from the finest level (taken here) and whether the convolutions carry biases
(taken bias-free, as every fo-edge linear map).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["vcycle_levels", "PatchDown", "PatchUp", "WindowSelfAttention", "VCycleAttention", "VCycleBlock"]


def vcycle_levels(rows: int, cols: int, rate: int = 2) -> int:
    """Levels until the coarsest grid is 2 x 2 (or as close as the smaller side allows): 1 + floor(log_r(m / 2))."""
    side = min(rows, cols)
    return 1 + max(0, int(math.floor(math.log(max(side, 2) / 2, rate) + 1e-9)))


class PatchDown(torch.nn.Module):
    """Conv2d(C, C, k=r, s=r, bias=False) as a linear map of r x r patches: (B, H, W, C) -> (B, H/r, W/r, C)
    (H, W zero-padded to multiples of r first)."""

    def __init__(self, dim: int, rate: int):
        super().__init__()
        self.rate = rate
        self.proj = torch.nn.Linear(dim * rate * rate, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, cols, c = x.shape
        r = self.rate
        x = F.pad(x, (0, 0, 0, -cols % r, 0, -rows % r))
        g_r, g_c = x.shape[1] // r, x.shape[2] // r
        patches = x.reshape(b, g_r, r, g_c, r, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g_r, g_c, r * r * c)
        return self.proj(patches)


class PatchUp(torch.nn.Module):
    """ConvTranspose2d(C, C, k=r, s=r, bias=False) as a linear map of each point to an r x r patch:
    (B, h, w, C) -> (B, h r, w r, C)."""

    def __init__(self, dim: int, rate: int):
        super().__init__()
        self.rate = rate
        self.proj = torch.nn.Linear(dim, dim * rate * rate, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, cols, c = x.shape
        r = self.rate
        out = self.proj(x).reshape(b, rows, cols, r, r, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, rows * r, cols * r, c)


class WindowSelfAttention(torch.nn.Module):
    """LayerNorm, then softmax attention within w x w windows taken every ``stride`` points (clipped to the grid),
    overlapping outputs averaged, then the output projection: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, heads: int, window: int, stride: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.heads, self.window, self.stride = heads, window, stride or window
        self.norm = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)

    def tiling(self, rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(window, stride, padded grid) of a rows x cols grid: the window clipped to the grid, windows every
        stride points until the last covers the edge."""
        win = (min(self.window, rows), min(self.window, cols))
        step = (min(self.stride, win[0]), min(self.stride, win[1]))
        padded = tuple(((-(-(n - w) // s)) * s + w) for n, w, s in zip((rows, cols), win, step))
        return win, step, padded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, cols, dim = x.shape
        win, step, (p_r, p_c) = self.tiling(rows, cols)
        qkv = self.qkv(self.norm(x)).permute(0, 3, 1, 2)  # (B, 3C, H, W)
        qkv = F.pad(qkv, (0, p_c - cols, 0, p_r - rows))
        tiles = F.unfold(qkv, win, stride=step)  # (B, 3C n, L), n = win points
        n, count = win[0] * win[1], tiles.shape[-1]
        d = dim // self.heads
        q, k, v = tiles.reshape(b, 3, self.heads, d, n, count).permute(1, 0, 2, 5, 4, 3)  # (B, h, L, n, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if (p_r, p_c) != (rows, cols):
            valid = torch.zeros(1, 1, p_r, p_c, dtype=x.dtype, device=x.device)
            valid[..., :rows, :cols] = 1
            keys = F.unfold(valid, win, stride=step)[0].T > 0  # (L, n)
            scores = scores.masked_fill(~keys[None, None, :, None, :], float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v  # (B, h, L, n, d)
        cols_out = att.permute(0, 1, 4, 3, 2).reshape(b, dim * n, count)
        folded = F.fold(cols_out, (p_r, p_c), win, stride=step)
        if step != win:  # overlapping windows: each point's outputs averaged
            cover = F.fold(torch.ones(1, n, count, dtype=x.dtype, device=x.device), (p_r, p_c), win, stride=step)
            folded = folded / cover
        return self.out(folded[:, :, :rows, :cols].permute(0, 2, 3, 1))


class VCycleAttention(torch.nn.Module):
    """The V-cycle of the module docstring: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, heads: int, window: int, levels: int, rate: int = 2, stride: int | None = None):
        super().__init__()
        self.levels, self.rate, self.window = levels, rate, window
        self.attend = WindowSelfAttention(dim, heads, window, stride)
        self.down = PatchDown(dim, rate)
        self.up = PatchUp(dim, rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grids = [x]
        for _ in range(1, self.levels):
            grids.append(self.down(grids[-1]))
        outs = [self.attend(g) for g in grids]
        res = outs[-1]
        for l in range(self.levels - 2, -1, -1):
            rows, cols = outs[l].shape[1:3]
            res = outs[l] + self.up(res)[:, :rows, :cols] / (l + 1)
        return res


class VCycleBlock(torch.nn.Module):
    """x = attn(x) + x; x = ff(x) + x, ff = LayerNorm, Linear(C, 2C), GELU, Linear(2C, C) (the authors' block; the
    attention's LayerNorm is inside its window module)."""

    def __init__(self, dim: int, heads: int, window: int, levels: int, rate: int = 2, stride: int | None = None):
        super().__init__()
        self.attn = VCycleAttention(dim, heads, window, levels, rate, stride)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, 2 * dim, bias=False)
        self.fc2 = torch.nn.Linear(2 * dim, dim, bias=False)

    @property
    def norm1(self) -> torch.nn.LayerNorm:
        """The attention's LayerNorm (the training loops read the width from ``norm1``)."""
        return self.attn.attend.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(x) + x
        return self.fc2(F.gelu(self.fc1(self.norm2(x)))) + x
