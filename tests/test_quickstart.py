"""The README's quick start (`fo-edge simulate --device loihi-like --rule ftp`) end to end at a reduced size:
its defaults (model, hidden error, lr, Lava's weight format) and bit-identical reruns."""
import json
import subprocess
import sys

import numpy as np

from fo_edge.rules.spiking_binding import SPIKING_DEFAULT_HIDDEN_ERROR, SPIKING_DEFAULT_LR, SPIKING_DEFAULT_MODEL


def _quick_start(out):
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--device", "loihi-like", "--rule", "ftp",
                           "--limit", "1500", "--out", str(out), "--json"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_quick_start_defaults_and_determinism(tmp_path):
    first, second = _quick_start(tmp_path / "a"), _quick_start(tmp_path / "b")
    config = first["config"]
    assert config["dims"] == [int(d) for d in SPIKING_DEFAULT_MODEL.split("-")]
    assert config["hidden_error"] == SPIKING_DEFAULT_HIDDEN_ERROR and config["lr"] == SPIKING_DEFAULT_LR["ftp"]
    assert first["final"]["test_accuracy"] > 0.6  # 1,500 training samples, one epoch (measured 0.72)
    assert first["final"]["test_accuracy"] == second["final"]["test_accuracy"]
    assert first["counters"] == second["counters"]
    a, b = (np.load(tmp_path / name / "weights.npz") for name in ("a", "b"))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
        if key.startswith("W"):
            assert np.all(a[key] % 2 == 0)  # Lava's default format: even weights only
