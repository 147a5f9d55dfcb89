"""Counters and energy on a toy net, counted by hand (NeuroBench style): one step of each rule on 4-3-2 with a
batch of 2, then energy = counters x unit costs in each mode."""
import numpy as np
import pytest

from fo_edge.accounting.counters import counters_array, counters_record
from fo_edge.accounting.energy import energy_record, format_energy
from fo_edge.accounting.memory import MemoryArena
from fo_edge.device import load_device
from fo_edge.kernels.counters import COUNTERS, PHASES, new_counters
from fo_edge.kernels.rng import new_state
from fo_edge.models import init_weights
from fo_edge.rules import rule_config
from fo_edge.rules.numba_binding import (allocate_buffers, fill_fixed_projection, make_params, quantize_input,
                                         refresh_projection, run_step, to_device)

DIMS, B = (4, 3, 2), 2
# MACs per phase for one step, counted by hand: layer sizes 12 (4x3) and 6 (3x2), K = 2 outputs
EXPECTED_MACS = {
    "bp": {"forward": B * 18, "backward": B * 6, "update": B * 18},
    "ftp": {"forward": B * 18, "recompute": B * 12, "modulated_forward": B * 3 * 2, "update": B * 18},
    "pepita": {"forward": B * 18, "recompute": B * 12, "modulated_forward": B * 4 * 2 + B * 12,
               "update": B * 18},
    "foton": {"forward": B * 18, "recompute": B * 12, "modulated_forward": B * 4 * 2 + B * 12,
              "update": B * 18},
}


def _one_step(rule, device="mcu-int8"):
    profile = load_device(device)
    config = rule_config(rule)
    net = to_device(init_weights(DIMS, seed=0), profile, MemoryArena(2**40, 2**40))
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, B, rule, "stream", ortho=False)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    counters, rng = new_counters(net.n_layers), new_state(0)
    if rule == "foton":
        refresh_projection(net, bufs, profile, np.zeros_like(counters), rng)
    params = make_params(profile, "relu", "ce")
    x = quantize_input(np.random.default_rng(0).uniform(0, 1, (B, 4)), profile, bufs.x, counters[0, -1], rng)
    run_step(rule, net, bufs, profile, params, x, np.eye(2)[[0, 1]], 0.1, "stream", counters, rng)
    return profile, counters


@pytest.mark.parametrize("rule", sorted(EXPECTED_MACS))
def test_macs_per_phase_match_the_hand_count(rule):
    _, counters = _one_step(rule)
    macs = counters[:, :, COUNTERS.index("macs_dense")].sum(axis=1)
    got = {phase: int(m) for phase, m in zip(PHASES, macs) if m}
    assert got == EXPECTED_MACS[rule]
    assert counters[PHASES.index("update"), :, COUNTERS.index("synaptic_updates")].tolist() == [12, 6, 0]


def test_bytes_follow_the_stated_traffic_model():
    profile, counters = _one_step("ftp")
    fwd = counters[PHASES.index("forward")]
    read, write = COUNTERS.index("sram_read_bytes"), COUNTERS.index("sram_write_bytes")
    # int8 everywhere: layer 1 reads 12 weights + 4 inputs per sample and writes 3 outputs per sample
    assert fwd[0, read] == B * (12 + 4) and fwd[0, write] == B * 3
    # FTP's G (2 x 3, 16-bit projection format) sits in Flash on the MCU
    mod = counters[PHASES.index("modulated_forward"), 0]
    assert mod[COUNTERS.index("flash_read_bytes")] == B * 3 * 2 * 2


def test_energy_is_counters_times_unit_costs_in_each_mode():
    profile, counters = _one_step("ftp")
    record = counters_record(counters, training_samples=B, inference_samples=0)
    values = counters_array(record)
    np.testing.assert_array_equal(values, counters)
    energy = energy_record(values, profile.energy_pj, training_samples=B, inference_samples=0,
                           layers=record["layers"])
    totals = record["totals"]
    system = energy["modes"]["system"]
    assert energy["primary"] == "system"
    assert system["total_pj"] == pytest.approx(1008.7 * totals["macs_dense"])  # the Cortex-M7 board's pJ/MAC
    op = energy["modes"]["op"]
    by_hand = (0.3 * totals["macs_dense"] + 1.25 * (totals["sram_read_bytes"] + totals["sram_write_bytes"])
               + 2.5 * totals["flash_read_bytes"])
    assert op["total_pj"] == pytest.approx(by_hand)
    assert op["per_training_sample_pj"] == pytest.approx(by_hand / B)
    assert op["per_inference_sample_pj"] is None
    assert sum(op["by_phase_pj"].values()) == pytest.approx(op["total_pj"])


def test_event_driven_device_charges_events_not_macs():
    profile, counters = _one_step("ftp", "loihi-like")
    record = counters_record(counters, training_samples=B, inference_samples=0)
    energy = energy_record(counters, profile.energy_pj, training_samples=B, inference_samples=0,
                           layers=record["layers"])
    op = energy["modes"]["op"]
    assert "macs_dense" not in op["by_counter_pj"] and op["by_counter_pj"]["synaptic_events"] > 0
    assert energy["not_charged"]  # static power is named, not guessed


def test_format_energy_picks_units():
    assert format_energy(512.0) == "512 pJ"
    assert format_energy(1.5e6) == "1.5 µJ"
    assert format_energy(None) == "n/a"


def test_effective_macs_drop_exactly_the_planted_zeros():
    from fo_edge.kernels.linear import layer_forward_

    profile = load_device("mcu-int8")
    net = to_device([np.full((5, 8), 0.5)], profile)  # every weight nonzero
    x = np.ones((3, 8), dtype=np.int64)
    x[0, [1, 4]] = 0
    x[2, :] = 0  # 2 + 8 planted zeros of 24 inputs
    row = np.zeros(len(COUNTERS), dtype=np.int64)
    out = np.zeros((3, 5), dtype=np.int64)
    layer_forward_(x, net.w, 0, 5, 8, net.w_one[0], False, make_params(profile, "relu", "ce"), out, out.copy(),
                   row, new_state(0))
    assert row[COUNTERS.index("macs_dense")] == 3 * 5 * 8
    assert row[COUNTERS.index("macs_effective")] == 5 * (24 - 10)
    assert row[COUNTERS.index("synaptic_events")] == 5 * (24 - 10)



@pytest.mark.parametrize("device", ["mcu-int8", "fpga-fixed16", "gpu-fp32"])
def test_output_layer_counts_nonzero_logits_as_active(device):
    """The output layer is linear: a negative logit is an active neuron update, whatever the hidden activation."""
    from fo_edge.kernels.linear import layer_forward_

    profile = load_device(device)
    w = np.array([[0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])  # logits: positive, negative, zero
    net = to_device([w], profile)
    x = (np.ones((4, 2)) * (1 << profile.activation.frac_bits if not profile.is_float else 1.0)).astype(
        np.float64 if profile.is_float else np.int64)
    row = np.zeros(len(COUNTERS), dtype=np.int64)
    pre = np.zeros((4, 3), dtype=x.dtype)
    layer_forward_(x, net.w, 0, 3, 2, net.w_one[0], True, make_params(profile, "relu", "ce"), pre, pre.copy(),
                   row, new_state(0))
    assert np.count_nonzero(pre) == 8 and (pre < 0).sum() == 4
    assert row[COUNTERS.index("neuron_updates_active")] == 8  # 4 positive + 4 negative logits
    assert row[COUNTERS.index("neuron_updates_inactive")] == 4


TOY = """
id = "toy"
name = "hand-written toy profile"
arithmetic = "fixed"
forward_rounding = "nearest-even"
update_rounding = "nearest-even"
accumulator_overflow = "saturate"
[formats]
weight_bits = { value = 8, source = "toy" }
weight_frac_bits = { value = 1, source = "toy" }
activation_bits = { value = 8, source = "toy" }
activation_frac_bits = { value = 4, source = "toy" }
error_bits = { value = 8, source = "toy" }
error_frac_bits = { value = 7, source = "toy" }
accumulator_bits = { value = 32, source = "toy" }
[capacity]
sram_bytes = { value = 1000000, source = "toy" }
flash_bytes = { value = 0, source = "toy" }
[energy]
mac_pj = { value = 2.0, source = "toy" }
sram_byte_pj = { value = 0.5, source = "toy" }
adc_pj = { value = 7.0, source = "toy" }
"""


def test_energy_of_a_hand_written_toy_profile():
    from fo_edge.device import parse_device

    profile = parse_device(TOY, "toy.toml")
    values = new_counters(1)
    values[PHASES.index("forward"), 0, COUNTERS.index("macs_dense")] = 100
    values[PHASES.index("update"), 0, COUNTERS.index("sram_read_bytes")] = 40
    values[PHASES.index("update"), 1, COUNTERS.index("sram_write_bytes")] = 20
    values[PHASES.index("inference"), 0, COUNTERS.index("adc_conversions")] = 3
    values[PHASES.index("forward"), 0, COUNTERS.index("spikes")] = 999  # no spike_pj: not charged
    energy = energy_record(values, profile.energy_pj, training_samples=10, inference_samples=3,
                           layers=["layer_1", "network"])
    assert list(energy["modes"]) == ["op"]
    op = energy["modes"]["op"]
    assert op["training_pj"] == 100 * 2.0 + 60 * 0.5
    assert op["per_training_sample_pj"] == (100 * 2.0 + 60 * 0.5) / 10
    assert op["per_inference_sample_pj"] == 7.0
    assert op["by_layer_pj"] == {"layer_1": 220.0, "network": 10.0}
    assert op["by_phase_pj"]["update"] == 30.0


def test_spiking_time_and_static_energy_by_hand():
    """Two layers on 2 and 1 cores, one phase: time = slowest layer's work per core + barriers; static energy =
    used cores x static_mw / cores_per_chip x that time (accounting.spiking_time)."""
    from fo_edge.accounting.spiking_time import phase_seconds, static_record
    from fo_edge.kernels.counters import FORWARD

    sp = load_device("loihi-like").spiking  # 3.5 ns synop, 8.4 / 5.3 ns neuron, 6.1 ns update, 113 ns barrier
    values = np.zeros((len(PHASES), 3, len(COUNTERS)), dtype=np.int64)
    c = COUNTERS.index
    values[FORWARD, 0, c("synaptic_events")] = 1000          # 3500 ns over 2 cores -> 1750 ns
    values[FORWARD, 0, c("neuron_updates_active")] = 100     # + 840 ns / 2 -> 2170 ns in all
    values[FORWARD, 1, c("synaptic_events")] = 400           # 1400 ns on 1 core
    values[FORWARD, 1, c("neuron_updates_inactive")] = 100   # + 530 ns -> 1930 ns
    values[FORWARD, 2, c("timesteps")] = 32                  # 2 samples x 16 steps: 32 barriers = 3616 ns
    seconds = phase_seconds(values, [2, 1], sp)
    assert seconds["forward"] == pytest.approx((2170 + 32 * 113) * 1e-9)
    record = static_record(values, [2, 1], sp, 104.0, training_samples=2, inference_samples=0)
    watts = 104.0e-3 * 3 / 128  # 3 used cores of the chip's 128
    assert record["cores_used"] == 3 and record["training_s"] == pytest.approx(seconds["forward"])
    assert record["per_training_sample_pj"] == pytest.approx(watts * seconds["forward"] * 1e12 / 2)


def test_learning_engine_visits_every_plastic_synapse_each_learning_epoch(tmp_path):
    """Loihi's learning engine processes every plastic synapse once per learning epoch (one per batch), whether
    or not it changes: 64 samples in batches of 16 are 4 epochs over 64x32 + 32x10 synapses, charged at
    Davies Table 2's 120 pJ per synaptic update, and nothing else in the update phase."""
    import fo_edge
    from fo_edge.kernels.counters import PHASES

    run = fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-32-10", limit=64,
                           batch_size=16, out=str(tmp_path / "r"))
    values = np.array(run.record["counters"]["values"])
    update = PHASES.index("update")
    assert values[update, :2, COUNTERS.index("synaptic_updates")].tolist() == [4 * 64 * 32, 4 * 32 * 10]
    op = run.record["energy"]["modes"]["op"]
    assert op["by_phase_pj"]["update"] == pytest.approx(4 * (64 * 32 + 32 * 10) * 120.0)
