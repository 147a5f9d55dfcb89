"""Per-channel weight scales (``weight_scale = "per-channel"``): one power-of-two exponent per output row,
honoured by the forward, the update, Björck, FOTON's F, BP's backward, checkpoints and the int8 ONNX export."""
import re
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fo_edge
from fo_edge.accounting.memory import MemoryArena
from fo_edge.device import parse_device
from fo_edge.errors import DeviceProfileError
from fo_edge.export import export_onnx
from fo_edge.kernels.counters import new_counters
from fo_edge.kernels.linear import cached_layer_forward_, no_weight_cache
from fo_edge.kernels.orth import projection_rows_
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.update import outer_update_
from fo_edge.rules.numba_binding import from_device, from_stored, make_params, to_device
from fo_edge.runs import load_weights

MCU = (resources.files("fo_edge") / "profiles" / "mcu-int8.toml").read_text()


def mcu_text(scale: str, headroom: int = 1) -> str:
    """devices/mcu-int8.toml with ``weight_scale = scale`` and ``headroom`` weight_frac_bits (the hand-worked
    numbers below take one headroom bit)."""
    text, n = re.subn(r'^weight_scale = "[^"]*"', f'weight_scale = "{scale}"', MCU, flags=re.M)
    text, m = re.subn(r"^(weight_frac_bits = \{ value = )\d+,", rf"\g<1>{headroom},", text, flags=re.M)
    assert n == m == 1
    return text


def per_channel_text() -> str:
    return mcu_text("per-channel")


def per_layer():
    return parse_device(mcu_text("per-layer"), "mcu-int8-per-layer")


@pytest.fixture(scope="module")
def profile():
    return parse_device(per_channel_text(), "mcu-int8-pc")


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pc") / "mcu-int8-pc.toml"
    path.write_text(per_channel_text().replace('id = "mcu-int8"', 'id = "mcu-int8-pc"'))
    return path


def test_each_row_gets_the_exponent_of_its_own_peak(profile):
    # peaks 0.9, 0.2, 0.03: floor(log2(127 / peak)) - 1 headroom bit = 6, 8, 11
    w = np.array([[0.9, -0.1], [0.2, 0.05], [-0.03, 0.01]])
    net = to_device([w], profile)
    assert net.row_exponents(0).tolist() == [6, 8, 11] and int(net.w_frac[0]) == 6
    assert net.w.reshape(3, 2).tolist() == [[58, -6], [51, 13], [-61, 20]]  # rint(w * 2**exponent)
    np.testing.assert_allclose(from_device(net)[0], w, atol=2.0 ** -7)
    layer = to_device([w], per_layer())
    assert layer.row_exponents(0).tolist() == [6, 6, 6] and np.abs(layer.w).max() == 58


def test_forward_requantises_each_row_by_its_own_shift(profile):
    # x = (1, 0.5) in the activation format (frac 4): (16, 8); row i's sum is divided by 2**exponent_i
    net = to_device([np.array([[0.9, -0.1], [0.2, 0.05], [-0.03, 0.01]])], profile)
    P = make_params(profile, "relu", "ce")
    x = np.array([[16, 8]], dtype=np.int64)
    sums = [16 * 58 + 8 * -6, 16 * 51 + 8 * 13, 16 * -61 + 8 * 20]  # 880, 920, -816
    expected = [round(s / 2 ** e) for s, e in zip(sums, (6, 8, 11))]  # 13.75 -> 14, 3.59 -> 4, -0.40 -> 0
    for batch in (1, 8):  # the direct sums and the fused (float32 BLAS) forward
        pre, h = np.zeros((batch, 3), dtype=np.int64), np.zeros((batch, 3), dtype=np.int64)
        cached_layer_forward_(np.repeat(x, batch, 0), net.w, 0, 3, 2, net.w_one[0], net.row_shift, True, P, pre, h,
                              new_counters(1)[0, 0], new_state(0), *no_weight_cache())
        assert pre.tolist() == [expected] * batch == [[14, 4, 0]] * batch


def test_update_steps_each_row_in_its_own_lsb(profile):
    # the same real step lands as 2**row_shift times more LSBs in a finer row (nearest rounding: no draws)
    net = to_device([np.array([[0.9, -0.1], [0.2, 0.05], [-0.03, 0.01]])], profile)
    P = make_params(profile, "relu", "ce")._replace(upd_round=0)
    start = net.w.copy()
    delta, hin = np.array([[3, -2, 1]], dtype=np.int64), np.array([[4, 1]], dtype=np.int64)
    shift = 10
    outer_update_(net.w, 0, 3, 2, delta, hin, np.int64(64), np.int64(1 << shift), 0.0, net.row_shift, P,
                  new_counters(1)[0, 0], new_state(0), np.zeros(0))
    g = delta[0][:, None] * hin[0][None, :]  # (3, 2)
    steps = [[round(64 * gij * 2 ** int(s) / 2 ** shift) for gij in row] for row, s in zip(g, net.row_shift)]
    assert (start.reshape(3, 2) - net.w.reshape(3, 2)).tolist() == steps == [[1, 0], [-2, 0], [8, 2]]


def test_foton_projection_aligns_the_rows_of_each_layer(profile):
    rng = np.random.default_rng(0)
    w1 = 0.3 * rng.standard_normal((6, 5)) * np.array([[1.0], [0.1], [0.5], [0.02], [1.0], [0.3]])
    w2 = 0.3 * rng.standard_normal((3, 6)) * np.array([[1.0], [0.05], [0.4]])
    net = to_device([w1, w2], profile)
    assert len(set(net.row_shift.tolist())) > 2
    P = make_params(profile, "identity", "mse")
    p_one = np.int64(1 << 14)
    out = np.zeros((3, 5), dtype=np.int64)
    projection_rows_(net.w, net.dims, net.offs, net.w_one, net.row_shift, p_one, np.int64(-2 ** 15),
                     np.int64(2 ** 15 - 1), P, new_state(0), out, np.zeros(6, dtype=np.int64),
                     np.zeros(6, dtype=np.int64), new_counters(1)[0, 0])
    real = from_device(net)
    exact = real[1] @ real[0]  # F = W_2 W_1 of the stored weights
    # the first rounding (W_2's rows into the projection format) is the only one before the exact sums
    np.testing.assert_allclose(out / float(p_one), exact, atol=(0.5 * np.abs(real[0]).sum(0).max() + 0.5) / p_one)


def test_checkpoint_keeps_per_row_exponents(tmp_path, profile_path):
    kwargs = dict(rule="ftp", device=str(profile_path), dataset="digits", model="64-16-10", limit=200, seed=3)
    fo_edge.simulate(**kwargs, out=str(tmp_path / "a"))
    stored = load_weights(tmp_path / "a", [64, 16, 10])
    assert stored["exp0"].shape == (16,) and stored["exp1"].shape == (10,)
    net = from_stored(stored, parse_device(profile_path.read_text(), "pc"))
    again = {f"W{l}": net.w[net.offs[l]:net.offs[l + 1]].reshape(stored[f"W{l}"].shape) for l in range(2)}
    assert all(np.array_equal(again[k], stored[k]) for k in again)
    assert all(np.array_equal(-net.row_exponents(l), stored[f"exp{l}"]) for l in range(2))


def test_scales_are_accounted_in_the_arena(profile):
    arena = MemoryArena(2 ** 30, 0)
    to_device([np.ones((16, 64)), np.ones((10, 16))], profile, arena)
    scales = arena.live["weight scales"]
    assert scales.device_bytes == 4 * (16 + 10)  # one int32 exponent per output channel, as CMSIS-NN stores it


@pytest.mark.parametrize("rule", ["ftp", "foton", "bp"])
def test_int8_export_with_per_channel_scales_verifies_in_onnxruntime(tmp_path, profile_path, rule):
    out = tmp_path / rule
    fo_edge.simulate(rule=rule, device=str(profile_path), dataset="digits", model="64-32-10", epochs=2, lr=0.1,
                     out=str(out))
    report = export_onnx(out, out / "m8.onnx", int8=True)
    assert report["passed"] and report["onnx_accuracy"] == report["device_accuracy"], report
    assert report["max_logit_diff"] <= report["logit_tolerance"]


@pytest.mark.parametrize("change, message", [
    (lambda s: s.replace('weight_scale = "per-channel"', 'weight_scale = "per-row"', 1),
     "weight_scale: expected one of"),
    (lambda s: s.replace('arithmetic = "fixed"', 'arithmetic = "float"').replace(
        "value = 8, source = \"DEVICES.md 7.2: int8 weights", "value = 32, source = \"x"),
     "weight_scale: expected 'per-layer' unless arithmetic = 'fixed'"),
])
def test_inconsistent_scale_settings_are_refused_in_one_line(change, message):
    with pytest.raises(DeviceProfileError) as exc:
        parse_device(change(per_channel_text()), "bad.toml")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_spiking_profile_cannot_be_per_channel():
    text = (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text()
    text = text.replace('accumulator_overflow = ', 'weight_scale = "per-channel"\naccumulator_overflow = ', 1)
    with pytest.raises(DeviceProfileError, match="spiking neuron"):
        parse_device(text, "loihi-pc.toml")


def _bp_step_weights(profile, weights):
    """Real weights after one nearest-rounded BP step of 4 samples on ``profile``."""
    from fo_edge.rules.numba_binding import allocate_buffers, quantize_input, run_step

    net = to_device(weights, profile)
    bufs = allocate_buffers(MemoryArena(2 ** 30, 0), profile, net.dims, 4, "bp", "stream", ortho=False)
    params = make_params(profile, "relu", "ce")._replace(upd_round=0)
    counters, rng = new_counters(net.n_layers), new_state(0)
    x = np.array([[1.0, 0.5, 0.25], [0.5, 1.0, 0.0], [0.25, 0.75, 1.0], [1.0, 1.0, 0.5]])
    t = np.eye(2)[[0, 1, 1, 0]]
    run_step("bp", net, bufs, profile, params, quantize_input(x, profile, bufs.x, counters[0, -1], rng), t, 0.5,
             "stream", counters, rng)
    return from_device(net)


def test_bp_backward_through_rows_of_different_scales_is_exact(profile):
    # W_1's rows have peaks 0.5 and 0.0625 (exponents 6 and 9 per channel, 6 for the layer), all weights exact
    # in both: the error reaching layer 0 is the same real number, so W_0 (one exponent either way) moves alike
    w0 = np.array([[0.5, -0.25, 0.125], [0.25, 0.5, -0.5]])
    w1 = np.array([[0.5, -0.25], [0.0625, 0.03125]])
    layer, channel = _bp_step_weights(per_layer(), [w0, w1]), _bp_step_weights(profile, [w0, w1])
    assert to_device([w0, w1], profile).row_exponents(1).tolist() == [6, 9]
    np.testing.assert_array_equal(layer[0], channel[0])
    assert not np.array_equal(layer[0], w0)  # the step did reach layer 0


def test_conv_kernels_keep_one_exponent_per_output_channel(profile):
    import torch

    from fo_edge.models.conv import init_conv_params, kernels_of, parse_conv_spec
    from fo_edge.rules.conv_binding import ConvPasses, conv_to_device, dequantize

    spec = parse_conv_spec("c4-c6-10", (2, 8, 8))
    kernels = [k.numpy() for k in kernels_of(spec, init_conv_params(spec, seed=2))]
    kernels[0] = kernels[0] * np.array([1.0, 0.1, 0.5, 0.02]).reshape(4, 1, 1, 1)  # channels of unlike range
    channel, layer = conv_to_device(spec, kernels, profile), conv_to_device(spec, kernels, per_layer())
    assert channel.row_shift[0].tolist() != [0, 0, 0, 0] and not any(np.any(r) for r in layer.row_shift)
    for net in (channel, layer):  # every channel within half an LSB of its own scale
        for got, want, scale in zip(dequantize(net), kernels, (net.real_scale(l) for l in range(3))):
            err = np.abs(got - want).reshape(scale.shape[0], -1)
            assert np.all(err <= 0.5 / scale + 1e-12)
    small = [np.abs(dequantize(n)[0][3] - kernels[0][3]).max() for n in (channel, layer)]
    assert small[0] < small[1] / 8  # the small channel gets its bits back
    x = torch.rand(3, 128, dtype=torch.float64).numpy()
    P = make_params(profile, "tanh", "ce")
    passes = ConvPasses(channel, 3)
    from fo_edge.rules.numba_binding import quantize_input
    C = new_counters(spec.n_layers)
    y = passes.forward("c", quantize_input(x, profile, passes.x, C[0, -1], new_state(0)), P, C, 0, new_state(0))
    assert y.shape == (3, 10) and np.any(y != 0)


def test_mano_linears_run_per_channel(profile):
    import torch

    from fo_edge.models.mano import MANOClassifier
    from fo_edge.rules.mano_binding import DeviceLinears

    torch.manual_seed(3)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=1, heads=2, patch=2, window=2).eval()
    x = torch.rand(5, 64)
    with torch.no_grad():
        ref = model(x)
        with DeviceLinears(model, profile) as dev:
            out = model(x)
    assert any(np.any(net.row_shift) for net in dev.nets)
    assert torch.allclose(out, ref, atol=0.25) and not torch.equal(out, ref)


def dynamic_profile():
    return parse_device(mcu_text("per-channel-dynamic"), "mcu-int8-pcd")


def test_dynamic_rows_move_one_bit_by_hand():
    from fo_edge.kernels.update import rescale_rows_

    profile = dynamic_profile()
    P = make_params(profile, "relu", "ce")
    w = np.array([127, -3, 5,    # peak at the bound: halved, nearest-even (-1.5 -> -2, 2.5 -> 2)
                  40, -7, 0,     # 2 * 40 + 31 <= 127: doubled
                  60, 1, 2,      # 2 * 60 + 31 > 127: stays
                  0, 0, 0,       # zero row: stays
                  -128, 9, 1], dtype=np.int8)  # -128 reached the bound, but rs is already at its floor
    rs = np.array([2, 0, 1, 0, -1], dtype=np.int64)
    C = new_counters(1)[0, 0]
    rescale_rows_(w, 0, 5, 3, rs, np.int64(-1), P, C, np.ones(5, dtype=np.uint8))
    assert w.reshape(5, 3).tolist() == [[64, -2, 2], [80, -14, 0], [60, 1, 2], [0, 0, 0], [-128, 9, 1]]
    assert rs.tolist() == [1, 1, 1, 0, -1]


def test_a_dynamic_net_rebases_keeps_its_real_weights_and_resumes_bit_identically():
    from fo_edge.data import load_dataset
    from fo_edge.engine.stream import train_stream
    from fo_edge.models import init_weights
    from fo_edge.rules import rule_config
    from fo_edge.rules.numba_binding import rescale_rows

    profile = dynamic_profile()
    net = to_device([np.array([[0.9, -0.1], [0.2, 0.05], [-0.03, 0.01]])], profile)
    net.w[:2] = [127, 100]  # row 0 at the bound: it moves coarser than the layer's exponent
    before = from_device(net)[0]
    rescale_rows(net, make_params(profile, "relu", "ce"), new_counters(1))
    assert net.row_exponents(0).tolist() == [5, 8, 11] and int(net.row_shift.min()) == 0
    np.testing.assert_allclose(from_device(net)[0], before, atol=2.0 ** -6)
    data = load_dataset("digits")
    kw = dict(activation="relu", error="ce", lr=0.05, epochs=2, batch_size=16, seed=2)
    saved = []
    full = train_stream(init_weights((64, 32, 10), seed=2), data, "ftp", rule_config("ftp"), profile,
                        checkpoint_every=25, on_checkpoint=saved.append, **kw)
    assert any(np.ptp(full.stored[f"exp{l}"]) > 0 for l in range(2))
    resumed = train_stream(init_weights((64, 32, 10), seed=2), data, "ftp", rule_config("ftp"), profile,
                           resume=saved[1], **kw)
    for name in full.stored:
        np.testing.assert_array_equal(resumed.stored[name], full.stored[name])



@settings(max_examples=30, deadline=None)
@given(data=st.data(), d_out=st.integers(1, 6), d_in=st.integers(1, 8), steps=st.integers(1, 8))
def test_rescaling_the_marked_rows_equals_rescaling_every_row(data, d_out, d_in, steps):
    """A dynamic rescale that looks only at the rows marked in ``rescan`` (those written since, re-scaled the
    call before, or in a re-based layer) leaves weights, exponents and counters as looking at every row does,
    over a run of writes to some rows between the calls (small weights: rows double over several calls)."""
    from fo_edge.kernels.update import rescale_network_

    P = make_params(dynamic_profile(), "relu", "ce")
    dims, offs = np.array([d_in, d_out], dtype=np.int64), np.array([0, d_out * d_in], dtype=np.int64)
    row = arrays(np.int8, d_in, elements=st.one_of(st.integers(-3, 3), st.integers(-127, 127)))
    start = data.draw(arrays(np.int8, d_out * d_in, elements=st.integers(-127, 127)))
    writes = [data.draw(st.dictionaries(st.integers(0, d_out - 1), row, max_size=d_out)) for _ in range(steps)]
    results = []
    for marked in (True, False):
        w, rs, C = start.copy(), np.zeros(d_out, dtype=np.int64), new_counters(1)[0]
        w_frac, w_one, rescan = np.array([6]), np.array([64]), np.ones(d_out, dtype=np.uint8)
        for step in writes:
            rescale_network_(w, dims, offs, rs, w_frac, w_one, P, C, rescan if marked else np.ones_like(rescan))
            for i, values in step.items():
                w[i * d_in:(i + 1) * d_in] = values
                rescan[i] = 1
        rescale_network_(w, dims, offs, rs, w_frac, w_one, P, C, rescan if marked else np.ones_like(rescan))
        results.append((w, rs, w_frac, C))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
