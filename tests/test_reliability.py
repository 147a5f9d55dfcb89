"""Reliability: fuzzed inputs give clean errors, a killed run resumes bit-identically, a diverging run stops
naming the layer and step and stays reportable, and a full disk loses no earlier results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fo_edge
from fo_edge.device import parse_device
from fo_edge.device.spec import DeviceProfile
from fo_edge.errors import ConfigError, DeviceProfileError, RunError
from fo_edge.models import parse_model_spec
from fo_edge.runs import load_checkpoint, read_run

PROFILE = (Path(__file__).parents[1] / "devices" / "mcu-int8.toml").read_text()
LINES = PROFILE.splitlines()

toml_values = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "true", "[]", "[1, 2]", '""', '"x"', "{}"]),
    st.text(max_size=12).map(json.dumps),
    st.tuples(st.integers(-5, 70), st.text(max_size=8)).map(lambda p: f'{{ value = {p[0]}, source = {json.dumps(p[1])} }}'),
)


@given(st.integers(0, len(LINES) - 1), st.sampled_from(["keep", "drop", "value"]), toml_values)
def test_mutated_profiles_are_a_clean_error_or_a_profile(line, action, value):
    lines = list(LINES)
    if action == "drop":
        del lines[line]
    elif action == "value" and "=" in lines[line]:
        key = lines[line].split("=", 1)[0]
        lines[line] = f"{key}= {value}"
    try:
        profile = parse_device("\n".join(lines), "fuzz.toml")
    except DeviceProfileError as exc:
        assert str(exc).startswith("fuzz.toml") and "\n" not in str(exc)
    else:
        assert isinstance(profile, DeviceProfile)


@given(st.text(alphabet="0123456789x-+ ,.eE", max_size=30))
def test_model_spec_fuzz_is_a_clean_error_or_positive_widths(spec):
    try:
        dims = parse_model_spec(spec)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(dims) >= 2 and all(isinstance(d, int) and d >= 1 for d in dims)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fo_edge", *args], capture_output=True, text=True, **kw)


RESUMABLE = ["simulate", "--rule", "ftp", "--device", "mcu-int8", "--model", "784-64-10", "--limit", "16000",
             "--epochs", "2", "--checkpoint-every", "40"]
#: the spiking device on its integer kernels, and on the snnTorch path (float, the same device and threads on both
#: sides: the same weights)
RESUMABLE_SPIKING = ["simulate", "--rule", "ftp", "--device", "loihi-like", "--model", "784-64-10", "--limit", "6000",
                     "--epochs", "2", "--checkpoint-every", "20"]


#: the float torch path of gpu-fp32, which counts (accounting.float_counts): its counters resume with it
RESUMABLE_TORCH = ["simulate", "--rule", "ftp", "--device", "gpu-fp32", "--model", "784-64-10", "--limit", "16000",
                   "--epochs", "3", "--checkpoint-every", "20"]


#: a conv net on the integer kernels: host parameters, device store, F, RNG and counters in the checkpoint
RESUMABLE_CONV = ["simulate", "--rule", "foton", "--device", "mcu-int8", "--model", "c4-c8-10", "--limit", "3000",
                  "--epochs", "2", "--checkpoint-every", "10", "--batch-size", "8"]


#: a MANO operator on Darcy 32x32 (torch, Adam: its moments travel in the checkpoint)
RESUMABLE_MANO = ["simulate", "--rule", "bp", "--device", "gpu-fp32", "--model", "mano:dim=16", "--dataset", "darcy32",
                  "--limit", "200", "--epochs", "2", "--batch-size", "16", "--checkpoint-every", "5", "--threads", "1"]


@pytest.mark.parametrize("resumable", [RESUMABLE, RESUMABLE_SPIKING, [*RESUMABLE_SPIKING, "--backend", "torch"],
                                       RESUMABLE_TORCH, RESUMABLE_CONV,
                                       [a if a != "mcu-int8" else "gpu-fp32" for a in RESUMABLE_CONV] + ["--threads", "1"],
                                       RESUMABLE_MANO],
                         ids=["numba", "spiking-numba", "spiking-torch", "torch", "conv-numba", "conv-torch",
                              "mano-torch"])
def test_a_killed_run_resumes_bit_identically(tmp_path, resumable):
    full = _cli(*resumable, "--out", str(tmp_path / "full"), timeout=600)
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fo_edge", *resumable, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_run(killed)["status"] == "running"  # it really died mid-run
    position = load_checkpoint(killed)["position"]
    assert 0 < position[2] < 1000  # a step inside the run
    resumed = _cli("simulate", "--resume", str(killed), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = np.load(tmp_path / "full" / "weights.npz"), np.load(killed / "weights.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    ra, rb = read_run(tmp_path / "full"), read_run(killed)
    assert rb["status"] == "complete" and ra["counters"] == rb["counters"]
    for metric in ("test_accuracy", "test_relative_l2"):
        assert [h.get(metric) for h in ra["history"]] == [h.get(metric) for h in rb["history"]]


def test_resume_refuses_complete_runs(tmp_path):
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=64,
                     out=str(tmp_path / "done"))
    with pytest.raises(ConfigError, match="already complete"):
        fo_edge.simulate(resume=tmp_path / "done")


@pytest.mark.parametrize("device, lr, kind", [("gpu-fp32", 1e3, "non-finite|exploding"),
                                              ("mcu-int8", 1e3, "saturation storm")])
def test_a_diverging_run_stops_naming_layer_and_step(tmp_path, device, lr, kind):
    out = tmp_path / "div"
    proc = _cli("simulate", "--rule", "bp", "--device", device, "--backend", "numba", "--dataset", "digits",
                "--model", "64-32-10", "--lr", str(lr), "--out", str(out), timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "numeric health: layer" in line and "at step" in line and "partial run is recorded" in line
    record = read_run(out)
    assert record["status"] == "stopped" and record["stop"]["layer"] >= 1 and record["stop"]["step"] >= 1
    assert any(k in record["stop"]["message"] for k in kind.split("|"))
    report = _cli("energy-report", str(out), "--format", "json", timeout=120)
    assert report.returncode == 0 and json.loads(report.stdout)[0]["status"] == "stopped"


def test_warn_mode_records_and_continues(tmp_path):
    result = fo_edge.simulate(rule="bp", device="mcu-int8", dataset="digits", model="64-32-10", lr=1e3,
                              on_unhealthy="warn", out=str(tmp_path / "warn"))
    assert result.record["status"] == "complete"
    assert any("saturation storm" in w for w in result.record["warnings"])


def test_a_full_disk_loses_no_earlier_results(tmp_path, monkeypatch):
    import fo_edge.runs as runs

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 4:  # run.json, device.toml, then two checkpoints succeed; the disk is then full
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", fsync)
    out = tmp_path / "full-disk"
    with pytest.raises(RunError, match="No space left on device.*earlier results are untouched"):
        fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", epochs=3,
                         checkpoint_every=10, out=str(out))
    monkeypatch.undo()
    assert read_run(out)["status"] == "running"
    state = load_checkpoint(out)
    assert state["position"][2] == 20  # the last checkpoint that fit, intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written temp files left


@pytest.mark.parametrize("rule", ["ftp", "foton"])
def test_torch_path_resumes_from_a_checkpoint_to_the_same_weights(digits, rule):
    from fo_edge.accounting.float_counts import FloatMeter
    from fo_edge.device import load_device
    from fo_edge.engine.torch_loop import train_torch
    from fo_edge.models import init_weights
    from fo_edge.rules import rule_config

    config = rule_config(rule, **({"refresh_every": 7, "ortho_every": 5} if rule == "foton" else {}))
    common = dict(activation="tanh", error="ce", lr=0.05, epochs=2, batch_size=32, seed=1)
    weights = init_weights((64, 32, 10), seed=0)
    meter = lambda: FloatMeter((64, 32, 10), load_device("gpu-fp32"), rule)  # noqa: E731
    states, full_meter, resumed_meter = [], meter(), meter()
    full, history = train_torch(weights, digits, rule, config, checkpoint_every=10, on_checkpoint=states.append,
                                meter=full_meter, **common)
    middle = states[len(states) // 3]  # a mid-epoch checkpoint
    assert 0 < middle["position"][1] < len(digits.x_train)
    resumed, history_b = train_torch(weights, digits, rule, config, resume=middle, meter=resumed_meter, **common)
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a, b)
    assert [h["test_accuracy"] for h in history] == [h["test_accuracy"] for h in history_b]
    assert resumed_meter.record() == full_meter.record()  # the counts travel in the checkpoint
    assert full_meter.trained == 2 * len(digits.x_train)


@pytest.mark.parametrize("rule", ["ftp", "foton"])
def test_spiking_torch_path_resumes_from_a_checkpoint_to_the_same_weights(digits, rule):
    """The snnTorch path of loihi-like checkpoints like the float MLP path: resumed from a mid-epoch state (FOTON's
    F included, refreshed every 4 steps so the state holds a stale one) it ends with the uninterrupted run's
    weights and history."""
    from fo_edge.device import load_device
    from fo_edge.engine.spiking_torch import train_spiking_torch
    from fo_edge.models import init_weights
    from fo_edge.rules import rule_config

    config = rule_config(rule, **({"refresh_every": 4, "ortho_every": 3} if rule == "foton" else {}))
    common = dict(error="ce", lr=0.1, epochs=2, batch_size=64, seed=1, hidden_error="central")
    weights = init_weights((64, 24, 10), seed=0)
    profile = load_device("loihi-like")
    states = []
    full, history = train_spiking_torch(weights, digits, rule, config, profile, checkpoint_every=5,
                                        on_checkpoint=states.append, **common)
    # a mid-epoch state of epoch 2 between two refreshes of F
    middle = next(s for s in states if s["position"][0] == 1 and s["position"][1] > 0 and s["position"][2] % 4)
    assert 0 < middle["position"][1] < len(digits.x_train)
    assert (middle["proj"].size > 0) == (rule == "foton")
    resumed, history_b = train_spiking_torch(weights, digits, rule, config, profile, resume=middle, **common)
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a, b)
    assert [h["test_accuracy"] for h in history] == [h["test_accuracy"] for h in history_b]
    assert not np.array_equal(full[0], weights[0])  # it trained


def test_torch_path_divergence_stops_and_records(tmp_path):
    with pytest.raises(RunError, match=r"numeric health: layer .* at step \d+"):
        fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="64-32-10", lr=1e3,
                         out=str(tmp_path / "t"))
    record = read_run(tmp_path / "t")
    assert record["status"] == "stopped" and record["config"]["backend"] == "torch"


def test_checkpoints_with_int64_weights_still_restore():
    """Checkpoints written before the weight store took the format's width (int64 mantissas) restore into the
    int8 store when every value fits, and are refused when one does not."""
    from types import SimpleNamespace

    from fo_edge.engine.stream import _restore

    net = SimpleNamespace(w=np.zeros(4, dtype=np.int8))
    bufs = SimpleNamespace(proj=np.zeros((2, 3)))
    counters, rng = np.zeros((2, 2), dtype=np.int64), np.zeros(1, dtype=np.uint64)
    state = {"w": np.array([-127, 5, 0, 127], dtype=np.int64), "rng": np.array([7], dtype=np.uint64),
             "counters": np.ones((2, 2), dtype=np.int64), "proj": np.full((2, 3), 0.5),
             "position": np.array([1, 2, 3, 4, 5], dtype=np.int64), "history": np.array("[]")}
    _restore(state, net, bufs, counters, rng)
    np.testing.assert_array_equal(net.w, [-127, 5, 0, 127])
    np.testing.assert_array_equal(counters, 1)
    assert net.w.dtype == np.int8 and rng[0] == 7
    state["w"] = np.array([-127, 5, 0, 300], dtype=np.int64)
    with pytest.raises(RunError, match="checkpoint does not match this run: w"):
        _restore(state, net, bufs, counters, rng)
