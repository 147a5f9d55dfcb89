"""MANO: multipole attention (Colagrande et al., arXiv 2507.02748), its block, and two small models.

Two variants (``VARIANTS``): ``vcycle``, the default, is the authors' structure (models.mano_vcycle: learned
strided coarsening and transposed-convolution refinement, one window attention shared by all levels);
``pooled`` is fo-edge's first version, described here:

Multipole attention on a grid of H x W points (ALGORITHMS.md; the paper's abstract and reviews confirm the
scheme: near field at full resolution in local windows, far field between coarsened grids, level by level,
global receptive field, time and memory linear in N = H W). Per head, with q, k, v: (B, heads, H, W, d_h):

  level 0:  q_0, k_0, v_0 = q, k, v
  level l:  q_l, k_l, v_l = avgpool_2x(q_{l-1}, k_{l-1}, v_{l-1})          (ceil mode at odd sizes)
  at every level, softmax attention inside non-overlapping w x w windows of grid_l (a query attends the keys
  of its own window; windows at the ragged edge are padded and the padding masked), the result upsampled
  (nearest) to H x W;  out = sum_l alpha_l * up(attn_l), alpha_l learned per level and head (init 1).

A query therefore attends at most levels x w^2 keys whatever the grid size, and with enough levels the
coarsest window covers the whole grid (global receptive field); cost sum_l (N / 4^l) w^2 = O(N w^2). With one
level and one window covering the grid it is exactly full softmax attention (tests/test_mano.py). Which
pooling and upsampling the paper uses could not be read offline; average pooling and nearest upsampling are
the choices ALGORITHMS.md names.

Linear maps are bias-free ``nn.Linear`` modules (so device profiles can run them through the quantised kernels,
models.mano_device); LayerNorm, softmax and GELU stay float.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["multipole_attention", "full_attention", "window_attention", "levels_for", "attended_keys",
           "MANO_DEFAULTS", "parse_mano_spec", "VARIANTS", "make_block",
           "MultipoleAttention", "MANOBlock", "BlockReadout", "MANOClassifier", "MANOOperator"]


def levels_for(size: int, window: int) -> int:
    """Levels until one window covers a side of ``size`` points: 1 + ceil(log2(size / window))."""
    return 1 + max(0, math.ceil(math.log2(max(size, 1) / window)))


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Softmax attention within non-overlapping window x window tiles: q, k, v (B, h, H, W, d) -> (B, h, H, W, d)."""
    b, h, rows, cols, d = q.shape
    pr, pc = -rows % window, -cols % window
    if pr or pc:
        q, k, v = (F.pad(t, (0, 0, 0, pc, 0, pr)) for t in (q, k, v))
    nr, nc = (rows + pr) // window, (cols + pc) // window

    def tiles(t):  # (B, h, nr*w, nc*w, d) -> (B, h, nr*nc, w*w, d)
        t = t.reshape(b, h, nr, window, nc, window, d).permute(0, 1, 2, 4, 3, 5, 6)
        return t.reshape(b, h, nr * nc, window * window, d)

    scores = tiles(q) @ tiles(k).transpose(-1, -2) / math.sqrt(d)
    if pr or pc:
        valid = torch.zeros(rows + pr, cols + pc, dtype=torch.bool, device=q.device)
        valid[:rows, :cols] = True
        mask = valid.reshape(nr, window, nc, window).permute(0, 2, 1, 3).reshape(nr * nc, 1, window * window)
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ tiles(v)
    out = out.reshape(b, h, nr, nc, window, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    return out.reshape(b, h, nr * window, nc * window, d)[:, :, :rows, :cols]


def _pool(t: torch.Tensor) -> torch.Tensor:
    b, h, rows, cols, d = t.shape
    flat = t.permute(0, 1, 4, 2, 3).reshape(b, h * d, rows, cols)
    pooled = F.avg_pool2d(flat, 2, ceil_mode=True)
    return pooled.reshape(b, h, d, *pooled.shape[-2:]).permute(0, 1, 3, 4, 2)


def multipole_attention(q, k, v, window: int, levels: int, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v: (B, heads, H, W, d_h) -> (B, heads, H, W, d_h); alpha: (levels, heads) weights (None: all 1)."""
    rows, cols = q.shape[2], q.shape[3]
    out = torch.zeros_like(q)
    for level in range(levels):
        if level > 0:
            q, k, v = _pool(q), _pool(k), _pool(v)
        att = window_attention(q, k, v, window)
        scale = 2 ** level
        up = att.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)[:, :, :rows, :cols]
        weight = 1.0 if alpha is None else alpha[level].view(1, -1, 1, 1, 1)
        out = out + weight * up
    return out


def full_attention(q, k, v) -> torch.Tensor:
    """Standard softmax attention over all H W points (the quadratic reference): same shapes as above."""
    b, h, rows, cols, d = q.shape
    flat = [t.reshape(b, h, rows * cols, d) for t in (q, k, v)]
    scores = flat[0] @ flat[1].transpose(-1, -2) / math.sqrt(d)
    return (torch.softmax(scores, dim=-1) @ flat[2]).reshape(b, h, rows, cols, d)


def attended_keys(rows: int, cols: int, window: int, levels: int) -> tuple[int, int]:
    """(most keys any query attends, in total over the levels; points of the grid covered by the coarsest
    level's windows of one query), counted from the same tiling window_attention uses."""
    most, cover = 0, 0
    r, c = rows, cols
    for level in range(levels):
        if level > 0:
            r, c = -(-r // 2), -(-c // 2)
        most += min(window, r) * min(window, c)
        cover = min(window * 2 ** level, rows) * min(window * 2 ** level, cols)
    return most, cover


class MultipoleAttention(torch.nn.Module):
    """x: (B, H, W, C) -> (B, H, W, C); ``full=True`` swaps in full softmax attention (the reference)."""

    def __init__(self, dim: int, heads: int, window: int, levels: int, full: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.heads, self.window, self.levels, self.full = heads, window, levels, full
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)
        self.alpha = torch.nn.Parameter(torch.ones(levels, heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, cols, dim = x.shape
        qkv = self.qkv(x).reshape(b, rows, cols, 3, self.heads, dim // self.heads).permute(3, 0, 4, 1, 2, 5)
        if self.full:
            att = full_attention(qkv[0], qkv[1], qkv[2])
        else:
            att = multipole_attention(qkv[0], qkv[1], qkv[2], self.window, self.levels, self.alpha)
        return self.out(att.permute(0, 2, 3, 1, 4).reshape(b, rows, cols, dim))


class MANOBlock(torch.nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (GELU, hidden 2 x dim)."""

    def __init__(self, dim: int, heads: int, window: int, levels: int, full: bool = False):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = MultipoleAttention(dim, heads, window, levels, full)
        self.fc1 = torch.nn.Linear(dim, 2 * dim, bias=False)
        self.fc2 = torch.nn.Linear(2 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


#: the multipole attention MANO models use: ``vcycle`` the authors' (models.mano_vcycle), ``pooled`` fo-edge's
#: first version (MultipoleAttention above: average-pooled q/k/v, nearest upsampling, learned per-level weights)
VARIANTS = ("vcycle", "pooled")


def make_block(variant: str, dim: int, heads: int, window: int, grid: int, full: bool = False, stride: int = 0):
    """A MANO block of ``variant`` for a grid x grid map (``full``: full attention, pooled variant only;
    ``stride``: the vcycle windows' stride, 0 for the window)."""
    if variant == "vcycle":
        from .mano_vcycle import VCycleBlock, vcycle_levels

        levels = 1 if full else vcycle_levels(grid, grid)
        return VCycleBlock(dim, heads, grid if full else window, levels, stride=stride or None)
    if variant == "pooled":
        return MANOBlock(dim, heads, window, levels_for(grid, window), full)
    raise ValueError(f"unknown MANO variant {variant!r}; choose {' or '.join(VARIANTS)}")


class BlockReadout(torch.nn.Module):
    """A block's own readout for forward-only training (engine.mano_loop, block_loss "readout"): h (B, H, W, C)
    -> LayerNorm -> mean over the points -> bias-free linear (C -> classes): logits (B, classes) when
    ``pool``; else LayerNorm -> linear (C -> 1) per point: a field (B, H, W). C (classes + 2) parameters; not
    part of the model's forward (inference and export never run it)."""

    def __init__(self, dim: int, outputs: int, pool: bool):
        super().__init__()
        self.pool = pool
        self.norm = torch.nn.LayerNorm(dim)
        self.fc = torch.nn.Linear(dim, outputs, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        return self.fc(h.mean(dim=(1, 2))) if self.pool else self.fc(h)[..., 0]


def _readouts(readouts: bool, depth: int, dim: int, outputs: int, pool: bool):
    return torch.nn.ModuleList([BlockReadout(dim, outputs, pool) for _ in range(depth)]) if readouts else None


class MANOClassifier(torch.nn.Module):
    """Images (B, C*S*S flat) -> logits: patch embedding (a bias-free linear map of p x p patches), MANO
    blocks on the (S/p) x (S/p) grid, LayerNorm, mean over points, linear head.

    ``stem`` is the embedding, ``blocks`` the blocks, ``head`` (norm + pool + linear) the readout: the three
    stages forward-only training treats as local modules. ``readouts``: one BlockReadout per block (``readouts``,
    forward-only training's block_loss "readout"), outside the forward."""

    def __init__(self, image: tuple[int, int, int], classes: int, dim: int = 32, depth: int = 2, heads: int = 2,
                 patch: int = 2, window: int = 4, full: bool = False, variant: str = "vcycle", stride: int = 0,
                 readouts: bool = False):
        super().__init__()
        channels, size, _ = image
        self.image, self.patch = image, patch
        self.grid = size // patch
        self.embed = torch.nn.Linear(channels * patch * patch, dim, bias=False)
        self.pos = torch.nn.Parameter(torch.zeros(self.grid, self.grid, dim))
        self.blocks = torch.nn.ModuleList([make_block(variant, dim, heads, window, self.grid, full, stride)
                                           for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(dim)
        self.fc = torch.nn.Linear(dim, classes, bias=False)
        self.readouts = _readouts(readouts, depth, dim, classes, pool=True)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        c, s, _ = self.image
        p, g = self.patch, self.grid
        img = x.reshape(-1, c, s, s)[:, :, :g * p, :g * p]
        patches = img.reshape(-1, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, g, g, c * p * p)
        return self.embed(patches) + self.pos

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(h).mean(dim=(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class MANOOperator(torch.nn.Module):
    """Darcy coefficient a (B, n, n) -> solution u (B, n, n): lift (a, x, y) per point to ``dim``, MANO blocks on
    the n x n grid, project back per point (dim -> dim -> 1, GELU). Stages: stem, blocks, head; ``readouts`` as
    MANOClassifier's (per point)."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, window: int = 4, size: int = 32,
                 full: bool = False, variant: str = "vcycle", stride: int = 0, readouts: bool = False):
        super().__init__()
        self.lift = torch.nn.Linear(3, dim, bias=False)
        self.blocks = torch.nn.ModuleList([make_block(variant, dim, heads, window, size, full, stride)
                                           for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(dim)
        self.proj1 = torch.nn.Linear(dim, dim, bias=False)
        self.proj2 = torch.nn.Linear(dim, 1, bias=False)
        self.readouts = _readouts(readouts, depth, dim, 1, pool=False)

    def stem(self, a: torch.Tensor) -> torch.Tensor:
        n = a.shape[-1]
        grid = torch.linspace(0.0, 1.0, n, dtype=a.dtype, device=a.device)
        ys, xs = torch.meshgrid(grid, grid, indexing="ij")
        feats = torch.stack([a, xs.expand_as(a), ys.expand_as(a)], dim=-1)
        return self.lift(feats)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj2(F.gelu(self.proj1(self.norm(h))))[..., 0]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.stem(a)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


#: the sizes ``--model mano`` takes, and their defaults (``mano:dim=32,depth=2,heads=2,window=4,patch=2``)
MANO_DEFAULTS = {"dim": 32, "depth": 2, "heads": 2, "window": 4, "patch": 2, "stride": 0, "variant": "vcycle"}
#: the range of each size (inclusive); stride 0: the window (no overlap)
_MANO_RANGES = {"dim": (2, 1024), "depth": (1, 64), "heads": (1, 64), "window": (1, 64), "patch": (1, 64),
                "stride": (0, 64)}


def parse_mano_spec(spec: str) -> dict[str, int | str]:
    """``mano`` or ``mano:KEY=VALUE,...`` (keys of MANO_DEFAULTS) -> the full size dict; a malformed spec raises
    ValueError with a one-line reason."""
    if spec != "mano" and not spec.startswith("mano:"):
        raise ValueError(f"a MANO model is 'mano' or 'mano:dim=32,depth=2,...', not {spec!r}")
    sizes = dict(MANO_DEFAULTS)
    body = spec[len("mano:"):] if spec.startswith("mano:") else ""
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in MANO_DEFAULTS:
            raise ValueError(f"--model {spec}: {item!r} is not KEY=VALUE with KEY one of {', '.join(MANO_DEFAULTS)}")
        if key == "variant":
            if value not in VARIANTS:
                raise ValueError(f"--model {spec}: variant must be {' or '.join(VARIANTS)}, got {value!r}")
            sizes[key] = value
            continue
        try:
            sizes[key] = int(value)
        except ValueError:
            raise ValueError(f"--model {spec}: {key} must be a whole number, got {value!r}") from None
        low, high = _MANO_RANGES[key]
        if not low <= sizes[key] <= high:
            raise ValueError(f"--model {spec}: {key} must be in [{low}, {high}], got {sizes[key]}")
    if sizes["stride"] > sizes["window"]:
        raise ValueError(f"--model {spec}: stride {sizes['stride']} exceeds window {sizes['window']} (windows would "
                         f"skip points)")
    if sizes["stride"] and sizes["variant"] != "vcycle":
        raise ValueError(f"--model {spec}: stride applies to the vcycle variant's windows only")
    if sizes["dim"] % sizes["heads"]:
        raise ValueError(f"--model {spec}: dim {sizes['dim']} must be a multiple of heads {sizes['heads']}")
    return sizes
