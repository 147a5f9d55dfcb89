"""FOTON against autograd: exact for linear orthogonal nets (the paper's theorem), aligned otherwise; Björck."""
import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fo_edge.models import init_weights
from fo_edge.rules import bjorck_torch, compute_updates


def _cos(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def _orthogonal(d, n_layers, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_layers):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        out.append(q * np.sign(np.diag(r)))
    return out


def test_foton_equals_bp_for_linear_orthogonal_mse():
    weights = _orthogonal(16, 4, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 16))
    t = np.eye(16)[rng.integers(0, 16, 12)]
    bp = compute_updates("bp", weights, x, t, activation="identity", error="mse")
    foton = compute_updates("foton", weights, x, t, activation="identity", error="mse")
    for g_bp, g_fo in zip(bp, foton):
        assert g_fo.shape == g_bp.shape
        np.testing.assert_allclose(g_fo, g_bp, atol=1e-5, rtol=0)


def test_foton_matches_autograd_directly():
    """The BP reference itself is autograd: check it against torch.autograd on an nn.Sequential."""
    weights = _orthogonal(8, 3, seed=4)
    x = np.random.default_rng(5).standard_normal((6, 8))
    t = np.eye(8)[[0, 1, 2, 3, 4, 5]]
    net = torch.nn.Sequential(*[torch.nn.Linear(8, 8, bias=False, dtype=torch.float64) for _ in range(3)])
    for layer, w in zip(net, weights):
        layer.weight.data = torch.tensor(w)
    loss = 0.5 * ((net(torch.tensor(x)) - torch.tensor(t)) ** 2).sum() / 6
    loss.backward()
    foton = compute_updates("foton", weights, x, t, activation="identity", error="mse")
    for layer, g in zip(net, foton):
        np.testing.assert_allclose(g, layer.weight.grad.numpy(), atol=1e-5)


def test_foton_positive_cosine_with_bp_for_relu_and_tanh(small_batch):
    weights, x, t = small_batch
    for activation in ("relu", "tanh"):
        bp = compute_updates("bp", weights, x, t, activation=activation)
        foton = compute_updates("foton", weights, x, t, activation=activation)
        cosines = [_cos(a, b) for a, b in zip(bp, foton)]
        assert all(c > 0.1 for c in cosines), (activation, cosines)
        assert cosines[-1] > 0.999  # output layer: e^T h_{L-1} / B is exactly BP's


def test_compute_updates_is_pure(small_batch):
    weights, x, t = small_batch
    before = [w.copy() for w in weights]
    for rule in ("bp", "foton", "pepita", "ftp"):
        compute_updates(rule, weights, x, t)
    for w0, w1 in zip(before, weights):
        np.testing.assert_array_equal(w0, w1)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 24), cols=st.integers(2, 24), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(0.1, 10.0))
def test_bjorck_output_is_orthogonal(rows, cols, seed, scale):
    w = np.random.default_rng(seed).standard_normal((rows, cols)) * scale
    assume(np.linalg.cond(w) < 50)
    out = bjorck_torch(torch.tensor(w), iters=40).numpy()
    gram = out @ out.T if rows < cols else out.T @ out
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(2, 32), cols=st.integers(2, 32), seed=st.integers(0, 1000))
def test_bjorck_is_idempotent_on_orthogonal_input(rows, cols, seed):
    w = init_weights((cols, rows), seed=seed)[0].astype(np.float64)
    out = bjorck_torch(torch.tensor(w), iters=20).numpy()
    np.testing.assert_allclose(out, w, atol=1e-5)
