"""The fo-edge CLI end to end: a real short run through a subprocess, listings through click's runner, and
bad input as one clear line with exit code 2, no traceback and no partial run.json."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fo_edge.cli import cli, main
from fo_edge.rules.spiking_binding import SPIKING_DEFAULT_LR


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fo_edge", *args], capture_output=True, text=True, timeout=300)


def test_simulate_subprocess_writes_valid_run_json(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("simulate", "--device", "gpu-fp32", "--rule", "foton", "--dataset", "digits",
                   "--model", "64-32-10", "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["config"]["rule"] == "foton"
    assert len(record["history"]) == 2 and 0.0 <= record["final"]["test_accuracy"] <= 1.0
    assert record["config"]["dims"] == [64, 32, 10] and record["versions"]["torch"].startswith("2.13")
    assert not list(out.glob(".*.tmp"))


def test_simulate_json_flag(tmp_path):
    proc = run_cli("simulate", "--device", "gpu-fp32", "--rule", "bp", "--dataset", "digits", "--model", "64-10",
                   "--limit", "200", "--out", str(tmp_path / "r"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dataset"]["n_train"] == 200


@pytest.mark.parametrize("args, needle", [
    (["--rule", "sgd"], "'bp', 'foton', 'ftp', 'pepita'"),
    (["--device", "tpu-v9"], "choose one of fpga-fixed16, gpu-fp32"),
    (["--dataset", "imagenet"], "'mnist', 'fashion-mnist', 'digits'"),
    (["--model", "784-abc-10"], "malformed --model"),
    (["--lr", "0"], "--lr must be a number in (0, 1000]"),
    (["--lr", "-1"], "--lr must be a number in (0, 1000]"),
    (["--lr", "1e30"], "--lr must be a number in (0, 1000]"),
    (["--lr", "nan"], "--lr must be a number in (0, 1000]"),
    (["--epochs", "0"], "--epochs must be an integer in [1, 100,000]"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4,294,967,295]"),
    (["--batch-size", "0"], "--batch-size must be an integer in [1, 1,048,576]"),
    (["--torch-device", "cuda"], "no CUDA device"),
    (["--torch-device", "tpu"], "is not a torch device"),
    (["--momentum", "1.5"], "--momentum must be a number in [0, 0.999]"),
    (["--model", "100-10"], "does not fit digits"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = run_cli("simulate", "--device", "gpu-fp32", "--dataset", "digits", "--model", "64-10",
                   "--out", str(out), *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (out / "run.json").exists()


def test_unwritable_out_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("simulate", "--device", "gpu-fp32", "--dataset", "digits", "--model", "64-10",
                   "--out", str(blocker / "run"))
    assert proc.returncode == 2 and "not writable" in proc.stderr and "Traceback" not in proc.stderr


def test_devices_and_rules_listings():
    runner = CliRunner()
    devices = runner.invoke(cli, ["devices"])
    assert devices.exit_code == 0
    for name in ("gpu-fp32", "mcu-int8", "loihi-like", "memristor-rram", "fpga-fixed16"):
        assert name in devices.output
    listed = json.loads(runner.invoke(cli, ["rules", "--json"]).output)
    assert {r["id"] for r in listed} == {"bp", "pepita", "foton", "ftp"}
    assert {r["id"]: r["forward_only"] for r in listed}["bp"] is False


def test_main_turns_usage_errors_into_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--rule", "nope"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("fo-edge: error:")


def test_simulate_conv_model_end_to_end(tmp_path):
    """A conv spec routes to the BCOP conv net: FOTON on the integer device, counters and energy recorded; it
    exports to int8 ONNX bit-exactly, and NIR export refuses it with one line."""
    out = tmp_path / "conv"
    proc = run_cli("simulate", "--device", "mcu-int8", "--rule", "foton", "--dataset", "digits", "--model", "c4-10",
                   "--limit", "300", "-o", "temperature=0.25", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "peak device memory" in proc.stdout and "not accounted" not in proc.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["config"]["conv"]["channels"] == [4]
    assert record["config"]["dims"] == [64, 256, 10]
    assert record["counters"]["totals"]["macs_dense"] > 0 and record["energy"]["modes"]
    export = run_cli("export", str(out), "--out", str(tmp_path / "m.onnx"), "--int8")
    assert export.returncode == 0 and "verified in onnxruntime" in export.stdout, export.stderr
    assert json.loads((tmp_path / "m.onnx.verify.json").read_text())["max_logit_diff"] == 0.0
    nir = run_cli("export", str(out), "--nir", str(tmp_path / "m.nir"))
    assert nir.returncode == 2 and "conv-net run" in nir.stderr and "Traceback" not in nir.stderr
    bad = run_cli("simulate", "--device", "mcu-int8", "--rule", "ftp", "--dataset", "digits", "--model", "c4-10",
                  "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and "MLP-only" in bad.stderr and not (tmp_path / "b").exists()
    spiking = run_cli("simulate", "--rule", "foton", "--dataset", "digits", "--model", "c4-10", "--out",
                      str(tmp_path / "s"))  # the default device, loihi-like, is spiking
    assert spiking.returncode == 2 and "conv models run on" in spiking.stderr and not (tmp_path / "s").exists()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_simulate_spiking_device_end_to_end(tmp_path, backend):
    """loihi-like trains a spiking net on both paths; the device path charges static energy over its time model."""
    out = tmp_path / backend
    proc = run_cli("simulate", "--device", "loihi-like", "--rule", "ftp", "--dataset", "digits", "--model",
                   "64-32-10", "--limit", "300", "--backend", backend, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["activation"] == "loihi-cuba"
    assert record["config"]["lr"] == SPIKING_DEFAULT_LR["ftp"] and record["config"]["hidden_error"] == "central"
    if backend == "numba":
        static = record["energy"]["static"]
        assert static["cores_used"] >= 2 and static["training_s"] > 0 and static["per_training_sample_pj"] > 0
        assert "static energy / training sample" in proc.stdout
        assert record["counters"]["totals"]["spikes"] > 0
    bad = run_cli("simulate", "--device", "loihi-like", "--rule", "bp", "--dataset", "digits", "--out",
                  str(tmp_path / "bad"))
    assert bad.returncode == 2 and "backward pass through the spike trains" in bad.stderr


def test_threads_change_no_numba_result_and_too_many_are_refused(tmp_path):
    """--threads 1 and --threads 2 train the same int8 weights and counters (the kernels' parallel loops keep
    per-row tallies and draw counter-based); a count beyond the machine's cores is one line, exit 2."""
    import numpy as np

    from fo_edge.engine.threads import available_threads

    records = []
    for threads in sorted({1, min(2, available_threads())}):
        out = tmp_path / f"t{threads}"
        proc = run_cli("simulate", "--device", "mcu-int8", "--rule", "ftp", "--dataset", "digits", "--model",
                       "64-32-10", "--batch-size", "16", "--limit", "400", "--threads", str(threads), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        weights = np.load(out / "weights.npz")
        records.append(({k: weights[k] for k in weights.files}, json.loads((out / "run.json").read_text())))
    for (w_a, r_a), (w_b, r_b) in zip(records, records[1:]):
        assert all(np.array_equal(w_a[k], w_b[k]) for k in w_a)
        assert r_a["counters"] == r_b["counters"]
    proc = run_cli("simulate", "--device", "mcu-int8", "--rule", "ftp", "--dataset", "digits", "--model",
                   "64-10", "--threads", str(available_threads() + 1), "--out", str(tmp_path / "many"))
    assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "many").exists()
    proc = run_cli("simulate", "--device", "mcu-int8", "--rule", "ftp", "--dataset", "digits", "--model",
                   "64-10", "--threads", "0", "--out", str(tmp_path / "zero"))
    assert proc.returncode == 2 and "threads" in proc.stderr and "Traceback" not in proc.stderr
