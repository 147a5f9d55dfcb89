"""Device runs on the Numba path: bit-exact determinism with integer profiles, every profile trains end to
end, and the memory refusal/fit pair (BP refused where FOTON and FTP fit and train)."""
import json
from pathlib import Path

import numpy as np
import pytest

import fo_edge
from fo_edge.device import list_devices, load_device
from fo_edge.engine.stream import plan_memory
from fo_edge.errors import ConfigError, DeviceMemoryError
from fo_edge.models import parse_model_spec

DEEP = "784-32x60-10"


def _run(tmp_path, name, **kw):
    base = dict(dataset="digits", model="64-32-10", epochs=2, batch_size=16, backend="numba",
                out=str(tmp_path / name))
    base.update(kw)
    return fo_edge.simulate(**base)


@pytest.mark.parametrize("device", ["mcu-int8", "fpga-fixed16", "loihi-like"])
@pytest.mark.parametrize("rule", ["foton", "ftp", "pepita", "bp"])
def test_integer_runs_are_bit_identical_for_the_same_seed(tmp_path, device, rule):
    if device == "loihi-like" and rule == "bp":
        with pytest.raises(ConfigError, match="backward pass through the spike trains"):
            _run(tmp_path, "a", rule=rule, device=device)
        return
    a = _run(tmp_path, "a", rule=rule, device=device, seed=3, limit=300, lr=0.05)
    b = _run(tmp_path, "b", rule=rule, device=device, seed=3, limit=300, lr=0.05)
    wa, wb = np.load(a.run_dir / "weights.npz"), np.load(b.run_dir / "weights.npz")
    assert wa["W0"].dtype == np.int32  # integer mantissas are what is stored
    for key in wa.files:
        np.testing.assert_array_equal(wa[key], wb[key])
    assert a.record["counters"] == b.record["counters"]
    c = _run(tmp_path, "c", rule=rule, device=device, seed=4, limit=300, lr=0.05)
    assert not np.array_equal(np.load(c.run_dir / "weights.npz")["W0"], wa["W0"])


@pytest.mark.parametrize("device", list_devices())
def test_every_profile_trains_digits_end_to_end(tmp_path, device):
    # spiking devices: the central hidden error halves the step at a rectified neuron, so FTP's spiking
    # default lr is 0.2 (rules.spiking_binding.SPIKING_DEFAULT_LR)
    lr = 0.2 if load_device(device).spiking is not None else 0.1
    result = _run(tmp_path, device, rule="ftp", device=device, epochs=3, lr=lr)
    assert result.accuracy > 0.8, (device, result.history)
    memory = result.record["memory"]
    assert 0 < memory["peak_bytes"] <= memory["capacity_bytes"]
    assert set(memory["peak_by_category"]) >= {"weights", "activations", "input", "errors"}
    energy = result.record["energy"]["modes"][result.record["energy"]["primary"]]
    assert energy["per_training_sample_pj"] > energy["per_inference_sample_pj"] > 0


def test_memristor_runs_through_the_crossbar_and_are_reproducible(tmp_path):
    a = _run(tmp_path, "a", rule="ftp", device="memristor-rram", seed=5, limit=300, lr=0.1)
    b = _run(tmp_path, "b", rule="ftp", device="memristor-rram", seed=5, limit=300, lr=0.1)
    totals = a.record["counters"]["totals"]
    # the forward MVMs are crossbar reads: one DAC activation per input value, one ADC conversion per output
    assert totals["cell_macs"] > 0 and totals["adc_conversions"] > 0 and totals["dac_activations"] > 0
    assert totals["write_pulses"] >= totals["weight_writes"] > 0 and totals["updates_lost"] > 0
    assert a.record["counters"] == b.record["counters"]  # the noise comes from the seeded RNG
    wa, wb = np.load(a.run_dir / "weights.npz"), np.load(b.run_dir / "weights.npz")
    np.testing.assert_array_equal(wa["W0"], wb["W0"])
    assert a.record["energy"]["modes"]["op"]["by_counter_pj"]["write_pulses"] > 0


def test_bp_refused_where_forward_only_rules_fit():
    dims = parse_model_spec(DEEP)
    profile = load_device("mcu-int8")
    with pytest.raises(DeviceMemoryError, match="stored_activations"):
        plan_memory(dims, profile, "bp", 64)
    for rule in ("foton", "ftp"):
        arena = plan_memory(dims, profile, rule, 64)
        assert arena.report()["peak_bytes"] <= profile.capacity.sram_bytes
        assert "stored_activations" not in arena.report()["peak_by_category"]


def test_forward_only_working_set_is_flat_in_depth():
    profile = load_device("mcu-int8")
    sizes = {}
    for depth in (2, 10, 40):
        report = plan_memory(parse_model_spec(f"784-32x{depth}-10"), profile, "ftp", 16).report()
        sizes[depth] = report["peak_bytes"] - report["peak_by_category"]["weights"]
    assert sizes[2] == sizes[10] == sizes[40]
    bp = [plan_memory(parse_model_spec(f"784-32x{d}-10"), profile, "bp", 16).report()["peak_by_category"]
          ["stored_activations"] for d in (2, 10)]
    assert bp[1] == 5 * bp[0]


def test_deep_foton_and_ftp_train_on_mcu_while_bp_is_refused_by_the_cli(tmp_path):
    import subprocess
    import sys

    common = ["--device", "mcu-int8", "--model", DEEP, "--batch-size", "64", "--activation", "tanh",
              "--limit", "128"]
    refused = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--rule", "bp", *common,
                              "--out", str(tmp_path / "bp")], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "does not fit in device SRAM: stored_activations" in refused.stderr
    assert not (tmp_path / "bp" / "run.json").exists()
    for rule in ("foton", "ftp"):
        ok = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--rule", rule, *common,
                             "--out", str(tmp_path / rule)], capture_output=True, text=True, timeout=600)
        assert ok.returncode == 0, ok.stderr
        record = json.loads((tmp_path / rule / "run.json").read_text())
        assert record["memory"]["peak_bytes"] <= 262144
        assert record["counters"]["totals"]["weight_writes"] > 0


def test_formats_too_wide_for_exact_simulation_are_refused(tmp_path):
    text = (Path(__file__).parents[1] / "devices" / "fpga-fixed16.toml").read_text()
    wide = text.replace("activation_bits = { value = 16", "activation_bits = { value = 30")
    assert wide != text
    path = tmp_path / "wide.toml"
    path.write_text(wide)
    with pytest.raises(fo_edge.ConfigError, match="too wide for exact simulation"):
        _run(tmp_path, "wide", rule="ftp", device=str(path))
