"""A spiking hidden layer's error (rules.spiking_binding.HIDDEN_ERRORS): hand-worked deltas for each form, the
central difference's third pass in memory and counters, both backends, CLI and refusals."""
import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.accounting.memory import MemoryArena
from fo_edge.cli import cli
from fo_edge.device import load_device
from fo_edge.errors import ConfigError
from fo_edge.rules.spiking_binding import allocate_spiking, hidden_delta


def _bufs(hidden_error):
    bufs = allocate_spiking(MemoryArena(2**30), load_device("loihi-like"), [4, 3, 2], 2, "ftp", hidden_error)
    bufs.counts[:2] = [[3, 0, 5], [1, 1, 0]]
    bufs.counts_m[:2] = [[4, 1, 5], [0, 1, 0]]
    if bufs.central:
        bufs.counts_n[:2] = [[2, 0, 3], [1, 0, 0]]
    if bufs.surrogate:
        bufs.in_acc[:2] = [[300, -40, 520], [90, 100, -7]]
        bufs.in_acc_m[:2] = [[410, 60, 480], [-20, 130, -3]]
    return bufs


def test_hand_worked_deltas():
    span = slice(0, 3)
    delta, factor = hidden_delta(_bufs("spike-count"), span, 2, 100.0)
    assert delta.tolist() == [[-1, -1, 0], [1, 0, 0]] and factor == 1.0  # c - c'
    delta, factor = hidden_delta(_bufs("central"), span, 2, 100.0)
    assert delta.tolist() == [[-2, -1, -2], [1, -1, 0]] and factor == 0.5  # (c^- - c^+) / 2
    delta, factor = hidden_delta(_bufs("surrogate"), span, 2, 100.0)
    # 1[c + c' > 0] (A - A') / 2**(w_frac + weight_exp): neuron (1, 2) never fired in either pass
    assert delta.tolist() == [[-110, -100, 40], [110, -30, 0]] and factor == 1 / 100.0


def test_central_adds_a_third_pass_in_memory_and_in_the_counters(tmp_path):
    runs = {he: fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-32-10", limit=128,
                                 hidden_error=he, out=str(tmp_path / he)) for he in ("spike-count", "central")}
    names = {he: set(r.record["memory"]["buffers"]) for he, r in runs.items()}
    peak = {he: r.record["memory"]["peak_bytes"] for he, r in runs.items()}
    assert peak["central"] > peak["spike-count"]
    assert names["central"] - names["spike-count"] == {"spike_counts_third_pass", "input_counts_third_pass"}
    events = {he: r.record["counters"]["by_phase"]["modulated_forward"]["synaptic_events"] for he, r in runs.items()}
    assert events["central"] > 1.5 * events["spike-count"]  # two modulated passes per step instead of one
    assert runs["central"].record["config"]["hidden_error"] == "central"


@pytest.mark.parametrize("rule", ["ftp", "pepita", "foton"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_every_rule_and_backend_learns_with_the_central_difference(tmp_path, rule, backend):
    run = fo_edge.simulate(rule=rule, device="loihi-like", dataset="digits", model="64-32-10", epochs=2,
                           lr=0.3 if rule == "ftp" else 1.0, backend=backend, hidden_error="central",
                           out=str(tmp_path / "r"), rule_options={"temperature": 0.25} if rule == "foton" else {},
                           on_unhealthy="warn")
    # ten classes (chance 0.1); PEPITA and FOTON learn slowly on 1,437 digits (about 0.4 after two epochs)
    assert run.accuracy > (0.5 if rule == "ftp" else 0.25)


def test_cli_option_and_refusal(tmp_path):
    ok = CliRunner().invoke(cli, ["simulate", "--device", "loihi-like", "--rule", "ftp", "--dataset", "digits",
                                  "--model", "64-16-10", "--limit", "100", "--hidden-error", "central",
                                  "--out", str(tmp_path / "c")])
    assert ok.exit_code == 0, ok.output
    with pytest.raises(ConfigError, match="spiking devices only"):
        fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=100,
                         hidden_error="central", out=str(tmp_path / "m"))
    bad = CliRunner().invoke(cli, ["simulate", "--device", "loihi-like", "--rule", "ftp", "--hidden-error", "both"])
    assert bad.exit_code == 2 and "both" in bad.output


def test_barrier_is_counted_per_sample_and_timestep(tmp_path):
    """The chip presents a batch's samples one after another: T barriers per sample and pass, not per batch."""
    run = fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", limit=96,
                           batch_size=32, hidden_error="spike-count", out=str(tmp_path / "r"))
    phases = run.record["counters"]["by_phase"]
    T = 16
    assert phases["forward"]["timesteps"] == 96 * T  # 3 batches of 32 samples, one clean pass each
    assert phases["modulated_forward"]["timesteps"] == 96 * T
    assert phases["inference"]["timesteps"] == run.record["counters"]["inference_samples"] * T
    seconds = run.record["energy"]["static"]["seconds_by_phase"]["forward"]
    assert seconds >= 96 * T * 113e-9  # at least one 113 ns barrier per sample and timestep


@pytest.mark.parametrize("on_unhealthy, message", [
    ("stop", r"numeric health: layer \d at step \d+: max \|W\| = .* exceeds"),  # the health monitor, first
    ("warn", "non-finite weights on the float spiking path"),  # the monitor only warns: inf/NaN still stops it
])
def test_float_spiking_path_stops_on_non_finite_weights(tmp_path, on_unhealthy, message):
    """An MSE error at a huge lr drives the float spiking net's weights to inf/NaN: the health monitor stops the
    run while the weights explode; with the monitor set to warn, the non-finite check still stops it. Either way
    the run is recorded as stopped, never complete."""
    from fo_edge.errors import RunError
    from fo_edge.runs import read_run

    with pytest.raises(RunError, match=message):
        fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-32-10", lr=1e3,
                         error="mse", backend="torch", on_unhealthy=on_unhealthy, out=str(tmp_path / "r"))
    assert read_run(tmp_path / "r")["status"] == "stopped"
