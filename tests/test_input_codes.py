"""Spiking input codes (kernels.spiking ``rate`` / ``single`` / ``ttfs``) and the mapping's occupied cores
(accounting.spiking_time): hand-worked spike trains, the Numba and torch codes equal, the codes' event counts in
a training run, a profile's static power charged for the cores its mapping occupies, and the loader's refusals."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fo_edge
from fo_edge.device.load import parse_device
from fo_edge.device.spec import InputCode
from fo_edge.errors import DeviceProfileError
from fo_edge.kernels.counters import COUNTERS, FORWARD, INFERENCE, PHASES
from fo_edge.kernels.spiking import INPUT_CODES, input_spike_
from fo_edge.models.spiking import input_spikes

#: 8-bit intensities worked by hand over T = 5 steps
X_Q = [0, 1, 64, 127, 128, 200, 255, 256]
HAND = {
    # phase += x; spike and -256 at >= 256: 64 -> spikes at steps 3 (phase 256); 128 -> steps 1 and 3 ...
    "rate": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 0, 1], [0, 1, 0, 1, 0],
             [0, 1, 1, 1, 0], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
    # one spike at t = 0 for x_q >= 128
    "single": [[0] * 5] * 4 + [[1, 0, 0, 0, 0]] * 4,
    # t = ((256 - x_q) * 4 + 128) // 256: 1 -> 4, 64 -> 3, 127 -> 2, 128 -> 2, 200 -> 1, 255 -> 0, 256 -> 0
    "ttfs": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0],
             [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]],
}


def _kernel_train(code: str, x_q: list[int], steps: int) -> np.ndarray:
    """(pixels, steps) spikes from the Numba kernel's per-pixel code."""
    phase = [0] * len(x_q)
    out = np.zeros((len(x_q), steps), dtype=np.int64)
    for t in range(steps):
        for j, x in enumerate(x_q):
            out[j, t], phase[j] = input_spike_(INPUT_CODES[code], x, phase[j], t, steps)
    return out


def _torch_train(code: str, x_q: list[int], steps: int) -> np.ndarray:
    x = torch.tensor(x_q, dtype=torch.float64) / 256
    return torch.stack(list(input_spikes(x, steps, InputCode(code))), dim=1).numpy().astype(np.int64)


@pytest.mark.parametrize("code", sorted(HAND))
def test_hand_worked_spike_trains(code):
    assert _kernel_train(code, X_Q, 5).tolist() == HAND[code]
    assert _torch_train(code, X_Q, 5).tolist() == HAND[code]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 256), min_size=1, max_size=12), st.integers(1, 40),
       st.sampled_from(sorted(INPUT_CODES)))
def test_numba_and_torch_codes_agree_and_keep_their_counts(x_q, steps, code):
    spikes = _kernel_train(code, x_q, steps)
    assert (spikes == _torch_train(code, x_q, steps)).all()
    counts = spikes.sum(axis=1)
    for x, c, train in zip(x_q, counts, spikes):
        if code == "rate":
            assert c == x * steps // 256  # the phase accumulator fires floor(x T / 256) times
        elif code == "single":
            assert c == (1 if 2 * x >= 256 else 0) and (c == 0 or train[0] == 1)
        else:
            assert c == (1 if x > 0 else 0)
    if code == "ttfs":  # brighter fires no later
        first = [int(np.argmax(t)) for t, x in zip(spikes, x_q) if x > 0]
        order = [x for x in x_q if x > 0]
        for (a, fa) in zip(order, first):
            for (b, fb) in zip(order, first):
                if a > b:
                    assert fa <= fb


def _profile(tmp_path, **edits) -> str:
    """A copy of loihi-like.toml with [spiking] keys replaced (values written as TOML)."""
    from importlib import resources
    text = (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    for key, value in edits.items():
        lines = [line for line in lines if not line.startswith(f"{key} = ")]
        anchor = next(i for i, line in enumerate(lines) if line.startswith("weight_exp = "))
        lines.insert(anchor + 1, f'{key} = {{ value = {value}, source = "test edit" }}')
    path = tmp_path / ("loihi-" + "-".join(f"{k}-{v}".replace('"', "") for k, v in edits.items()) + ".toml")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_codes_change_the_input_events_of_a_training_run(tmp_path):
    """Binarised digits (0 or 1): single sends each lit pixel once, ttfs once, rate T times."""
    runs = {}
    for code in ("rate", "single", "ttfs"):
        runs[code] = fo_edge.simulate(rule="ftp", device=_profile(tmp_path, input_code=f'"{code}"'),
                                      dataset="digits", model="64-32-10", limit=64, out=str(tmp_path / code),
                                      on_unhealthy="warn")
    events = {c: r.record["counters"]["by_phase"]["inference"]["synaptic_events"] for c, r in runs.items()}
    assert events["single"] < events["rate"] and events["ttfs"] < events["rate"]
    syn = COUNTERS.index("synaptic_events")
    layer0 = {c: np.asarray(r.record["counters"]["values"])[INFERENCE, 0, syn] for c, r in runs.items()}
    assert layer0["single"] * 4 < layer0["rate"] and layer0["ttfs"] * 4 < layer0["rate"]  # T = 16 steps
    assert all(r.record["config"]["device"].endswith(f"{c}.toml") for c, r in runs.items())


def test_static_power_is_charged_for_the_mappings_cores(tmp_path):
    """occupied_cores 96 charges 96 x 104 mW / 128 over the same device time; the tight figure is kept."""
    from fo_edge.accounting.spiking_time import static_record

    sp = parse_device(open(_profile(tmp_path, occupied_cores=96)).read(), "p.toml").spiking
    values = np.zeros((len(PHASES), 3, len(COUNTERS)), dtype=np.int64)
    values[FORWARD, 0, COUNTERS.index("synaptic_events")] = 1000   # 3.5 us over 2 cores
    values[FORWARD, 2, COUNTERS.index("timesteps")] = 16           # + 16 x 113 ns
    record = static_record(values, [2, 1], sp, 104.0, training_samples=1, inference_samples=0)
    seconds = (1750 + 16 * 113) * 1e-9
    assert record["cores_used"] == 3 and record["cores_charged"] == 96
    assert record["per_training_sample_pj"] == pytest.approx(104e-3 * 96 / 128 * seconds * 1e12)
    assert record["tight"]["per_training_sample_pj"] == pytest.approx(104e-3 * 3 / 128 * seconds * 1e12)
    small = parse_device(open(_profile(tmp_path, occupied_cores=1)).read(), "p.toml").spiking
    assert static_record(values, [2, 1], small, 104.0, training_samples=1,
                         inference_samples=0)["cores_charged"] == 3  # never fewer than the net needs


def test_a_run_reports_both_core_counts(tmp_path):
    from click.testing import CliRunner

    from fo_edge.cli import cli

    result = CliRunner().invoke(cli, ["simulate", "--device", _profile(tmp_path, occupied_cores=96), "--rule", "ftp",
                                      "--dataset", "digits", "--model", "64-32-10", "--limit", "64",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "96 cores as mapped, 2 tightly packed" in result.output
    report = CliRunner().invoke(cli, ["energy-report", str(tmp_path / "run")])
    header, row = report.output.splitlines()[:2]
    assert report.exit_code == 0 and "cores tight" in header and " 96 " in row


@pytest.mark.parametrize("line, message", [
    ('input_code = { value = "rat", source = "x" }', "spiking.input_code.value: expected one of 'rate', 'single'"),
    ('input_code = "rate"', "spiking.input_code: expected"),
    ('input_cod = { value = "rate", source = "x" }', "did you mean 'input_code'?"),
    ('occupied_cores = { value = -1, source = "x" }', "spiking.occupied_cores.value: expected a value in [0,"),
    ('occupied_cores = { value = 96, source = "" }', "spiking.occupied_cores.source"),
])
def test_bad_codes_and_core_counts_are_refused_in_one_line(line, message):
    from importlib import resources
    text = (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text(encoding="utf-8")
    key = line.split(" ")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(("input_code = ", "occupied_cores = "))]
    anchor = next(i for i, ln in enumerate(lines) if ln.startswith("weight_exp = "))
    lines.insert(anchor + 1, line)
    with pytest.raises(DeviceProfileError) as info:
        parse_device("\n".join(lines) + "\n", "edited.toml")
    assert message in str(info.value) and "\n" not in str(info.value) and key
