"""NIR export of spiking runs: the graph's nodes carry the profile's neuron, read back by nir and imported by
snnTorch they predict what fo-edge's float and integer spiking inference predict; CLI paths and refusals."""
import json
import subprocess
import sys

import nir
import numpy as np
import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.cli import cli
from fo_edge.errors import ConfigError
from fo_edge.export_nir import MIN_NIR_AGREEMENT, NIR_DT, export_nir
from fo_edge.runs import load_weights


@pytest.fixture(scope="module")
def spiking_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nir") / "loihi"
    fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-24-16-10", epochs=2, limit=400,
                     out=str(out))
    return out


def test_graph_holds_the_trained_weights_and_the_profiles_neuron(spiking_run, tmp_path):
    report = export_nir(spiking_run, tmp_path / "m.nir")
    graph = nir.read(str(tmp_path / "m.nir"))
    assert set(graph.nodes) == {"input", "dense0", "lif0", "dense1", "lif1", "dense2", "output"}
    assert ("dense0", "lif0") in graph.edges and ("dense2", "output") in graph.edges
    stored = load_weights(spiking_run, [64, 24, 16, 10])
    for l in range(3):  # real weights: mantissa x 2**exp, exactly
        np.testing.assert_array_equal(graph.nodes[f"dense{l}"].weight,
                                      (stored[f"W{l}"] * 2.0 ** int(stored[f"exp{l}"])).astype(np.float32))
    lif = graph.nodes["lif0"]
    # loihi-like: du = 4095 -> tau_syn = dt (alpha 0), dv = 0 -> beta 1 in float32, threshold 1.0, reset to 0
    np.testing.assert_allclose(lif.tau_syn, NIR_DT)
    assert np.float32(1 - NIR_DT / lif.tau_mem[0]) == np.float32(1.0)
    np.testing.assert_array_equal(lif.v_threshold, 1.0)
    assert graph.metadata["readout_steps"] == 16 - 3 and graph.metadata["synaptic_delay_steps"] == 1
    assert report["passed"] and report["agreement_float"] >= MIN_NIR_AGREEMENT
    assert report["agreement_device"] >= MIN_NIR_AGREEMENT
    saved = json.loads((tmp_path / "m.nir.verify.json").read_text())
    assert saved["agreement_float"] == report["agreement_float"] and saved["test_samples"] == report["test_samples"] > 0


def test_cli_nir_export_and_its_errors(spiking_run, tmp_path):
    ok = CliRunner().invoke(cli, ["export", str(spiking_run), "--nir", str(tmp_path / "a.nir")])
    assert ok.exit_code == 0, ok.output
    assert "verified in snnTorch" in ok.output and (tmp_path / "a.nir.verify.json").exists()
    both = CliRunner().invoke(cli, ["export", str(spiking_run), "--nir", str(tmp_path / "b.nir"),
                                    "--out", str(tmp_path / "b.onnx")])
    assert both.exit_code == 2 and "exactly one of" in both.output
    suffix = subprocess.run([sys.executable, "-m", "fo_edge", "export", str(spiking_run), "--nir",
                             str(tmp_path / "c.onnx")], capture_output=True, text=True, timeout=120)
    assert suffix.returncode != 0 and "ending in .nir" in suffix.stderr and "Traceback" not in suffix.stderr


def test_failed_verification_exits_non_zero_and_keeps_the_report(spiking_run, tmp_path, monkeypatch):
    monkeypatch.setattr("fo_edge.export_nir.MIN_NIR_AGREEMENT", 1.01)  # no agreement can pass
    result = CliRunner().invoke(cli, ["export", str(spiking_run), "--nir", str(tmp_path / "f.nir")])
    assert result.exit_code == 1 and "FAILED verification" in result.output
    assert json.loads((tmp_path / "f.nir.verify.json").read_text())["passed"] is False


def test_non_spiking_runs_are_refused(tmp_path):
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=100,
                     out=str(tmp_path / "mcu"))
    with pytest.raises(ConfigError, match="no spiking neurons"):
        export_nir(tmp_path / "mcu", tmp_path / "x.nir")
    assert not (tmp_path / "x.nir").exists()

