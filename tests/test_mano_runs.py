"""MANO through the run lifecycle: the CLI on Darcy and images, its counters against torch's own FLOP counter, its
memory plan against what autograd keeps, and the refusals."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import fo_edge
from fo_edge.accounting.mano_counts import MANOMeter
from fo_edge.cli import cli
from fo_edge.device import load_device
from fo_edge.engine.mano_loop import MANOTrainConfig, bp_step, ftp_step
from fo_edge.errors import ConfigError, DeviceMemoryError
from fo_edge.kernels.counters import BACKWARD, FORWARD, MACS_DENSE, MODULATED, RECOMPUTE, UPDATE, WEIGHT_WRITES
from fo_edge.models.mano import MANOClassifier, MANOOperator, parse_mano_spec
from fo_edge.rules.base import feedback_matrix
from fo_edge.rules.mano_memory import plan_mano_memory, saved_bytes
from fo_edge.runs import read_run


def test_fo_edge_simulate_trains_mano_on_darcy_and_reports_relative_l2(tmp_path):
    out = tmp_path / "darcy"
    result = CliRunner().invoke(cli, ["simulate", "--rule", "bp", "--device", "gpu-fp32", "--dataset", "darcy32",
                                      "--model", "mano:dim=16", "--limit", "64", "--batch-size", "16",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "test relative L2" in result.output and "energy / training sample" in result.output
    record = read_run(out)
    assert record["config"]["task"] == "field" and record["dataset"]["name"] == "darcy32"
    assert 0 < record["final"]["relative_l2"] < 2 and record["final"]["test_accuracy"] is None
    assert record["counters"]["training_samples"] == 64 and record["energy"]["modes"]["op"]
    weights = np.load(out / "weights.npz")
    assert "lift.weight" in weights.files and weights["lift.weight"].dtype == np.float32
    report = CliRunner().invoke(cli, ["energy-report", str(out), "--format", "json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)[0]["relative_l2"] == record["final"]["relative_l2"]


def test_a_darcy_set_needs_a_mano_model_and_mano_defaults_to_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--device", "gpu-fp32", "--dataset", "darcy32",
                           "--model", "1024-64-10", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train it with --model mano" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()
    run = fo_edge.simulate(rule="ftp", device="gpu-fp32", dataset="darcy32", limit=16, batch_size=8,
                           out=str(tmp_path / "d"))
    assert run.record["config"]["model"] == "mano" and run.accuracy is None


def _classifier_step(rule: str, block_loss: str = "target"):
    torch.manual_seed(0)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=2, heads=2, patch=2, window=2,
                           readouts=block_loss == "readout")
    x, t = torch.rand(6, 64), torch.randint(0, 10, (6,))
    return model, x, t, MANOTrainConfig(rule=rule, block_loss=block_loss)


def test_bp_counters_are_what_torch_counts_of_the_same_step():
    """A BP step's multiply-accumulates (forward, backward and weight gradients) equal half the FLOPs of torch's
    own FlopCounterMode over the same step (it counts every matmul, 2 FLOPs a MAC)."""
    model, x, t, config = _classifier_step("bp")
    meter = MANOMeter(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with FlopCounterMode(display=False) as flops:
        bp_step(model, x, t, config, optimizer, meter)
    c = meter.counters
    assert c[FORWARD, :, MACS_DENSE].sum() + c[BACKWARD, :, MACS_DENSE].sum() + c[UPDATE, :, MACS_DENSE].sum() \
        == flops.get_total_flops() // 2
    params = sum(p.numel() for p in model.parameters())
    assert 0 < c[UPDATE, :, WEIGHT_WRITES].sum() <= params


def test_ftp_counters_charge_each_pass_to_its_phase():
    model, x, t, config = _classifier_step("ftp")
    meter = MANOMeter(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.tensor(feedback_matrix((8, 10), 10, 1.0, 0), dtype=torch.float32)
    with FlopCounterMode(display=False) as flops:
        with torch.no_grad():
            model(x)
    forward = flops.get_total_flops() // 2
    ftp_step(model, x, t, config, g, optimizer, meter)
    c = meter.counters
    assert c[FORWARD, :, MACS_DENSE].sum() == forward  # the clean pass: the model's forward
    # the target pass runs blocks 2..L and projects e through G (6 x 10 x 8 MACs, no stage's column)
    assert c[MODULATED, -1, MACS_DENSE] == 6 * 10 * 8
    assert c[MODULATED, 2, MACS_DENSE] == c[FORWARD, 2, MACS_DENSE] and c[MODULATED, 1, MACS_DENSE] == 0
    # the local graphs recompute every stage once, and backpropagate within it only
    assert (c[RECOMPUTE, :-1, MACS_DENSE] == c[FORWARD, :-1, MACS_DENSE]).all()
    assert c[BACKWARD, :, MACS_DENSE].sum() > 0 and c[UPDATE, :, WEIGHT_WRITES].sum() > 0


def test_readout_counters_charge_each_readout_to_its_block():
    """block_loss readout: one pass with a graph per block (no target pass, no recompute), each block's readout
    (LayerNorm, pooled, then 8 x 10 MACs per sample) charged to its block, every stage backpropagated."""
    model, x, t, config = _classifier_step("ftp", block_loss="readout")
    meter = MANOMeter(model)
    with FlopCounterMode(display=False) as flops:
        with torch.no_grad():
            model(x)
    ftp_step(model, x, t, config, torch.zeros(8, 10), torch.optim.Adam(model.parameters(), lr=1e-3), meter)
    c = meter.counters
    assert c[MODULATED].sum() == 0 and c[RECOMPUTE].sum() == 0
    assert c[FORWARD, :, MACS_DENSE].sum() == flops.get_total_flops() // 2 + 2 * 6 * 8 * 10
    assert (c[UPDATE, :-1, MACS_DENSE] > 0).all() and c[UPDATE, :, WEIGHT_WRITES].sum() > 0


@pytest.mark.parametrize("options, message", [({"block_loss": "nudge"}, "block_loss must be readout or target"),
                                              ({"g_scale": 0.5}, "block_loss=target only"),
                                              ({"block_loss": "target", "g_scale": "big"}, "g_scale must be a number"),
                                              ({"gamma": 1}, "block_loss and g_scale, not gamma")])
def test_mano_ftp_options_are_checked_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        fo_edge.simulate(rule="ftp", device="gpu-fp32", dataset="digits", model="mano:dim=8,depth=1,heads=2,window=2",
                         rule_options=options)


def test_the_cli_takes_and_checks_the_block_loss(tmp_path):
    base = ["simulate", "--rule", "ftp", "--device", "gpu-fp32", "--dataset", "digits", "--limit", "32",
            "--model", "mano:dim=8,depth=1,heads=2,window=2"]
    bad = subprocess.run([sys.executable, "-m", "fo_edge", *base, "-o", "block_loss=nudge", "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "block_loss must be readout or target" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    good = CliRunner().invoke(cli, [*base, "-o", "block_loss=target", "--out", str(tmp_path / "t")])
    assert good.exit_code == 0, good.output
    assert read_run(tmp_path / "t")["config"]["block_loss"] == "target"


def test_a_readout_run_plans_no_targets_and_records_its_block_loss(tmp_path):
    common = dict(rule="ftp", device="gpu-fp32", dataset="digits", limit=64, batch_size=16,
                  model="mano:dim=8,depth=2,heads=2,window=2,patch=2")
    readout = fo_edge.simulate(out=str(tmp_path / "r"), **common).record
    target = fo_edge.simulate(out=str(tmp_path / "t"), rule_options={"block_loss": "target"}, **common).record
    assert readout["config"]["block_loss"] == "readout" and target["config"]["block_loss"] == "target"
    names = lambda record: set(record["memory"]["buffers"])  # noqa: E731
    assert "stage_output" in names(readout) and "stage_outputs_and_targets" in names(target)
    assert readout["memory"]["peak_bytes"] < target["memory"]["peak_bytes"]
    weights = np.load(tmp_path / "r" / "weights.npz")
    assert any(k.startswith("readouts.1.") for k in weights.files)
    assert not any(k.startswith("readouts.") for k in np.load(tmp_path / "t" / "weights.npz").files)


def test_saved_bytes_sees_what_autograd_keeps():
    w = torch.nn.Parameter(torch.randn(5, 7))
    x = torch.randn(3, 7)
    # y = tanh(x W^T): matmul saves x (W is a parameter, excluded), tanh saves its output y (3 x 5)
    assert saved_bytes(lambda: torch.tanh(x @ w.T), [w]) == 4 * (3 * 7 + 3 * 5)


def test_memory_plan_bp_grows_with_depth_ftp_local_graph_does_not():
    device = load_device("gpu-fp32")

    def plan(rule, depth):
        torch.manual_seed(0)
        model = MANOOperator(dim=8, depth=depth, heads=2, window=4, size=16)
        return plan_mano_memory(model, (16, 16), device, rule, 4, 1, True).report()

    bp2, bp4 = plan("bp", 2), plan("bp", 4)
    ftp2, ftp4 = plan("ftp", 2), plan("ftp", 4)
    assert bp4["buffers"]["stored_activations"]["bytes"] > 1.8 * bp2["buffers"]["stored_activations"]["bytes"]
    assert ftp4["buffers"]["local_graph"]["bytes"] == ftp2["buffers"]["local_graph"]["bytes"]
    assert ftp4["peak_bytes"] < bp4["peak_bytes"]


def test_a_mano_run_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    text = (Path(fo_edge.__file__).parent / "profiles" / "gpu-fp32.toml").read_text()
    small = tmp_path / "small.toml"
    small.write_text(text.replace("value = 85899345920", "value = 65536").replace('id = "gpu-fp32"', 'id = "small"'))
    with pytest.raises(DeviceMemoryError, match="does not fit"):
        fo_edge.simulate(rule="bp", device=str(small), dataset="digits", model="mano", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec, message", [("mano:dim=0", "dim must be"), ("mano:depth", "KEY=VALUE"),
                                           ("mano:size=4", "KEY=VALUE"), ("mano:dim=x", "whole number"),
                                           ("mano:dim=12,heads=5", "multiple of heads")])
def test_bad_mano_specs_get_one_line(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_mano_spec(spec)
    with pytest.raises(ConfigError, match=message):
        fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model=spec)


@pytest.mark.parametrize("options, message", [(dict(momentum=0.9), "--momentum"), (dict(error="mse"), "--error"),
                                              (dict(rule_options={"beta": 1}), "g_scale"),
                                              (dict(device="loihi-like"), "digital non-spiking"),
                                              (dict(dataset="darcy32", normalize="standard"), "--normalize")])
def test_mano_runs_refuse_options_they_do_not_use(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        fo_edge.simulate(**{"rule": "bp", "device": "gpu-fp32", "dataset": "digits", "model": "mano",
                            "out": str(tmp_path / "r"), **options})
    assert not (tmp_path / "r").exists()


def test_mano_steps_adams_lr_down_at_the_milestones(tmp_path):
    common = dict(rule="bp", device="gpu-fp32", dataset="digits", model="mano:dim=8", limit=64, epochs=2,
                  batch_size=16)
    flat = fo_edge.simulate(out=str(tmp_path / "flat"), **common)
    stepped = fo_edge.simulate(out=str(tmp_path / "stepped"), lr_milestones=(1,), lr_gamma=0.5, **common)
    a, b = np.load(flat.run_dir / "weights.npz"), np.load(stepped.run_dir / "weights.npz")
    assert flat.history[0]["test_accuracy"] == stepped.history[0]["test_accuracy"]  # the first epoch is the same
    assert any(not np.array_equal(a[k], b[k]) for k in a.files)  # the second ran at half the lr


def test_mano_runs_export_to_onnx_that_onnxruntime_runs_as_pytorch_does(tmp_path):
    """A MANO classifier and a MANO operator export to fp32 ONNX through the CLI: the graph's outputs equal the
    PyTorch forward's on the run's test inputs (within FP32_ATOL), and its accuracy / relative L2 error is the
    run's own, which shows the export rebuilt the network and its inputs as training had them. --int8 and a
    weights.npz that lacks a parameter are refused with one line, the .onnx left unwritten."""
    from fo_edge.export import FP32_ATOL

    runs = {"digits": ["--model", "mano:dim=8,depth=1,heads=2,window=2,patch=2", "--normalize", "standard"],
            "darcy32": ["--model", "mano:dim=8,depth=1,heads=2,window=4", "--limit", "24"]}
    for dataset, options in runs.items():
        out = tmp_path / dataset
        trained = CliRunner().invoke(cli, ["simulate", "--rule", "ftp", "--device", "gpu-fp32", "--dataset", dataset,
                                           "--epochs", "1", "--batch-size", "16", "--out", str(out), *options])
        assert trained.exit_code == 0, trained.output
        result = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / f"{dataset}.onnx")])
        assert result.exit_code == 0 and "verified in onnxruntime" in result.output, result.output
        report = json.loads((tmp_path / f"{dataset}.onnx.verify.json").read_text())
        final = read_run(out)["final"]
        assert report["passed"] and report["max_abs_diff"] <= FP32_ATOL
        if dataset == "darcy32":
            assert report["test_samples"] == 24 and "relative L2 error" in result.output
            assert report["onnx_relative_l2"] == pytest.approx(final["relative_l2"], rel=1e-4)
        else:
            assert report["onnx_accuracy"] == pytest.approx(final["test_accuracy"])

    def export(*args):
        return subprocess.run([sys.executable, "-m", "fo_edge", "export", str(tmp_path / "digits"), *args],
                              capture_output=True, text=True, timeout=300)

    refused = export("--out", str(tmp_path / "q.onnx"), "--int8")
    assert refused.returncode == 2 and "without --int8" in refused.stderr and len(refused.stderr.splitlines()) == 1
    weights = dict(np.load(tmp_path / "digits" / "weights.npz"))
    weights.pop(sorted(weights)[0])
    np.savez(tmp_path / "digits" / "weights.npz", **weights)
    broken = export("--out", str(tmp_path / "b.onnx"))
    assert broken.returncode == 2 and "missing" in broken.stderr and len(broken.stderr.splitlines()) == 1
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "q.onnx").exists()


def test_mano_stage_updates_are_the_rules_gradients_and_move_nothing():
    """engine.mano_loop.stage_updates: BP's equals autograd's gradient of the task loss, stage by stage; FTP's
    head (trained on the task loss) equals BP's head; the parameters are left as they were."""
    from fo_edge.accounting.mano_counts import stage_of
    from fo_edge.engine.mano_loop import stage_updates

    torch.manual_seed(0)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=2, heads=2, patch=2, window=2)
    x, labels = torch.randn(6, 64), torch.tensor([0, 1, 2, 3, 4, 5])
    before = [p.detach().clone() for p in model.parameters()]
    bp = stage_updates(model, x, labels, MANOTrainConfig(rule="bp"), 10)
    ftp = stage_updates(model, x, labels, MANOTrainConfig(rule="ftp", seed=3, block_loss="target"), 10)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q) and p.grad is None
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), labels), list(model.parameters()))
    names = [name for name, _ in model.named_parameters()]
    for stage, got in enumerate(bp):
        want = torch.cat([g.reshape(-1) for name, g in zip(names, grads) if stage_of(name, 2) == stage])
        torch.testing.assert_close(got, want.to(torch.float64))
    assert len(ftp) == 4 and torch.equal(ftp[-1], bp[-1]) and not torch.allclose(ftp[1], bp[1])


def test_fo_edge_diagnose_reports_a_mano_run_per_stage(tmp_path):
    """A saved MANO run's diagnose: one cosine per stage (stem, blocks, head), 1 for BP; drift not defined."""
    for rule in ("bp", "ftp"):
        out = tmp_path / rule
        trained = CliRunner().invoke(cli, ["simulate", "--rule", rule, "--device", "gpu-fp32", "--dataset", "digits",
                                           "--model", "mano:dim=8,depth=2,heads=2,window=2,patch=2", "--epochs", "1",
                                           "--out", str(out)])
        assert trained.exit_code == 0, trained.output
        result = CliRunner().invoke(cli, ["diagnose", str(out), "--json", "--plot", str(tmp_path / f"{rule}.png")])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.split("plot written")[0])
        assert report["stages"] == ["stem", "block1", "block2", "head"] and report["drift"] == [[None] * 4]
        assert report["step"] == [-(-1348 // 32)]
        if rule == "bp":
            assert report["cosine"][0] == pytest.approx([1.0] * 4)
        else:
            assert report["cosine"][0][-1] == pytest.approx(1.0) and all(-1 <= c <= 1 for c in report["cosine"][0])
        table = CliRunner().invoke(cli, ["diagnose", str(out)])
        assert table.exit_code == 0 and "block2" in table.output and "n/a" in table.output
        assert (tmp_path / f"{rule}.png").stat().st_size > 0


@pytest.mark.parametrize("dataset", ["darcy32", "digits"])
def test_mano_fit_tool_reports_both_splits_and_the_recorded_test_metric(tmp_path, dataset):
    """tools/mano_fit.py reads a finished run back: its test line equals run.json's final metric (the same
    weights, data and metric), its train line is a metric in range; a directory without a run is one line, exit 1."""
    run = fo_edge.simulate(rule="bp", device="gpu-fp32", dataset=dataset, limit=32, batch_size=8,
                           model="mano:dim=8,depth=1,heads=2,window=2", out=str(tmp_path / "r"))
    tool = Path(__file__).resolve().parents[1] / "tools" / "mano_fit.py"
    proc = subprocess.run([sys.executable, str(tool), str(tmp_path / "r"), "--threads", "1"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines()[1:])
    train, test = float(lines["train"].split()[-1]), float(lines["test"].split()[-3])
    final = run.record["final"]
    recorded = final["relative_l2"] if dataset == "darcy32" else final["test_accuracy"]
    assert test == pytest.approx(recorded, abs=1e-4)
    assert (0 < train < 2) if dataset == "darcy32" else (0 <= train <= 1)
    bad = subprocess.run([sys.executable, str(tool), str(tmp_path / "missing")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "run.json" in bad.stderr
