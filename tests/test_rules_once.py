"""Each forward-only rule is defined once (rules.FORWARD_ONLY_UPDATES, over a family's passes, rules.passes):
its structure checked with a recording family; the spiking family's steps against the formulas of
rules.spiking_passes written out plainly; MLPs, spiking nets and conv nets on torch, and the MLP, spiking and
conv devices on Numba (rules.mlp_device_passes.MLPDevicePasses, rules.spiking_binding.DevicePasses,
rules.conv_binding.ConvDevicePasses), all reaching it; the MLP device's fused kernel equal to its definitions."""
import ast
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fo_edge.rules import FORWARD_ONLY_UPDATES, rule_config
from fo_edge.rules.base import output_error_torch
from fo_edge.rules.passes import Pass
from fo_edge.rules.spiking_passes import SpikingPasses

ROOT = Path(__file__).resolve().parents[1] / "fo_edge"


class Recording:
    """A family whose activities are labelled tensors: each call is logged, each value says where it came from."""

    def __init__(self, n_layers: int):
        self.n_layers, self.log = n_layers, []

    def clean(self, x):
        self.log.append("clean")
        return Pass(torch.full((2, 3), 1.0), [f"h{l}" for l in range(self.n_layers)])

    def error(self, clean, t):
        self.log.append("error")
        return clean.y - t

    def charge_projection(self, v, m):
        self.log.append("charge")

    def from_input(self, x, e, f, sign):
        self.log.append(("from_input", sign))
        return Pass(None, [f"m{l}" for l in range(self.n_layers)])

    def from_first(self, clean, signal, pre):
        self.log.append(("from_first", pre))
        return Pass(None, [None] + [f"m{l}" for l in range(1, self.n_layers)])

    def delta(self, l, clean, second, local):
        return f"d{l}{'L' if local else ''}"

    def output_error(self, second, t):
        return "e_mod"

    def local_output_error(self, clean, second):
        return "y-tau"

    def correlate(self, l, delta, h_in):
        return (l, delta if isinstance(delta, str) else "e", h_in)


T = torch.eye(3)[:2]


@pytest.mark.parametrize("layers", [2, 3])
def test_foton_pairs_the_difference_with_the_clean_activities_and_modulates_by_minus_e_f(layers):
    family = Recording(layers)
    grads, _ = FORWARD_ONLY_UPDATES["foton"](family, None, T, rule_config("foton"), torch.ones(3, 4))
    assert grads == [(l, f"d{l}", f"h{l}") for l in range(layers - 1)] + [(layers - 1, "e", f"h{layers - 1}")]
    assert family.log == ["clean", "error", ("from_input", -1.0)]  # x - e F


@pytest.mark.parametrize("output_error", ["clean", "modulated"])
def test_pepita_pairs_the_difference_with_the_modulated_activities(output_error):
    family = Recording(3)
    grads, _ = FORWARD_ONLY_UPDATES["pepita"](family, None, T, rule_config("pepita", output_error=output_error),
                                              torch.ones(3, 4))
    last = (2, "e_mod", "m2") if output_error == "modulated" else (2, "e", "m2")
    assert grads == [(0, "d0", "m0"), (1, "d1", "m1"), last] and family.log[2] == ("from_input", 1.0)  # x + e F


@pytest.mark.parametrize("target, pre", [("difference", False), ("error_preactivation", True), ("label", True)])
@pytest.mark.parametrize("output_loss", ["error", "local"])
def test_ftp_moves_the_first_layer_and_trains_every_hidden_layer_on_its_local_loss(target, pre, output_loss):
    family = Recording(3)
    config = rule_config("ftp", target=target, output_loss=output_loss)
    grads, _ = FORWARD_ONLY_UPDATES["ftp"](family, None, T, config, torch.ones(4, 3))
    last = (2, "y-tau" if output_loss == "local" else "e", "h2")
    assert grads == [(0, "d0L", "h0"), (1, "d1L", "h1"), last]
    assert family.log.count("charge") == (2 if target == "difference" else 1) and ("from_first", pre) in family.log


def _fake_run(dims, timesteps):
    """A deterministic stand-in for a spiking presentation: counts and integrals drawn from the input (and the
    injected current), so that different inputs give different counts."""
    def run(phase, x, inject=None):
        seed = int(abs(float(x.sum()) * 1000)) + (0 if inject is None else int(abs(float(inject.sum())) * 1000) + 7)
        gen = torch.Generator().manual_seed(seed)
        counts = [torch.randint(0, timesteps + 1, (len(x), d), generator=gen).float() for d in dims[1:-1]]
        acc = [torch.randn(len(x), d, generator=gen) for d in dims[1:-1]]
        y = torch.randn(len(x), dims[-1], generator=gen)
        return y, counts, (x * timesteps).round(), acc
    return run


def _plain(run, rule, config, x, t, proj, hidden_error, timesteps, lr, n_layers):
    """rules.spiking_passes' formulas, written out for one rule."""
    y, counts, in_counts, acc = run(0, x)
    e = output_error_torch(y, t, "ce", 1.0)
    twin = None
    if rule == "ftp":
        from fo_edge.rules.ftp import ftp_signal

        signal = ftp_signal(config, t, e, y, proj)
        y_m, counts_m, in_m, acc_m = run(1, x, signal)
        if hidden_error == "central":
            twin = run(1, x, -signal)
        if config.output_loss == "local":
            e = (twin[0] - y_m) / 2 if hidden_error == "central" else y - y_m
    else:
        sign = 1.0 if rule == "pepita" else -1.0
        y_m, counts_m, in_m, acc_m = run(1, torch.clamp(x + sign * (e @ proj), 0, 1))
        if hidden_error == "central":
            twin = run(1, torch.clamp(x - sign * (e @ proj), 0, 1))
    pre = [in_m, *counts_m] if rule == "pepita" else [in_counts, *counts]
    steps = []
    for l in range(n_layers - 1):
        if hidden_error == "central":
            delta = (twin[1][l] - counts_m[l]) / 2
        elif hidden_error == "surrogate":
            delta = torch.where(counts[l] + counts_m[l] > 0, acc[l] - acc_m[l], 0.0)
        else:
            delta = counts[l] - counts_m[l]
        steps.append(lr * delta.T @ pre[l] / (timesteps ** 2 * len(x)))
    return steps + [lr * e.T @ pre[-1] / (timesteps * len(x))]


@settings(max_examples=25, deadline=None)
@given(rule=st.sampled_from(["ftp", "pepita", "foton"]), hidden_error=st.sampled_from(["spike-count", "central",
                                                                                        "surrogate"]),
       local=st.booleans(), batch=st.integers(1, 5), seed=st.integers(0, 100), lr=st.sampled_from([1.0, 0.3]))
def test_the_spiking_family_gives_its_formulas(rule, hidden_error, local, batch, seed, lr):
    dims, timesteps = (6, 5, 4, 3), 8
    run = _fake_run(dims, timesteps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, dims[0], generator=gen)
    t = torch.eye(dims[-1])[torch.randint(0, dims[-1], (batch,), generator=gen)]
    config = rule_config(rule, **({"output_loss": "local"} if rule == "ftp" and local else {}))
    proj = torch.randn(dims[1], dims[-1], generator=gen) if rule == "ftp" else torch.randn(dims[-1], dims[0],
                                                                                          generator=gen)
    passes = SpikingPasses(run, len(dims) - 1, "ce", 1.0, hidden_error, timesteps, lr)
    got, _ = FORWARD_ONLY_UPDATES[rule](passes, x, t, config, proj)
    want = _plain(run, rule, config, x, t, proj, hidden_error, timesteps, lr, len(dims) - 1)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("path, names", [
    ("rules/ftp.py", {"ftp_updates"}), ("rules/pepita.py", {"pepita_updates"}),
    ("rules/foton.py", {"foton_updates"}), ("rules/foton_conv.py", {"foton_updates"}),
    ("engine/spiking_torch.py", {"FORWARD_ONLY_UPDATES"}), ("rules/spiking_binding.py", {"FORWARD_ONLY_UPDATES"}),
    ("rules/conv_binding.py", {"foton_updates"}), ("rules/numba_binding.py", {"FORWARD_ONLY_UPDATES"})])
def test_every_family_reaches_the_one_definition(path, names):
    """The MLP rules, the conv nets' FOTON and the spiking nets' rules go through the definitions; no family
    builds a second pass itself (x + e F, x - e F or FTP's signal)."""
    tree = ast.parse((ROOT / path).read_text())
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert names <= used
    families = ["rules/mlp_passes.py", "rules/spiking_passes.py", "rules/foton_conv.py", "engine/spiking_torch.py",
                "rules/spiking_binding.py", "rules/conv_binding.py", "rules/mlp_device_passes.py"]
    for family in families:
        source = (ROOT / family).read_text()
        assert "ftp_signal(" not in source and "e @ proj" not in source, family


def _device_run(fused, rule, config, profile_id, dims, batch, schedule, keep, fwd_stochastic, dropout, momentum,
                collect, seed):
    """Two steps of ``rule`` on an MLP on the device, fused or from the definition: everything they leave."""
    import numpy as np

    from fo_edge.accounting.memory import MemoryArena
    from fo_edge.device import load_device
    from fo_edge.kernels.counters import new_counters
    from fo_edge.kernels.fixed import ROUND_STOCHASTIC
    from fo_edge.kernels.rng import new_state
    from fo_edge.models import init_weights
    from fo_edge.rules.numba_binding import (allocate_buffers, dropout_drop, fill_fixed_projection, ftp_kernel_options,
                                             kept_pass1, make_params, quantize_input, refresh_projection, run_step,
                                             to_device)

    profile = load_device(profile_id)
    net = to_device(init_weights(dims, seed=seed), profile)
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, batch, rule, schedule, ortho=False,
                            dropout=dropout > 0, momentum=momentum)
    if not keep:
        bufs.kept = kept_pass1(bufs.store.dtype, net.dims, batch, keep=False)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    params = make_params(profile, "tanh" if rule == "ftp" else "relu", "ce", collect=collect,
                         **ftp_kernel_options(config))
    if fwd_stochastic and params.quantized:
        params = params._replace(fwd_round=ROUND_STOCHASTIC)
    counters, rng = new_counters(net.n_layers), new_state(seed)
    gen = np.random.default_rng(seed)
    g_out = np.zeros(net.w.size)
    for step in range(2):
        if rule == "foton":
            refresh_projection(net, bufs, profile, counters, rng)
        x = gen.random((batch, int(net.dims[0])))
        t = np.eye(int(net.dims[-1]))[gen.integers(0, int(net.dims[-1]), batch)]
        x_dev = quantize_input(x, profile, bufs.x, counters[0, -1], rng)
        drop = dropout_drop(bufs, profile, net.dims, batch, dropout, seed, step)
        run_step(rule, net, bufs, profile, params, x_dev, t, 0.05, schedule, counters, rng, g_out if collect else None,
                 drop, (0.9, 1e-3) if momentum else (0.0, 0.0), config=config, fused=fused)
    vel = bufs.vel.copy() if bufs.vel is not None else None
    return net.w.copy(), net.row_shift.copy(), counters.copy(), rng.copy(), g_out, vel


_RULE_OPTIONS = st.one_of(
    st.tuples(st.just("foton"), st.just({})),
    st.tuples(st.just("pepita"), st.fixed_dictionaries({"output_error": st.sampled_from(["clean", "modulated"])})),
    st.tuples(st.just("ftp"), st.fixed_dictionaries({
        "target": st.sampled_from(["difference", "error_preactivation", "label"]),
        "output_loss": st.sampled_from(["error", "local"]), "y_hat": st.sampled_from(["softmax", "raw"]),
        "target_f": st.sampled_from(["tanh", "identity"])})))


@settings(max_examples=40, deadline=None)
@given(rule_options=_RULE_OPTIONS, profile=st.sampled_from(["mcu-int8", "fpga-fixed16", "gpu-fp32", "memristor-rram"]),
       hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3), batch=st.integers(1, 10),
       schedule=st.sampled_from(["stream", "store"]), keep=st.booleans(), fwd_stochastic=st.booleans(),
       dropout=st.sampled_from([0.0, 0.3]), momentum=st.booleans(), collect=st.booleans(), seed=st.integers(0, 50))
def test_the_mlp_device_from_the_definitions_equals_the_fused_kernel(rule_options, profile, hidden, batch, schedule,
                                                                      keep, fwd_stochastic, dropout, momentum,
                                                                      collect, seed):
    """The MLP device run from the one definitions (rules.mlp_device_passes) leaves what the fused kernel
    (kernels.steps.forward_only_step_) leaves, bit for bit: weights, per-row exponents, every counter, the RNG,
    the collected estimates and the velocity, over two steps, for every rule option, schedule, format, dropout
    and optimiser."""
    import numpy as np

    rule, options = rule_options
    config = rule_config(rule, **options)
    dims = (7, *hidden, 4)
    args = (rule, config, profile, dims, batch, schedule, keep, fwd_stochastic, dropout, momentum and not collect,
            collect, seed)
    for got, want in zip(_device_run(False, *args), _device_run(True, *args), strict=True):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)
