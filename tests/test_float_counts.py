"""The float torch path counts in the device kernels' schema (accounting.float_counts): a hand-worked layer, then
the same run on a float device through the Numba kernels and through torch must give the same counters, so
gpu-fp32 runs report energy whichever backend runs them."""
import numpy as np
import pytest
import torch

import fo_edge
from fo_edge.accounting.counters import counters_array
from fo_edge.accounting.energy import energy_record
from fo_edge.accounting.float_counts import FloatMeter
from fo_edge.device import load_device
from fo_edge.kernels.counters import (COUNTERS, FORWARD, INFERENCE, MACS_DENSE, MACS_EFF, NEURON_ACTIVE,
                                      NEURON_INACTIVE, PHASES, RECOMPUTE, SRAM_READ, SRAM_WRITE, SYN_EVENTS,
                                      UPDATE, WEIGHT_WRITES)

WRITES = COUNTERS.index("weight_writes")


def test_a_layer_counted_by_hand():
    """hin (2, 3) with three zeros, W (2, 3) with a zero column: effective MACs are the nonzero input x nonzero
    weight pairs, summed column by column: column 0: 2 inputs x 2 weights, column 1: 1 x 0, column 2: 0 x 2."""
    meter = FloatMeter((3, 2, 2), load_device("gpu-fp32"), "ftp", "stream")
    hin = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    w = torch.tensor([[1.0, 0.0, 5.0], [2.0, 0.0, -1.0]])
    out = torch.tensor([[0.0, 4.0], [1.0, 2.0]])
    meter.forward(FORWARD, 0, hin, w, out)
    c = meter.counts()
    assert c[FORWARD, 0, MACS_DENSE] == 2 * 2 * 3
    assert c[FORWARD, 0, MACS_EFF] == c[FORWARD, 0, SYN_EVENTS] == 2 * 2 + 1 * 0 + 0 * 2
    assert (c[FORWARD, 0, NEURON_ACTIVE], c[FORWARD, 0, NEURON_INACTIVE]) == (3, 1)
    assert c[FORWARD, 0, SRAM_READ] == 2 * (2 * 3 * 4 + 3 * 4)  # every weight and the input row, per sample
    assert c[FORWARD, 0, SRAM_WRITE] == 2 * 2 * 4
    assert (c[RECOMPUTE, 0] == c[FORWARD, 0]).all()  # stream: the device recomputes hidden layer 1
    meter.update(0, 2, w, w - torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 1e-9]]), velocity=False)
    assert meter.counts()[UPDATE, 0, WEIGHT_WRITES] == 1  # -1 - 1e-9 rounds back to -1 in float32


def _counters(backend, rule, schedule, **options):
    run = fo_edge.simulate(rule=rule, device="gpu-fp32", backend=backend, dataset="digits", model="64-32-16-10",
                           epochs=2, limit=96, batch_size=32, schedule=schedule, **options)
    return run, counters_array(run.record["counters"])


CASES = [
    ("ftp", "stream", {}),
    ("ftp", "store", {"rule_options": {"target": "error_preactivation"}}),
    ("ftp", "stream", {"rule_options": {"target": "label", "output_loss": "local", "y_hat": "raw"},
                       "activation": "relu", "dropout": 0.2}),
    ("pepita", "stream", {"rule_options": {"output_error": "modulated"}, "error": "mse", "activation": "relu"}),
    ("foton", "stream", {"rule_options": {"bjorck_tol": 1e-3, "ortho_every": 2, "refresh_every": 2},
                         "dropout": 0.1}),
    ("foton", "store", {"rule_options": {"bjorck_tol": 0.5}}),
    ("bp", "stream", {"momentum": 0.9, "weight_decay": 1e-4, "dropout": 0.2, "activation": "relu"}),
]


@pytest.mark.parametrize("rule, schedule, options", CASES)
def test_torch_counts_what_the_kernels_count_on_a_float_device(tmp_path, rule, schedule, options):
    """Every counter equal between the torch path and the Numba kernels on gpu-fp32 (two epochs, with evaluation),
    but weight writes: the kernels simulate the float device in float64, so an update below float32's resolution
    changes a weight there and not on torch (PEPITA's small steps show it); those agree to 1 %."""
    torch_run, ours = _counters("torch", rule, schedule, out=str(tmp_path / "t"), **options)
    kernel_run, kernels = _counters("numba", rule, schedule, out=str(tmp_path / "n"), **options)
    other = [c for c in range(len(COUNTERS)) if c != WRITES]
    differ = [(PHASES[p], l, COUNTERS[other[k]]) for p, l, k in np.argwhere(ours[:, :, other] != kernels[:, :, other])]
    assert not differ
    np.testing.assert_allclose(ours[:, :, WRITES], kernels[:, :, WRITES], rtol=0.01)
    assert ours[:, :, MACS_DENSE].sum() > 0 and ours[INFERENCE, :, MACS_DENSE].sum() > 0
    record = torch_run.record
    for samples in ("training_samples", "inference_samples"):
        assert record["counters"][samples] == kernel_run.record["counters"][samples] > 0
    assert record["counters"]["training_samples"] == 2 * 96
    expected = energy_record(ours, load_device("gpu-fp32").energy_pj, training_samples=2 * 96,
                             inference_samples=record["counters"]["inference_samples"],
                             layers=record["counters"]["layers"])
    assert record["energy"] == expected and record["energy"]["modes"]["op"]["total_pj"] > 0


def test_a_gpu_fp32_run_prints_its_energy(tmp_path):
    from click.testing import CliRunner

    from fo_edge.cli import cli

    result = CliRunner().invoke(cli, ["simulate", "--device", "gpu-fp32", "--rule", "ftp", "--dataset", "digits",
                                       "--model", "64-32-10", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "backend" in result.output and "torch" in result.output
    assert "energy / training sample" in result.output
    assert "not counted" not in result.output


def test_the_torch_path_accounts_and_refuses_device_memory_as_the_kernels_do(tmp_path):
    """A float device of 44 KiB (a user's TOML): FTP's streamed working set fits and the torch run records the same
    memory plan as the Numba run; BP's stored activations do not, and the torch path refuses it, naming them,
    before anything is written."""
    from pathlib import Path

    from fo_edge.errors import DeviceMemoryError

    source = (Path(fo_edge.__file__).parent / "profiles" / "gpu-fp32.toml").read_text()
    small = source.replace('id = "gpu-fp32"', 'id = "fp32-44k"').replace(
        "sram_bytes = { value = 85899345920,", "sram_bytes = { value = 45056,")
    assert small != source and "45056" in small
    device = tmp_path / "fp32-44k.toml"
    device.write_text(small)
    common = dict(device=str(device), dataset="digits", model="64-24x4-10", limit=96, batch_size=32)
    runs = {backend: fo_edge.simulate(rule="ftp", backend=backend, out=str(tmp_path / backend), **common)
            for backend in ("torch", "numba")}
    assert runs["torch"].record["memory"] == runs["numba"].record["memory"]
    assert runs["torch"].record["memory"]["peak_bytes"] <= 45056
    with pytest.raises(DeviceMemoryError, match="stored_activations"):
        fo_edge.simulate(rule="bp", backend="torch", batch_size=32, out=str(tmp_path / "bp"),
                         **{k: v for k, v in common.items() if k != "batch_size"})
    assert not (tmp_path / "bp").exists()


@pytest.mark.parametrize("model, activation, options", [("c2-c4-10", "tanh", {"refresh_every": 2}),
                                                         ("c4-10", "relu", {})])
def test_torch_conv_counts_what_the_conv_kernels_count(tmp_path, model, activation, options):
    """FOTON on a conv net, two epochs on gpu-fp32: the torch path's counters (accounting.conv_float_counts) equal
    the Numba conv path's, every one, and so its energy."""
    runs = {backend: fo_edge.simulate(rule="foton", device="gpu-fp32", backend=backend, dataset="digits", model=model,
                                      epochs=2, limit=96, batch_size=16, activation=activation, rule_options=options,
                                      out=str(tmp_path / backend)) for backend in ("torch", "numba")}
    ours, kernels = (counters_array(runs[b].record["counters"]) for b in ("torch", "numba"))
    np.testing.assert_array_equal(ours, kernels)
    assert ours[:, :, MACS_DENSE].sum() > 0
    assert runs["torch"].record["energy"] == runs["numba"].record["energy"]


def test_bp_on_a_conv_net_counts_its_backward_pass_by_hand(tmp_path):
    """One BP step (batch 16) on c2-c4-10 over 8x8 digits: e back through the dense W^T (16 inputs = 4 channels x
    2 x 2) and the error of conv layer 2 (4 x 4 maps) back through its adjoint convolution (2 x 3 x 3 taps per
    output); layer 1's error is never formed. Its forward pass counts as FOTON's on the same weights."""
    from fo_edge.kernels.counters import BACKWARD

    bp = fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="c2-c4-10", limit=16, batch_size=16,
                          out=str(tmp_path / "bp"))
    foton = fo_edge.simulate(rule="foton", device="gpu-fp32", dataset="digits", model="c2-c4-10", limit=16,
                             batch_size=16, out=str(tmp_path / "foton"))
    c_bp, c_foton = (counters_array(r.record["counters"]) for r in (bp, foton))
    assert c_bp[BACKWARD, :, MACS_DENSE].tolist() == [0, 16 * 4 * 4 * 4 * (2 * 9), 16 * 16 * 10, 0]
    assert (c_bp[FORWARD] == c_foton[FORWARD]).all()
    assert c_bp[UPDATE, :, MACS_DENSE].tolist() == c_foton[UPDATE, :, MACS_DENSE].tolist()
    assert bp.record["energy"]["modes"]["op"]["by_phase_pj"]["backward"] > 0


def test_the_snntorch_path_counts_as_the_spiking_kernels_do(tmp_path):
    """The same FTP run on loihi-like through the bit-exact kernels and through snnTorch: the counts that follow
    from shapes (timesteps, neuron updates, synaptic updates, update MACs) are equal, and those that follow from
    the spikes agree as the two neuron models' spikes do (float and integer LIF differ by rounding; the integer
    weights have more zeros, so fewer synaptic events)."""
    common = dict(rule="ftp", device="loihi-like", dataset="digits", model="64-32-10", limit=200, epochs=1,
                  batch_size=20)
    chip = fo_edge.simulate(backend="numba", out=str(tmp_path / "n"), **common).record["counters"]
    snn = fo_edge.simulate(backend="torch", out=str(tmp_path / "t"), **common).record["counters"]
    assert snn["layers"] == chip["layers"] and snn["training_samples"] == chip["training_samples"]
    for phase in ("forward", "modulated_forward", "update", "inference"):
        a, b = snn["by_phase"][phase], chip["by_phase"][phase]
        for name in ("timesteps", "synaptic_updates", "macs_dense"):
            assert a[name] == b[name], (phase, name)
        assert a["neuron_updates_active"] + a["neuron_updates_inactive"] == \
            b["neuron_updates_active"] + b["neuron_updates_inactive"], phase
        for name in ("spikes", "synaptic_events", "acs_effective"):
            assert (a[name] == 0) == (b[name] == 0), (phase, name)
            if b[name]:
                assert 0.5 < a[name] / b[name] < 2.0, (phase, name, a[name], b[name])
