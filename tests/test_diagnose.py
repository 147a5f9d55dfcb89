"""`fo-edge diagnose`: the cosine/drift measures on closed cases, a fresh run, a saved run, and bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.cli import cli
from fo_edge.diagnose import layer_diagnostics
from fo_edge.models import init_weights


def test_foton_on_a_linear_orthogonal_net_is_bp():
    weights = init_weights((16, 16, 16, 16), seed=1)
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((12, 16)), np.eye(16)[rng.integers(0, 16, 12)]
    cosines, drifts = layer_diagnostics("foton", weights, x, t, "identity", error="mse")
    assert cosines == pytest.approx([1.0] * 3, abs=1e-6)
    assert drifts == pytest.approx([0.0] * 3, abs=1e-5)


def test_drift_measures_distance_from_orthogonal():
    weights = [w * 2 for w in init_weights((8, 8, 4), seed=0)]  # W^T W = 4 I on the square layer
    x, t = np.ones((2, 8)), np.eye(4)[[0, 1]]
    _, drifts = layer_diagnostics("bp", weights, x, t, "relu")
    assert drifts[0] == pytest.approx(np.sqrt(8) * 3, rel=1e-5) and drifts[1] == pytest.approx(2 * 3, rel=1e-5)


def test_fresh_run_json_and_plot(tmp_path):
    result = CliRunner().invoke(cli, ["diagnose", "--rule", "pepita", "--model", "64-32x2-10", "--dataset", "digits",
                                      "--steps", "30", "--every", "10", "--json", "--plot", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["step"] == [0, 10, 20, 29] and len(data["cosine"][0]) == 3 == len(data["drift"][-1])
    assert data["cosine"][-1][-1] > 0.99  # the output layer: e h^T, with PEPITA's h from the modulated pass
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_run_and_bad_input(tmp_path):
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=200,
                     out=str(tmp_path / "run"))
    result = CliRunner().invoke(cli, ["diagnose", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rule"] == "ftp" and len(data["cosine"][0]) == 2 and -1 <= data["cosine"][0][0] <= 1
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "diagnose", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr and "Traceback" not in proc.stderr
