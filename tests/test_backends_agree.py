"""The Numba kernels against the PyTorch reference: float updates to 1e-5 for every rule, and the integer
forward layer against an integer matmul done by torch with the same rounding."""
import numpy as np
import pytest
import torch

from fo_edge.device import load_device
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.counters import COUNTERS
from fo_edge.models import init_weights
from fo_edge.rules import compute_updates
from fo_edge.rules.numba_binding import make_params, to_device
from fo_edge.kernels.linear import layer_forward_


@pytest.mark.parametrize("rule", ["bp", "foton", "pepita", "ftp"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("error", ["ce", "mse"])
def test_numba_float_updates_equal_torch(rule, activation, error, small_batch):
    weights, x, t = small_batch
    ref = compute_updates(rule, weights, x, t, activation=activation, error=error, seed=5) \
        if rule in ("pepita", "ftp") else compute_updates(rule, weights, x, t, activation=activation, error=error)
    kwargs = {"seed": 5} if rule in ("pepita", "ftp") else {}
    out = compute_updates(rule, weights, x, t, activation=activation, error=error, backend="numba", **kwargs)
    for g_ref, g_nb in zip(ref, out):
        assert g_nb.shape == g_ref.shape
        np.testing.assert_allclose(g_nb, g_ref, atol=1e-5, rtol=0)


def test_numba_float32_inputs_agree_with_torch_float32(small_batch):
    weights, x, t = small_batch
    w32 = [w.astype(np.float32) for w in weights]
    ref = compute_updates("foton", w32, x.astype(np.float32), t.astype(np.float32))
    out = compute_updates("foton", w32, x.astype(np.float32), t.astype(np.float32), backend="numba")
    for a, b in zip(ref, out):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_ftp_label_target_agrees(small_batch):
    weights, x, t = small_batch
    ref = compute_updates("ftp", weights, x, t, target_mode="label")
    out = compute_updates("ftp", weights, x, t, target_mode="label", backend="numba")
    for a, b in zip(ref, out):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_integer_forward_layer_equals_torch_integer_matmul():
    """mcu-int8: pre = saturate(round_half_even((h @ W^T) / 2**w_frac)); torch int64 matmul + the same rounding."""
    profile = load_device("mcu-int8")
    weights = init_weights((64, 32), seed=2)
    net = to_device(weights, profile)
    rng = np.random.default_rng(0)
    h = rng.integers(-128, 128, size=(16, 64)).astype(np.int64)
    params = make_params(profile, "relu", "ce")
    pre = np.zeros((16, 32), dtype=np.int64)
    out = np.zeros((16, 32), dtype=np.int64)
    counters = np.zeros(len(COUNTERS), dtype=np.int64)
    layer_forward_(h, net.w, 0, 32, 64, net.w_one[0], False, params, pre, out, counters, new_state(0))
    w_int = torch.tensor(net.w.reshape(32, 64).astype(np.int64))  # the store is int8
    acc = torch.tensor(h) @ w_int.T  # exact int64
    scaled = torch.round(acc.double() / float(net.w_one[0]))  # torch.round is half-to-even
    expected = scaled.clamp(-128, 127).to(torch.int64).numpy()
    np.testing.assert_array_equal(pre, expected)
    np.testing.assert_array_equal(out, np.maximum(expected, 0))
    assert counters[COUNTERS.index("saturation_events")] == int(((scaled < -128) | (scaled > 127)).sum())
    assert counters[COUNTERS.index("macs_dense")] == 16 * 32 * 64


@pytest.mark.parametrize("target", ["difference", "error_preactivation"])
def test_fixed16_ftp_targets_follow_the_float_reference(small_batch, target):
    # the integer kernels' FTP estimates (Q7.8 activations, 16-bit weights) point where the float reference does
    from fo_edge.accounting.memory import MemoryArena
    from fo_edge.device import load_device
    from fo_edge.kernels.counters import FORWARD, new_counters
    from fo_edge.kernels.rng import new_state
    from fo_edge.rules import rule_config
    from fo_edge.rules.numba_binding import (allocate_buffers, fill_fixed_projection, from_device, ftp_kernel_options,
                                             make_params, quantize_input, run_step, to_device)

    weights, x, t = small_batch
    profile = load_device("fpga-fixed16")
    config = rule_config("ftp", target=target)
    net = to_device([w.astype(np.float32) for w in weights], profile)
    bufs = allocate_buffers(MemoryArena(2**40), profile, net.dims, len(x), "ftp", "stream", False)
    fill_fixed_projection(bufs, profile, "ftp", net.dims, config)
    params = make_params(profile, "tanh", "ce", 1.0, collect=True, **ftp_kernel_options(config))
    counters, rng = new_counters(net.n_layers), new_state(0)
    x_dev = quantize_input(x, profile, bufs.x, counters[FORWARD, net.n_layers], rng)
    g_out = np.zeros(net.w.size)
    run_step("ftp", net, bufs, profile, params, x_dev, t, 1.0, "stream", counters, rng, g_out)
    ref = compute_updates("ftp", from_device(net), x, t, activation="tanh", error="ce", target=target)
    for l, g in enumerate(ref):
        ours = g_out[net.offs[l]:net.offs[l + 1]]
        cosine = ours @ g.ravel() / (np.linalg.norm(ours) * np.linalg.norm(g) + 1e-30)
        assert cosine > 0.99, (l, cosine)


@pytest.mark.parametrize("target", ["difference", "error_preactivation"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_ftp_local_output_loss_equals_torch(small_batch, target, activation):
    """FTP's output_loss=local (g_L = (y - W_L tau_{L-1})^T h_{L-1} / B) on the Numba float path equals torch;
    the hidden layers' updates are unchanged by it."""
    weights, x, t = small_batch
    opts = {"seed": 5, "target": target, "output_loss": "local"}
    ref = compute_updates("ftp", weights, x, t, activation=activation, error="ce", **opts)
    out = compute_updates("ftp", weights, x, t, activation=activation, error="ce", backend="numba", **opts)
    plain = compute_updates("ftp", weights, x, t, activation=activation, error="ce", seed=5, target=target)
    for g_ref, g_nb in zip(ref, out):
        np.testing.assert_allclose(g_nb, g_ref, atol=1e-5, rtol=0)
    for g_local, g_plain in zip(ref[:-1], plain[:-1]):
        np.testing.assert_array_equal(g_local.numpy() if hasattr(g_local, "numpy") else g_local,
                                      g_plain.numpy() if hasattr(g_plain, "numpy") else g_plain)
    assert not np.allclose(np.asarray(ref[-1]), np.asarray(plain[-1]))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("error", ["ce", "mse"])
def test_pepita_modulated_output_error_equals_torch(small_batch, activation, error):
    """PEPITA's output_error=modulated (g_L = e_mod^T h^mod_{L-1} / B, e_mod the modulated pass's output
    error) on the Numba float path equals torch; the hidden layers' updates do not change."""
    weights, x, t = small_batch
    ref = compute_updates("pepita", weights, x, t, activation=activation, error=error, seed=5,
                          output_error="modulated")
    out = compute_updates("pepita", weights, x, t, activation=activation, error=error, seed=5,
                          output_error="modulated", backend="numba")
    clean = compute_updates("pepita", weights, x, t, activation=activation, error=error, seed=5, backend="numba")
    for g_ref, g_nb in zip(ref, out):
        np.testing.assert_allclose(g_nb, g_ref, atol=1e-5, rtol=0)
    for g_mod, g_clean in zip(out[:-1], clean[:-1]):
        np.testing.assert_array_equal(g_mod, g_clean)
    assert not np.allclose(out[-1], clean[-1])
