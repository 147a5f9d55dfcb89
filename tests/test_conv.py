"""Orthogonal conv nets: BCOP orthogonality, the FOTON conv update against autograd, the Numba conv passes
against the torch path (float) and an independent integer reference (device formats), determinism."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fo_edge.data import Dataset
from fo_edge.device import load_device
from fo_edge.engine.conv_loop import ConvTrainConfig, train_conv
from fo_edge.errors import ConfigError
from fo_edge.kernels.conv import pool2_
from fo_edge.kernels.counters import COUNTERS, FORWARD, new_counters
from fo_edge.kernels.rng import new_state
from fo_edge.models.conv import (_pad_circular, conv_adjoint, conv_circular, conv_forward_torch,
                                 init_conv_params, kernels_of, param_grads, parse_conv_spec, pool2, pool2_adjoint)
from fo_edge.rules.conv_binding import (ConvPasses, conv_to_device, dequantize, foton_conv_step, projection_buffer,
                                        refresh_conv_projection)
from fo_edge.rules.foton import FOTONConfig
from fo_edge.rules.foton_conv import bp_conv_update_torch, conv_projection_torch, foton_conv_update_torch
from fo_edge.rules.numba_binding import make_params, quantize_input


def _kernel(c_in, c_out, k, seed):
    spec = parse_conv_spec(f"c{c_out}-10", (c_in, 8, 8), kernel=k)
    return kernels_of(spec, init_conv_params(spec, seed))[0]


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 6), c_out=st.integers(1, 6), k=st.sampled_from([1, 3, 5]), h=st.integers(2, 9),
       w=st.integers(2, 9), seed=st.integers(0, 2**16))
def test_bcop_toeplitz_operator_is_orthogonal(c_in, c_out, k, h, w, seed):
    """Norm preserved to 1e-5 on random inputs: by the conv when it widens (isometry), by its adjoint when it
    narrows (rows orthonormal); square kernels both."""
    kernel = _kernel(c_in, c_out, k, seed)
    gen = torch.Generator().manual_seed(seed)
    if c_out >= c_in:
        x = torch.randn(4, c_in, h, w, dtype=torch.float64, generator=gen)
        ratio = conv_circular(x, kernel).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    else:
        y = torch.randn(4, c_out, h, w, dtype=torch.float64, generator=gen)
        ratio = conv_adjoint(y, kernel).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert torch.allclose(ratio, torch.ones(4, dtype=torch.float64), atol=1e-5)


def test_bcop_operator_matrix_is_orthogonal_and_adjoint_is_its_transpose():
    kernel = _kernel(4, 4, 3, seed=7)
    basis = torch.eye(4 * 5 * 6, dtype=torch.float64).reshape(-1, 4, 5, 6)
    a = conv_circular(basis, kernel).reshape(len(basis), -1).T  # the Toeplitz (circulant) matrix
    assert torch.allclose(a.T @ a, torch.eye(len(basis), dtype=torch.float64), atol=1e-10)
    adj = conv_adjoint(basis, kernel).reshape(len(basis), -1).T
    assert torch.allclose(adj, a.T, atol=1e-12)


def test_pool2_rows_are_orthonormal_and_adjoint_matches():
    basis = torch.eye(2 * 6 * 6, dtype=torch.float64).reshape(-1, 2, 6, 6)
    p = pool2(basis).reshape(len(basis), -1).T
    assert torch.allclose(p @ p.T, torch.eye(p.shape[0], dtype=torch.float64))
    q = torch.eye(p.shape[0], dtype=torch.float64).reshape(-1, 2, 3, 3)
    assert torch.allclose(pool2_adjoint(q, (6, 6)).reshape(len(q), -1).T, p.T)


@pytest.fixture
def linear_net():
    """A conv net whose every operator has orthonormal rows: square BCOP kernels, pool2, a wide dense W."""
    spec = parse_conv_spec("c4-c4-10", (4, 8, 8))
    kernels = kernels_of(spec, init_conv_params(spec, seed=5))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4 * 64, dtype=torch.float64, generator=gen)
    t = torch.eye(10, dtype=torch.float64)[torch.randint(0, 10, (6,), generator=gen)]
    return spec, kernels, x, t


def test_projection_is_the_nets_linear_map(linear_net):
    spec, kernels, x, _ = linear_net
    proj = conv_projection_torch(spec, kernels)
    assert torch.allclose(conv_forward_torch(spec, kernels, x, "identity"), x @ proj.T, atol=1e-12)


@pytest.mark.parametrize("error", ["ce", "mse"])
def test_linear_foton_conv_update_equals_autograd(linear_net, error):
    spec, kernels, x, t = linear_net
    foton = foton_conv_update_torch(spec, kernels, x, t, activation="identity", error=error, config=FOTONConfig())
    ws = [k.clone().requires_grad_(True) for k in kernels]
    y = conv_forward_torch(spec, ws, x, "identity")
    loss = torch.nn.functional.cross_entropy(y, t.argmax(1)) if error == "ce" else \
        0.5 * ((y - t) ** 2).sum() / len(x)
    for g, ref in zip(foton, torch.autograd.grad(loss, ws)):
        assert g.shape == ref.shape
        assert torch.allclose(g, ref, atol=1e-5 * float(ref.abs().max()))
        cos = torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0)
        assert abs(float(cos) - 1.0) < 1e-5


def test_param_grads_is_the_chain_rule_through_bcop():
    spec = parse_conv_spec("c4-c6-10", (2, 8, 8))
    params = init_conv_params(spec, seed=2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 128, dtype=torch.float64, generator=gen)
    t = torch.eye(10, dtype=torch.float64)[torch.arange(5)]
    kernels = kernels_of(spec, params)
    mapped = param_grads(spec, params, bp_conv_update_torch(spec, kernels, x, t, activation="tanh", error="ce"))
    leaves = [{k: v.clone().requires_grad_(True) for k, v in p.items()} for p in params]
    y = conv_forward_torch(spec, kernels_of(spec, leaves), x, "tanh")
    loss = torch.nn.functional.cross_entropy(y, t.argmax(1))
    flat = [v for p in leaves for v in p.values()]
    for got, ref in zip([v for p in mapped for v in p.values()], torch.autograd.grad(loss, flat)):
        assert torch.allclose(got, ref, atol=1e-12)


def _device_step(spec, kernels, profile_name, activation, x, t):
    profile = load_device(profile_name)
    net = conv_to_device(spec, [k.numpy() for k in kernels], profile)
    params = make_params(profile, activation, "ce", collect=True)
    passes = ConvPasses(net, 8)
    counters, rng = new_counters(spec.n_layers), new_state(0)
    proj = projection_buffer(net, profile)
    refresh_conv_projection(net, proj, profile, counters)
    x_dev = quantize_input(x, profile, passes.x, counters[FORWARD, spec.n_layers], rng)
    fracs = (0, 0) if profile.is_float else (profile.activation.frac_bits, profile.error.frac_bits)
    grads = foton_conv_step(passes, profile, params, x_dev, t, proj, counters, rng, fracs)
    return net, passes, grads, counters


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_numba_float_conv_step_equals_torch(digits, activation):
    spec = parse_conv_spec("c4-c6-10", digits.image_shape)
    kernels = kernels_of(spec, init_conv_params(spec, seed=4))
    x = digits.x_train[:7].astype(np.float64)
    t = np.eye(10)[digits.y_train[:7]]
    _, _, grads, counters = _device_step(spec, kernels, "gpu-fp32", activation, x, t)
    ref = foton_conv_update_torch(spec, kernels, torch.tensor(x), torch.tensor(t), activation=activation,
                                  error="ce", config=FOTONConfig())
    for g, r in zip(grads, ref):
        assert np.allclose(g, r.numpy(), atol=1e-12)
    # dense MACs of one clean pass = per sample: conv1 64*4*1*9 + conv2 16*6*4*9 + dense 24*10
    assert counters[FORWARD, :, COUNTERS.index("macs_dense")].sum() == 7 * (64 * 36 + 16 * 216 + 240)


def _reference_forward_int(spec, net, profile, x_dev, activation):
    """An independent integer forward: torch conv2d on mantissas in float64 (exact sums), nearest-even
    division by each output channel's scale (the layer's w_one, times 2**row_shift on per-channel profiles),
    saturation, integer relu; pool = nearest-even (sum / 2)."""
    a = profile.activation
    weights = dequantize(net)
    h = torch.tensor(x_dev, dtype=torch.float64).reshape((len(x_dev),) + spec.layer_shapes()[0])
    for l, real in enumerate(weights):
        one = net.real_scale(l)[:, 0]  # (C_out,)
        conv = l < len(weights) - 1
        mant = torch.tensor(np.rint(real * one.reshape((-1,) + (1,) * (real.ndim - 1))))
        if l > 0:
            h = torch.clamp(torch.round(torch.nn.functional.avg_pool2d(h, 2) * 4 / 2), a.qmin, a.qmax)
        if conv:
            acc = torch.nn.functional.conv2d(_pad_circular(h, spec.kernel // 2), mant)
        else:
            acc = h.reshape(len(h), -1) @ mant.T
        scale = torch.tensor(one).reshape((1, -1, 1, 1) if conv else (1, -1))
        h = torch.clamp(torch.round(acc / scale), a.qmin, a.qmax)  # torch.round is half-to-even
        if l < len(weights) - 1 and activation == "relu":
            h = torch.relu(h)
    return h.numpy()


@pytest.mark.parametrize("profile_name", ["mcu-int8", "fpga-fixed16"])
def test_numba_integer_conv_forward_is_bit_exact(digits, profile_name):
    spec = parse_conv_spec("c4-c6-10", digits.image_shape)
    kernels = kernels_of(spec, init_conv_params(spec, seed=4))
    profile = load_device(profile_name)
    net = conv_to_device(spec, [k.numpy() for k in kernels], profile)
    params = make_params(profile, "relu", "ce")
    passes = ConvPasses(net, 8)
    counters, rng = new_counters(spec.n_layers), new_state(0)
    x_dev = quantize_input(digits.x_train[:8].astype(np.float64), profile, passes.x, counters[FORWARD, 3], rng)
    y = passes.forward("c", x_dev, params, counters, FORWARD, rng)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, _reference_forward_int(spec, net, profile, x_dev, "relu"))
    assert np.abs(y).max() > 0


def test_pool_kernel_rounds_half_to_even_and_saturates():
    profile = load_device("mcu-int8")
    params = make_params(profile, "identity", "ce")
    h = np.array([[1, 0, 0, 0, 3, 0, 0, 0, 127, 127, 127, 127, 5, 0, 0, 0]], dtype=np.int64)  # 4 maps of 2x2
    out = np.zeros((1, 4), dtype=np.int64)
    row = np.zeros(len(COUNTERS), dtype=np.int64)
    pool2_(h, 4, 2, 2, params, out, row, new_state(0))
    assert out.tolist() == [[0, 2, 127, 2]]  # 1/2 -> 0, 3/2 -> 2, 254 saturates, 5/2 -> 2
    assert row[COUNTERS.index("saturation_events")] == 1


def _tiny(digits, n=240):
    return Dataset("digits", digits.x_train[:n], digits.y_train[:n], digits.x_test[:100], digits.y_test[:100],
                   digits.image_shape, 10)


def test_integer_conv_training_is_deterministic(digits):
    spec = parse_conv_spec("c4-c8-10", digits.image_shape)
    config = ConvTrainConfig(backend="numba", lr=0.2, epochs=1, batch_size=16, bjorck_iters=5)
    runs = [train_conv(spec, _tiny(digits), config, load_device("mcu-int8")) for _ in range(2)]
    for a, b in zip(runs[0].params, runs[1].params):
        for key in a:
            assert torch.equal(a[key], b[key])
    np.testing.assert_array_equal(runs[0].counters, runs[1].counters)
    assert runs[0].counters[:, :, COUNTERS.index("weight_writes")].sum() > 0


@pytest.mark.parametrize("rule,backend", [("foton", "torch"), ("bp", "torch"), ("foton", "numba")])
def test_conv_training_learns(digits, rule, backend):
    """One conv layer on 8x8 digits, one epoch: well above chance (10 %) on every path."""
    spec = parse_conv_spec("c8-10", digits.image_shape)
    config = ConvTrainConfig(rule=rule, backend=backend, lr=0.2, temperature=0.25, batch_size=16, bjorck_iters=5)
    run = train_conv(spec, digits, config, load_device("mcu-int8") if backend == "numba" else None)
    assert run.history[-1]["test_accuracy"] > 0.6


def test_conv_errors_are_config_errors(digits):
    with pytest.raises(ConfigError, match="malformed conv model"):
        parse_conv_spec("c16-x-10", (28, 28))
    with pytest.raises(ConfigError, match="below 1 pixel"):
        parse_conv_spec("c4-c4-c4-c4-10", (8, 8))
    with pytest.raises(ConfigError, match="Numba conv path runs FOTON"):
        train_conv(parse_conv_spec("c4-10", (8, 8)), _tiny(digits), ConvTrainConfig(rule="bp", backend="numba"),
                   load_device("mcu-int8"))
    spec = parse_conv_spec("c4-10", (8, 8))
    with pytest.raises(ConfigError, match="digital profiles only"):
        conv_to_device(spec, kernels_of(spec, init_conv_params(spec)), load_device("memristor-rram"))


@pytest.mark.parametrize("rule, backend, device", [("foton", "numba", "mcu-int8"), ("foton", "numba", "fpga-fixed16"),
                                                   ("foton", "torch", None), ("bp", "torch", None)])
def test_a_conv_run_resumes_from_a_mid_epoch_checkpoint(digits, rule, backend, device):
    """Resumed from a mid-epoch checkpoint of epoch 2 between two refreshes of F, a conv run ends with the
    uninterrupted run's parameters, history and counters, bit for bit; the device store, its exponents, F, the
    RNG and the counters (on torch, its meter's) travel in the checkpoint."""
    spec = parse_conv_spec("c4-c8-10", digits.image_shape)
    config = ConvTrainConfig(rule=rule, backend=backend, lr=0.2, epochs=2, batch_size=16, bjorck_iters=5,
                             refresh_every=3)
    profile = load_device(device) if device else None
    from fo_edge.accounting.conv_float_counts import ConvFloatMeter

    meters = [ConvFloatMeter(spec, load_device("gpu-fp32"), rule) for _ in range(2)] if backend == "torch" else \
        [None, None]
    states = []
    full = train_conv(spec, _tiny(digits), config, profile, checkpoint_every=4, on_checkpoint=states.append,
                      meter=meters[0])
    middle = next(s for s in states if s["position"][0] == 1 and s["position"][1] > 0 and s["position"][2] % 3)
    resumed = train_conv(spec, _tiny(digits), config, profile, resume=middle, meter=meters[1])
    for a, b in zip(full.params, resumed.params):
        for key in a:
            assert torch.equal(a[key], b[key])
    assert full.history == [dict(h, seconds=f["seconds"], samples_per_s=f["samples_per_s"])
                            for h, f in zip(resumed.history, full.history)]
    assert (full.trained, full.inferred) == (resumed.trained, resumed.inferred) == (480, 200)
    np.testing.assert_array_equal(full.counters, resumed.counters)  # the torch path's meter travels too
    if backend == "numba":
        assert middle["device_w"].size and middle["rng"].size


def test_a_conv_checkpoint_of_another_model_is_refused(digits):
    from fo_edge.errors import RunError

    states = []
    train_conv(parse_conv_spec("c4-10", digits.image_shape), _tiny(digits), ConvTrainConfig(epochs=1, batch_size=16),
               checkpoint_every=5, on_checkpoint=states.append)
    with pytest.raises(RunError, match="does not match this conv run"):
        train_conv(parse_conv_spec("c8-10", digits.image_shape), _tiny(digits), ConvTrainConfig(batch_size=16),
                   resume=states[0])


def test_an_exploding_conv_run_stops_and_is_recorded(tmp_path):
    """BP on a conv net at a huge lr without re-orthogonalisation: the health check stops it naming the layer and
    step, the run is recorded as stopped with its weights, and energy-report reads it."""
    import fo_edge
    from fo_edge.errors import RunError
    from fo_edge.runs import read_run

    out = tmp_path / "boom"
    with pytest.raises(RunError, match="numeric health: layer 1 at step .*exploding"):
        fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="c4-10", lr=1e3,
                         rule_options={"ortho_every": 0}, out=str(out))
    record = read_run(out)
    assert record["status"] == "stopped" and record["stop"]["kind"] == "exploding"
    assert (out / "weights.npz").exists()
    from fo_edge.api import energy_report

    assert energy_report([out])[0]["status"] == "stopped"


def test_a_conv_run_accounts_device_memory_and_refuses_what_cannot_fit(tmp_path):
    """FOTON's c4-c8-10 on MNIST holds six (B, 4 x 28 x 28) maps: at batch 32 they exceed mcu-int8's 256 KiB and
    the run is refused before anything is written, naming the buffer; at batch 8 it runs and records the plan."""
    import fo_edge
    from fo_edge.errors import DeviceMemoryError

    common = dict(rule="foton", device="mcu-int8", model="c4-c8-10", limit=64)
    with pytest.raises(DeviceMemoryError, match="does not fit in device SRAM: clean_a"):
        fo_edge.simulate(batch_size=32, out=str(tmp_path / "big"), **common)
    assert not (tmp_path / "big").exists()
    run = fo_edge.simulate(batch_size=8, out=str(tmp_path / "ok"), **common)
    memory = run.record["memory"]
    assert memory == run.memory and 0 < memory["peak_bytes"] <= memory["capacity_bytes"] == 256 * 1024
    buffers = memory["buffers"]
    assert buffers["weights"]["bytes"] == 4 * 1 * 9 + 8 * 4 * 9 + 10 * 8 * 7 * 7  # int8: one byte a weight
    assert buffers["clean_a"]["bytes"] == 8 * 4 * 28 * 28  # the batch's widest map, int8 activations
    assert buffers["projection_F"]["bytes"] == 10 * 784 * 2  # F in the 16-bit projection format
    assert "stored_activations" not in buffers


def test_bp_on_conv_nets_stores_every_map():
    from fo_edge.rules.conv_memory import plan_conv_memory

    spec = parse_conv_spec("c4-c8-10", (1, 28, 28))
    profile = load_device("gpu-fp32")
    bp = plan_conv_memory(spec, profile, "bp", 16).report()
    foton = plan_conv_memory(spec, profile, "foton", 16).report()
    assert bp["buffers"]["stored_activations"]["bytes"] == 16 * (4 * 28 * 28 + 8 * 14 * 14) * 4
    assert "stored_activations" not in foton["buffers"] and "projection_F" not in bp["buffers"]
