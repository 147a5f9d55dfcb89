"""Loihi's Dense weight format (Lava weightutils): hand-worked truncation for every sign mode and several bit
widths, properties over all of them, learned updates that land in the format without drift, profile refusals."""
import re
from importlib import resources

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fo_edge.device import parse_device
from fo_edge.device.loihi_weights import apply_format, clip_weights, quantize_to_format, truncate_weights
from fo_edge.device.spec import LoihiWeightFormat, SignMode
from fo_edge.errors import DeviceProfileError

MIXED, EXC, INH = SignMode.MIXED, SignMode.EXCITATORY, SignMode.INHIBITORY
RAW = [-300, -256, -255, -31, -13, -3, -1, 0, 1, 3, 13, 31, 254, 255, 300]

# (num_weight_bits, sign mode) -> what Lava's clip_weights then truncate_weights make of RAW, worked by hand:
# k = 8 - bits + [mixed]; mixed/excitatory floor to a multiple of 2**k, inhibitory truncates toward zero
HAND = {
    (8, MIXED): [-256, -256, -256, -32, -14, -4, -2, 0, 0, 2, 12, 30, 254, 254, 254],  # k = 1: even values
    (7, MIXED): [-256, -256, -256, -32, -16, -4, -4, 0, 0, 0, 12, 28, 252, 252, 252],  # k = 2
    (6, MIXED): [-256, -256, -256, -32, -16, -8, -8, 0, 0, 0, 8, 24, 248, 248, 248],  # k = 3
    (8, EXC): [0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 13, 31, 254, 255, 255],  # k = 0: clip only
    (5, EXC): [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 24, 248, 248, 248],  # k = 3
    (8, INH): [-255, -255, -255, -31, -13, -3, -1, 0, 0, 0, 0, 0, 0, 0, 0],  # k = 0
    (4, INH): [-240, -240, -240, -16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # k = 4, toward zero
}


@pytest.mark.parametrize("bits,mode", list(HAND))
def test_truncation_matches_hand_worked_lava(bits, mode):
    fmt = LoihiWeightFormat(bits, mode)
    assert apply_format(np.array(RAW), fmt).tolist() == HAND[bits, mode]


def test_lava_default_keeps_only_even_weights():
    fmt = LoihiWeightFormat()  # Lava Dense default: 8 bits, mixed
    assert (fmt.truncate_bits, fmt.step, fmt.lo, fmt.hi) == (1, 2, -256, 254)
    every = apply_format(np.arange(-256, 256), fmt)
    assert set(every.tolist()) == set(range(-256, 255, 2))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("mode", [MIXED, EXC, INH])
def test_format_bounds_are_the_images_of_the_register(bits, mode):
    fmt = LoihiWeightFormat(bits, mode)
    image = apply_format(np.arange(-400, 400), fmt)
    assert image.min() == fmt.lo and image.max() == fmt.hi
    assert np.all(image % fmt.step == 0)
    assert len(set(image.tolist())) == fmt.grid_hi - fmt.grid_lo + 1


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=50), st.integers(1, 8),
       st.sampled_from([MIXED, EXC, INH]))
def test_format_properties(raw, bits, mode):
    fmt = LoihiWeightFormat(bits, mode)
    w = np.array(raw)
    out = apply_format(w, fmt)
    assert np.all(out % fmt.step == 0) and out.min() >= fmt.lo and out.max() <= fmt.hi
    np.testing.assert_array_equal(apply_format(out, fmt), out)  # idempotent
    assert np.all(np.abs(out - clip_weights(w, fmt)) < fmt.step)  # truncation moves less than one step
    np.testing.assert_array_equal(truncate_weights(out, fmt), out)


def test_float_weights_round_to_the_nearest_representable():
    fmt = LoihiWeightFormat()
    out, clipped = quantize_to_format(np.array([0.49, 0.51, -0.51, 1.24, 2.0, -2.0]), 100.0, fmt)
    assert out.tolist() == [48, 52, -52, 124, 200, -200] and clipped == 0
    out, clipped = quantize_to_format(np.array([3.0, -3.0]), 100.0, fmt)
    assert out.tolist() == [254, -256] and clipped == 2


def _loihi_text() -> str:
    return (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text(encoding="utf-8")


def _profile(bits=8, mode="mixed", exp=0):
    text = _loihi_text()
    text = re.sub(r'num_weight_bits = \{ value = 8', f'num_weight_bits = {{ value = {bits}', text)
    text = text.replace('sign_mode = { value = "mixed"', f'sign_mode = {{ value = "{mode}"')
    text = text.replace('weight_exp = { value = 0,', f'weight_exp = {{ value = {exp},')
    return parse_device(text, "loihi-test.toml")


def test_shipped_loihi_uses_lavas_default_format():
    fmt = parse_device(_loihi_text(), "loihi-like.toml").spiking.weights
    assert fmt == LoihiWeightFormat(8, MIXED, 0)


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.replace("num_weight_bits = { value = 8", "num_weight_bits = { value = 9"),
     "spiking.num_weight_bits.value: expected a value in [1, 8]"),
    (lambda t: t.replace('sign_mode = { value = "mixed"', 'sign_mode = { value = "both"'),
     "spiking.sign_mode.value: expected one of 'mixed', 'excitatory', 'inhibitory'"),
    (lambda t: t.replace("num_weight_bits = { value = 8", "num_weight_bits = { value = 1"),
     "[spiking] num_weight_bits: expected at least 2 with sign_mode = 'mixed'"),
    (lambda t: t.replace("weight_bits = { value = 9", "weight_bits = { value = 8"),
     "[formats] weight_bits: expected 9 for a loihi-cuba neuron"),
    (lambda t: t.replace("weight_exp = { value = 0,", "weight_exp = { value = 9,"),
     "spiking.weight_exp.value: expected a value in [-8, 7]"),
    (lambda t: re.sub(r'sign_mode = \{[^}]*\}', 'sign_mode = "mixed"', t),
     "spiking.sign_mode: expected { value = \"mixed\", source = \"<citation>\" }"),
])
def test_unsupported_weight_formats_get_one_clear_line(mutate, message):
    with pytest.raises(DeviceProfileError, match=re.escape(message)) as info:
        parse_device(mutate(_loihi_text()), "loihi-test.toml")
    assert "\n" not in str(info.value)


def _tiny_run(tmp_path, profile_text, name, rule="ftp", **kwargs):
    import fo_edge

    path = tmp_path / f"{name}.toml"
    path.write_text(profile_text)
    return fo_edge.simulate(rule=rule, device=str(path), dataset="digits", model="64-32-10", limit=256, lr=0.1,
                            out=str(tmp_path / name), **kwargs)


@pytest.mark.parametrize("rule", ["ftp", "foton"])
def test_learned_weights_land_in_the_format(tmp_path, rule):
    from fo_edge.runs import load_weights
    import fo_edge

    for bits in (8, 6):
        text = _loihi_text().replace("num_weight_bits = { value = 8", f"num_weight_bits = {{ value = {bits}")
        path = tmp_path / f"loihi-{bits}.toml"
        path.write_text(text)
        run = fo_edge.simulate(rule=rule, device=str(path), dataset="digits", model="64-32-10", limit=256, lr=0.1,
                               out=str(tmp_path / f"{rule}-{bits}"),
                               rule_options={"ortho_every": 2} if rule == "foton" else {})
        step = 1 << (9 - bits)  # 8 - bits + 1 (mixed)
        weights = load_weights(run.run_dir, [64, 32, 10])
        for key, w in weights.items():
            if key.startswith("W"):
                assert np.all(w % step == 0), (bits, key)  # no odd weight survives at the default
                assert w.min() >= -256 and w.max() <= 256 - step
        assert run.record["counters"]["totals"]["synaptic_updates"] > 0


def test_small_updates_do_not_drift():
    """Updates of a quarter step, up and down, move the weights by a quarter step on average (stochastic
    rounding at the format's step), where rounding at the register LSB and then truncating would drift down."""
    from fo_edge.kernels.counters import new_counters
    from fo_edge.kernels.rng import new_state
    from fo_edge.rules.numba_binding import DeviceNet, make_params
    from fo_edge.rules.spiking_binding import _update_layer

    profile = _profile()
    n = 40000
    for sign in (1, -1):
        net = DeviceNet(np.zeros(n, dtype=np.int16), np.array([n, 1]), np.array([0, n]), np.array([0]),
                        np.array([1]), True)
        params = make_params(profile, "identity", "mse")
        # W -= scale * delta^T hin with delta = -sign, hin = 1: a change of +sign * 0.5 LSB = a quarter step
        _update_layer(net, 0, np.full((1, 1), -sign, dtype=np.int64), np.ones((1, n), dtype=np.int64), 0.5,
                      profile, params, new_counters(1), new_state(7))
        assert np.all(net.w % 2 == 0)
        assert abs(net.w.mean() - sign * 0.5) < 0.03, net.w.mean()


def test_weight_exponent_is_exact_for_a_positive_shift(tmp_path):
    """weight_exp = 1 doubles every accumulated input and the threshold with it: the same spikes, bit for bit
    (PEPITA: its second pass modulates the input; FTP's injected current is rounded at the finer scale)."""
    from fo_edge.runs import load_weights

    base = _tiny_run(tmp_path, _loihi_text(), "e0", rule="pepita")
    shifted = _tiny_run(tmp_path, _loihi_text().replace("weight_exp = { value = 0,", "weight_exp = { value = 1,"),
                        "e1", rule="pepita")
    a, b = (load_weights(r.run_dir, [64, 32, 10]) for r in (base, shifted))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert base.accuracy == shifted.accuracy
