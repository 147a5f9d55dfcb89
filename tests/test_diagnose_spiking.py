"""diagnose on saved spiking runs (both backends): the rule's step direction on the float spiking net against BP
through time with snnTorch's surrogate derivative; the output layer's gradient checked against its hand-derived
form, the rule's steps against the training loop's."""
import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fo_edge
from fo_edge.api import diagnose
from fo_edge.cli import cli
from fo_edge.device.load import load_device
from fo_edge.engine.spiking_torch import spiking_updates, surrogate_gradients
from fo_edge.models.spiking import SpikingMLP
from fo_edge.rules.ftp import FTPConfig, ftp_feedback


def _net(dims, seed, timesteps=None):
    sp = load_device("loihi-like").spiking
    if timesteps is not None:
        sp = dataclasses.replace(sp, timesteps=timesteps)
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.randn(b, a, generator=gen) * (2.0 / a) ** 0.5 for a, b in zip(dims[:-1], dims[1:])]
    return SpikingMLP(ws, sp), ws


@pytest.mark.parametrize("error", ["ce", "mse"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_output_gradient_is_e_times_the_counts_it_was_driven_by(error, seed):
    # out = sum_t of the current that arrives one step late (Lava's synaptic delay), so dL/dW_L = (e / B)^T
    # c'_{L-1} / T with c' the last hidden layer's spikes of the first T - 1 steps: the counts of a T - 1 run
    dims = (20, 12, 5)
    net, ws = _net(dims, seed)
    assert net.sp.delay == 1
    x = torch.rand(7, dims[0], generator=torch.Generator().manual_seed(seed + 10))
    t = torch.eye(dims[-1])[torch.arange(7) % dims[-1]]
    grads = surrogate_gradients(net, x, t, error=error, temperature=1.0)
    y = net(x)[0]
    e = torch.softmax(y, 1) - t if error == "ce" else y - t
    short, _ = _net(dims, seed, net.sp.timesteps - 1)
    counts = short(x)[1][-1]
    assert counts.sum() > 0
    torch.testing.assert_close(grads[-1], (e / len(x)).T @ counts / net.sp.timesteps, rtol=1e-5, atol=1e-7)
    assert [g.shape for g in grads] == [w.shape for w in ws] and float(grads[0].abs().sum()) > 0
    np.testing.assert_array_equal(net.weights[0].numpy(), ws[0].numpy())  # nothing moved


def test_the_rule_steps_are_those_the_training_loop_applies():
    from fo_edge.data import load_dataset
    from fo_edge.engine.spiking_torch import train_spiking_torch

    data = load_dataset("digits").limited(16)
    dims = (64, 16, 10)
    _, ws = _net(dims, 3)
    config = FTPConfig()
    profile = load_device("loihi-like")
    trained, _ = train_spiking_torch([w.numpy() for w in ws], data, "ftp", config, profile, error="ce", lr=0.3,
                                     epochs=1, batch_size=16, seed=0, hidden_error="central")
    from fo_edge.engine.plan import epoch_order

    order = epoch_order(len(data.x_train), 0, 0)
    x, t = torch.as_tensor(data.x_train[order]), torch.eye(10)[torch.as_tensor(data.y_train[order])]
    net = SpikingMLP([w.clone() for w in ws], profile.spiking)
    proj = torch.tensor(ftp_feedback(dims, config), dtype=torch.float32)
    steps, _ = spiking_updates(lambda phase, xb, inject=None: net(xb, inject=inject), net.weights, x, t, "ftp",
                               config, proj, error="ce", temperature=1.0, hidden_error="central",
                               timesteps=profile.spiking.timesteps, lr=0.3)
    for w, step, final in zip(ws, steps, trained):
        np.testing.assert_array_equal((w - step).numpy(), final)


@pytest.mark.parametrize("backend, rule", [("numba", "ftp"), ("torch", "foton"), ("numba", "pepita")])
def test_diagnose_reads_a_saved_spiking_run(tmp_path, backend, rule):
    fo_edge.simulate(rule=rule, device="loihi-like", dataset="digits", model="64-24-10", limit=200,
                     backend=backend, out=str(tmp_path / "r"))
    result = diagnose(str(tmp_path / "r"), batches=2)
    assert result["layers"] == 2 and len(result["cosine"][0]) == 2 and len(result["drift"][0]) == 2
    assert result["activation"] == "loihi-cuba" and all(-1.0 <= c <= 1.0 for c in result["cosine"][0])
    assert result["cosine"][0][-1] > 0.9  # every rule's output step is e^T c / (T B): BP's up to the last step


def test_the_cli_diagnoses_a_spiking_run(tmp_path):
    fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", limit=100,
                     out=str(tmp_path / "r"))
    result = CliRunner().invoke(cli, ["diagnose", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "loihi-cuba" in result.output and "cosine with BP" in result.output
