"""MANO training on a device's kernels (rules.mano_device_training): on a float profile a step equals autograd's
SGD step; on integer profiles one map's backward product and update equal an integer reference worked in
numpy, bit for bit."""
import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fo_edge.device import load_device
from fo_edge.device.spec import Rounding, WeightScale
from fo_edge.engine.mano_loop import MANOTrainConfig, bp_step, ftp_step
from fo_edge.kernels.counters import BACKWARD, FORWARD, UPDATE
from fo_edge.models.mano import MANOClassifier, MANOOperator
from fo_edge.rules.mano_device_training import MAX_ERROR_BITS, DeviceTraining
from fo_edge.rules.mano_memory import plan_mano_device_memory, plan_mano_memory, saved_bytes
from fo_edge.rules.numba_binding import step_scale


def _classifier(seed: int, readouts: bool) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MANOClassifier((1, 8, 8), 10, patch=2, dim=16, depth=2, heads=2, window=2, readouts=readouts)


@pytest.mark.parametrize("rule", ["bp", "ftp"])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 6))
def test_a_float_device_step_equals_autograds_sgd_step(rule, seed, batch):
    """gpu-fp32: BP's step and FTP's readout step (each block's local loss) through the device maps move every
    parameter as torch.optim.SGD does after autograd; MANO's shared attention, coarsening and refinement maps are
    used once per level, so their updates are the sum over the uses."""
    model = _classifier(seed, readouts=rule == "ftp")
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    x, t = torch.rand(batch, 64, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    config = MANOTrainConfig(rule=rule)
    step = (lambda m, opt: ftp_step(m, x, t, config, None, opt)) if rule == "ftp" else \
        (lambda m, opt: bp_step(m, x, t, config, opt))
    step(reference, torch.optim.SGD(reference.parameters(), lr=0.1))
    with DeviceTraining(model, load_device("gpu-fp32"), lr=0.1) as dev:
        step(model, dev.optimizer())
        assert not dev.pending
    start = _classifier(seed, rule == "ftp").parameters()
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(reference.parameters(), start))
    assert moved > 1e-4
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=2e-6), name


def _round_shift(values: np.ndarray, shift: int) -> np.ndarray:
    """round(values / 2**shift), nearest-even, on int64 arrays (object ints where the product is wide)."""
    out = []
    for v in np.asarray(values, dtype=object).ravel():
        q, rem = divmod(int(v), 1 << shift)
        if 2 * rem > (1 << shift) or (2 * rem == (1 << shift) and q % 2):
            q += 1
        out.append(q)
    return np.array(out, dtype=object).reshape(np.shape(values))


def _profile(per_channel: bool):
    """mcu-int8 with nearest-even updates (nothing drawn) and static exponents (nothing rescaled)."""
    return dataclasses.replace(load_device("mcu-int8"), update_rounding=Rounding.NEAREST_EVEN,
                               weight_scale=WeightScale.PER_CHANNEL if per_channel else WeightScale.PER_LAYER)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 9), d_in=st.integers(1, 7), d_out=st.integers(1, 7),
       per_channel=st.booleans(), grad_scale=st.sampled_from([1e-6, 1e-3, 1.0, 300.0]),
       lr=st.sampled_from([0.01, 0.3]))
def test_one_integer_maps_forward_backward_and_update_equal_the_integer_reference(seed, n, d_in, d_out, per_channel,
                                                                                    grad_scale, lr):
    """mcu-int8 (per-layer or per-channel exponents). Forward: x_q = round(x 2**a), a = floor(log2(127 / max|x|))
    within [0, 24]; each row's sum x_q W_i rounded to the exponent a (nearest-even), then the block shifted right
    by the least s that brings its peak into int8: y = that 2**(s - a). Backward: delta = round(g 2**e) with
    e = floor(log2(127 / max|g|)); the product sum_i delta_i 2**(top - rs_i) W_i shifted right by the least s'
    that brings its peak into int8 (nearest-even), dL/dx = that 2**-(e + w_frac + top - s'). Update:
    W_i -= round(lr 2**(w_frac + rs_i - e - a) delta^T x_q) (the kernels' multiplier, nearest-even), saturating
    to the weight format."""
    rng = np.random.default_rng(seed)
    profile = _profile(per_channel)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, d_out, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(torch.as_tensor(2.0 ** rng.integers(-2, 3, (d_out, 1)), dtype=torch.float32))
    x = torch.as_tensor(rng.uniform(-3, 3, (n, d_in)) * 2.0 ** rng.integers(-6, 3),
                        dtype=torch.float32).requires_grad_()
    g = torch.as_tensor(rng.normal(0, grad_scale, (n, d_out)), dtype=torch.float32)
    with DeviceTraining(model, profile, lr=lr) as dev:
        net = dev.nets[0]
        w = net.w.astype(np.int64).reshape(d_out, d_in).copy()
        rs, w_frac = net.row_shift.copy(), int(net.w_frac[0])
        y = model(x)
        y.backward(g)
        dev.optimizer().step()
        w_after = net.w.astype(np.int64).reshape(d_out, d_in)
    act, err = profile.activation, profile.error
    x64 = x.detach().double().numpy()
    a = max(0, min(24, int(np.floor(np.log2(act.qmax / np.abs(x64).max())))))
    x_q = np.clip(np.rint(x64 * 2 ** a), act.qmin, act.qmax).astype(np.int64)
    acc = x_q @ w.T
    y_a = np.stack([_round_shift(acc[:, i], w_frac + int(rs[i])) for i in range(d_out)], axis=1).astype(np.int64)
    s_y = _least_shift(y_a, act.qmax)
    expect_y = _round_shift(y_a, s_y).astype(np.int64) * 2.0 ** (s_y - a)
    assert np.array_equal(y.detach().double().numpy(), expect_y.astype(np.float32).astype(np.float64))
    g64 = g.double().numpy()
    e = max(-MAX_ERROR_BITS, min(MAX_ERROR_BITS, int(np.floor(np.log2(err.qmax / np.abs(g64).max())))))
    delta = np.clip(np.rint(g64 * 2.0 ** e), err.qmin, err.qmax).astype(np.int64)
    top = int(rs.max())
    back = (delta * (1 << (top - rs))[None, :]) @ w
    s = _least_shift(back, err.qmax)
    out = np.clip(_round_shift(back, s).astype(np.int64), err.qmin, err.qmax)
    expect_dx = out * 2.0 ** -(e + w_frac + top - s)
    assert np.array_equal(x.grad.double().numpy(), expect_dx.astype(np.float32).astype(np.float64))
    mul, div = step_scale(lr * 2.0 ** (w_frac - e - a))
    k = int(div).bit_length() - 1
    grads = delta.T @ x_q
    for i in range(d_out):
        steps = _round_shift(grads[i].astype(object) * int(mul) * (1 << int(rs[i])), k)
        expect = np.clip(w[i] - steps.astype(np.int64), profile.weight.qmin, profile.weight.qmax)
        assert np.array_equal(w_after[i], expect), (i, w_after[i], expect)


def _least_shift(values: np.ndarray, qmax: int) -> int:
    """The least s >= 0 with round(max|values| / 2**s) <= qmax (nearest-even)."""
    s = 0
    while abs(_round_shift(np.array([np.abs(values).max()]), s)[0]) > qmax:
        s += 1
    return s


def test_training_charges_every_phase_and_keeps_int8_inputs():
    """mcu-int8: the forward, backward and update phases are counted per map; what the backward keeps of each map's
    input is its int8 mantissas (1 byte a value, for the memory plan's measurement)."""
    model = _classifier(0, readouts=False)
    x, t = torch.rand(3, 64), torch.tensor([1, 2, 3])
    with DeviceTraining(model, load_device("mcu-int8"), lr=0.1) as dev:
        kept = saved_bytes(lambda: dev.model.embed(torch.rand(3, 16, 4)), dev.host_parameters())
        assert kept == 3 * 16 * 4  # the embedding's input: int8 mantissas, nothing else
        bp_step(model, x, t, MANOTrainConfig(), dev.optimizer())
        for phase in (FORWARD, BACKWARD, UPDATE):
            assert (dev.counters[phase, :len(dev.linears), 0] > 0).all(), phase
    before = [p.detach().clone() for p in _classifier(0, readouts=False).parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_the_device_memory_plan_counts_the_device_formats_and_ftp_stays_flat_in_depth():
    """mcu-int8 (capacity raised so that nothing is refused): the maps' weights take a byte each; BP's stored
    activations and pending errors grow with depth, FTP's local graph and pending errors (one block's) do not;
    the device keeps less than the float plan of the same model."""
    profile = load_device("mcu-int8")
    roomy = dataclasses.replace(profile, capacity=dataclasses.replace(profile.capacity, sram_bytes=1 << 40))

    def plan(rule, depth):
        model = MANOOperator(dim=8, depth=depth, heads=2, window=4, size=16, readouts=rule == "ftp")
        return model, plan_mano_device_memory(model, (16, 16), roomy, rule, 4, readouts=rule == "ftp").report()

    model, bp2 = plan("bp", 2)
    maps = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert bp2["buffers"]["weights"]["bytes"] == maps
    _, bp4 = plan("bp", 4)
    assert bp4["buffers"]["stored_activations"]["bytes"] > 1.8 * bp2["buffers"]["stored_activations"]["bytes"]
    assert bp4["buffers"]["pending_errors"]["bytes"] > 1.8 * bp2["buffers"]["pending_errors"]["bytes"]
    (_, ftp2), (_, ftp4) = plan("ftp", 2), plan("ftp", 4)
    for name in ("local_graph", "pending_errors"):
        assert ftp4["buffers"][name]["bytes"] == ftp2["buffers"][name]["bytes"], name
    float_plan = plan_mano_memory(model, (16, 16), load_device("gpu-fp32"), "bp", 4, 1, True).report()
    assert bp2["buffers"]["stored_activations"]["bytes"] < float_plan["buffers"]["stored_activations"]["bytes"]


def test_the_cli_trains_mano_on_mcu_int8_or_refuses_what_cannot_fit(tmp_path):
    """``fo-edge simulate --device mcu-int8 --model mano...`` takes the numba backend: a small model trains, its
    counters hold the device's backward and update work and its energy; the default MNIST model does not fit
    256 KiB, and the refusal names what did not fit."""
    from click.testing import CliRunner

    from fo_edge.cli import cli
    from fo_edge.runs import read_run

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["simulate", "--rule", "bp", "--device", "mcu-int8", "--dataset", "digits",
                                      "--model", "mano:dim=8,depth=1,heads=2,window=2,patch=2", "--limit", "64",
                                      "--epochs", "1", "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "numba" in result.output and "peak device memory" in result.output
    record = read_run(out)
    assert record["config"]["backend"] == "numba"
    phases = record["counters"]["by_phase"]
    assert phases["backward"]["macs_dense"] > 0 and phases["update"]["weight_writes"] > 0
    assert record["energy"]["modes"]
    refused = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--rule", "ftp", "--device", "mcu-int8",
                              "--model", "mano", "--out", str(tmp_path / "big")], capture_output=True, text=True)
    assert refused.returncode != 0 and "does not fit" in refused.stderr and "stage_output" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "big").exists()
