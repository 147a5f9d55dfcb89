"""The authors' MANO structure (models.mano_vcycle) against plain references: full attention in the degenerate
one-level case, a window-by-window loop for ragged and overlapping tilings, shared maps whose parameters do not
grow with the levels, and the V-cycle's combination written out."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fo_edge.models.mano import MANOClassifier, MANOOperator
from fo_edge.models.mano_vcycle import VCycleAttention, WindowSelfAttention, vcycle_levels


def _reference_windows(module: WindowSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Every window taken one at a time (starts every stride, the last flush with the padded edge), softmax over
    the window's points that lie on the grid, outputs summed per point and divided by the windows covering it."""
    b, rows, cols, dim = x.shape
    (w_r, w_c), (s_r, s_c), (p_r, p_c) = module.tiling(rows, cols)
    heads, d = module.heads, dim // module.heads
    q, k, v = module.qkv(module.norm(x)).split(dim, dim=-1)
    total = torch.zeros(b, rows, cols, dim, dtype=x.dtype)
    cover = torch.zeros(rows, cols, dtype=x.dtype)
    for i0 in range(0, p_r - w_r + 1, s_r):
        for j0 in range(0, p_c - w_c + 1, s_c):
            pts = [(i, j) for i in range(i0, i0 + w_r) for j in range(j0, j0 + w_c) if i < rows and j < cols]
            idx_i = torch.tensor([p[0] for p in pts])
            idx_j = torch.tensor([p[1] for p in pts])
            qw, kw, vw = (t[:, idx_i, idx_j].reshape(b, len(pts), heads, d).transpose(1, 2) for t in (q, k, v))
            out = torch.softmax(qw @ kw.transpose(-1, -2) / math.sqrt(d), dim=-1) @ vw  # (B, h, n, d)
            total[:, idx_i, idx_j] += out.transpose(1, 2).reshape(b, len(pts), dim)
            cover[idx_i, idx_j] += 1
    return module.out(total / cover[None, :, :, None])


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), window=st.integers(1, 5), overlap=st.integers(0, 3),
       heads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_window_attention_equals_a_window_by_window_loop(rows, cols, window, overlap, heads, seed):
    torch.manual_seed(seed)
    module = WindowSelfAttention(4, heads, window, max(1, window - overlap)).double()
    x = torch.randn(2, rows, cols, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), _reference_windows(module, x), rtol=1e-10, atol=1e-10)


def test_one_level_with_a_window_over_the_grid_is_full_attention():
    torch.manual_seed(0)
    layer = VCycleAttention(8, 2, window=6, levels=1).double()
    x = torch.randn(3, 6, 6, 8, dtype=torch.float64)
    attend = layer.attend
    q, k, v = (t.reshape(3, 36, 2, 4).transpose(1, 2) for t in attend.qkv(attend.norm(x)).split(8, dim=-1))
    full = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    expected = attend.out(full.transpose(1, 2).reshape(3, 6, 6, 8))
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_the_v_cycle_combines_levels_from_the_coarsest_up_with_fixed_weights():
    torch.manual_seed(1)
    layer = VCycleAttention(4, 1, window=2, levels=3).double()
    x = torch.randn(2, 8, 8, 4, dtype=torch.float64)
    x1 = layer.down(x)
    x2 = layer.down(x1)
    o0, o1, o2 = layer.attend(x), layer.attend(x1), layer.attend(x2)
    expected = o0 + layer.up(o1 + layer.up(o2) / 2) / 1
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert x1.shape[1:3] == (4, 4) and x2.shape[1:3] == (2, 2)


def test_shared_maps_do_not_grow_with_the_levels():
    counts = {levels: sum(p.numel() for p in VCycleAttention(16, 2, 4, levels).parameters()) for levels in (1, 3, 6)}
    assert len(set(counts.values())) == 1
    small, large = MANOOperator(dim=16, size=16), MANOOperator(dim=16, size=64)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128])
def test_each_level_attends_a_bounded_window_and_reaches_a_two_by_two_grid(size):
    levels = vcycle_levels(size, size)
    layer = VCycleAttention(4, 1, window=4, levels=levels)
    grids, shapes = torch.zeros(1, size, size, 4), []
    with torch.no_grad():
        for _ in range(levels):
            shapes.append(grids.shape[1:3])
            (w_r, w_c), _, _ = layer.attend.tiling(*grids.shape[1:3])
            assert w_r * w_c <= 16  # keys per query at this level, whatever the grid
            grids = layer.down(grids)
    assert shapes[-1] == (2, 2) and levels == int(math.log2(size))


def test_ragged_grids_keep_their_shape_through_the_cycle():
    torch.manual_seed(2)
    model = MANOClassifier((1, 28, 28), 10, dim=8, depth=1, heads=2, patch=2, window=4)  # a 14 x 14 grid
    assert model(torch.rand(3, 784)).shape == (3, 10)
    layer = VCycleAttention(4, 2, window=3, levels=vcycle_levels(7, 5))
    assert layer(torch.randn(2, 7, 5, 4)).shape == (2, 7, 5, 4)
