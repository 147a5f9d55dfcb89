"""CUBA-LIF kernels: float mode against snnTorch's Leaky (exact), integer mode against hand-worked Lava
sequences, event counting on a planted example, and bit-identical spiking training runs."""
import numpy as np
import pytest
import snntorch as snn
import torch

from fo_edge.kernels.counters import COUNTERS
from fo_edge.kernels.lif import RESET_SUBTRACT, RESET_ZERO, UV_MAX, dense_events_, lif_float_step_, lif_int_step_

ROW = len(COUNTERS)


def _slot(name):
    return COUNTERS.index(name)


@pytest.mark.parametrize("mechanism,code", [("subtract", RESET_SUBTRACT), ("zero", RESET_ZERO)])
def test_float_lif_equals_snntorch_leaky(mechanism, code):
    gen = torch.Generator().manual_seed(3)
    inputs = torch.rand(60, 4, 25, generator=gen) * 0.7  # (T, B, n)
    beta, thr = 0.875, 1.0
    leaky = snn.Leaky(beta=beta, threshold=thr, reset_mechanism=mechanism)
    mem = leaky.init_leaky()
    ref_spk, ref_mem = [], []
    for x_t in inputs:
        spk, mem = leaky(x_t, mem)
        ref_spk.append(spk.flatten().numpy().copy())
        ref_mem.append(mem.flatten().numpy().copy())
    n = inputs.shape[1] * inputs.shape[2]
    u, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    spikes, row = np.zeros(n, np.float32), np.zeros(ROW, np.int64)
    for t, x_t in enumerate(inputs):
        lif_float_step_(u, v, x_t.flatten().numpy(), np.float32(0.0), np.float32(beta), np.float32(thr), code,
                        spikes, row)
        np.testing.assert_array_equal(spikes, ref_spk[t])
        np.testing.assert_array_equal(v, ref_mem[t])
    assert row[_slot("spikes")] == int(sum(s.sum() for s in ref_spk)) > 0


def _int_step(u, v, a_in, du=4095, dv=0, vth_eff=1 << 30, bias=0):
    u, v = np.array(u, dtype=np.int64), np.array(v, dtype=np.int64)
    spikes, row = np.zeros(u.size, np.int64), np.zeros(ROW, np.int64)
    lif_int_step_(u, v, np.array(a_in, dtype=np.int64), du, dv, vth_eff, bias, spikes, row)
    return u, v, spikes, row


def test_current_wraps_past_2_to_the_23():
    a_in = (1 << 17) + 1  # << 6 is 2**23 + 64
    u, v, _, row = _int_step([0], [0], [a_in])
    assert u[0] == (1 << 23) + 64 - (1 << 24) == -UV_MAX + 64
    assert row[_slot("overflow_wraps")] == 1
    # the comparison is asymmetric: exactly -2**23 wraps, exactly +2**23 does not
    u, _, _, row = _int_step([0], [0], [-(1 << 17)])
    assert u[0] == -(1 << 23) + (1 << 24) and row[_slot("overflow_wraps")] == 1
    u, _, _, row = _int_step([0], [0], [1 << 17])
    assert u[0] == 1 << 23 and row[_slot("overflow_wraps")] == 0


def test_voltage_saturates_and_is_counted():
    _, v, spikes, row = _int_step([0], [UV_MAX - 10], [1], dv=0, vth_eff=1 << 30)
    assert v[0] == UV_MAX - 1 and spikes[0] == 0
    assert row[_slot("saturation_events")] == 1


def test_decays_truncate_toward_zero():
    # u = -5, du = 2047: -5 * (4096 - 2048) / 4096 = -2.5 -> -2 (toward zero; floor would give -3)
    u, v, _, _ = _int_step([-5], [0], [0], du=2047)
    assert u[0] == -2 and v[0] == -2
    # v = -7, dv = 2048: -7 * 2048 / 4096 = -3.5 -> -3; plus the new u (0 after a full current decay)
    _, v, _, _ = _int_step([0], [-7], [0], du=4095, dv=2048)
    assert v[0] == -3
    u, _, _, _ = _int_step([5], [0], [0], du=2047)
    assert u[0] == 2


def test_threshold_is_strict_and_resets_v_to_zero_only():
    vth_eff = 100 << 6
    # input 100 << 6 lands exactly on vth_eff: no spike
    u, v, spikes, _ = _int_step([0], [0], [100], vth_eff=vth_eff)
    assert spikes[0] == 0 and v[0] == vth_eff
    u, v, spikes, row = _int_step([0], [0], [101], vth_eff=vth_eff)
    assert spikes[0] == 1 and v[0] == 0 and u[0] == 101 << 6  # u is not reset
    assert row[_slot("spikes")] == 1


def test_bias_and_leak_follow_lava():
    # dv = 1024 keeps 3/4 of v; bias adds every step
    _, v, _, _ = _int_step([0], [400], [0], dv=1024, bias=10)
    assert v[0] == 300 + 10


def test_weight_exponent_shift_and_events_on_a_planted_example():
    w = np.array([[3, 0, -5, 2],
                  [0, 0, 7, -1],
                  [1, 0, 0, 4]], dtype=np.int64)  # (d_out 3, d_in 4); column 1 is all zeros
    spikes = np.array([[1, 1, 0, 1],
                       [0, 0, 1, 0]], dtype=np.int64)
    nnz = (w != 0).sum(axis=0).astype(np.int64)
    out, row = np.zeros((2, 3), np.int64), np.zeros(ROW, np.int64)
    wt = np.ascontiguousarray(w.T)
    dense_events_(spikes, wt, 2, nnz, np.zeros(3, np.int64), out, row)
    np.testing.assert_array_equal(out, (spikes @ w.T) << 2)
    # events = spikes x nonzero fan-out: sample 0 -> 2 + 0 + 3, sample 1 -> 2
    assert row[_slot("synaptic_events")] == 7 == row[_slot("acs_effective")]
    dense_events_(spikes, wt, -1, nnz, np.zeros(3, np.int64), out, row)
    np.testing.assert_array_equal(out, (spikes @ w.T) >> 1)  # arithmetic shift: floor
    assert out[1, 0] == -3  # -5 >> 1


def test_spiking_training_is_bit_identical(tmp_path):
    import fo_edge
    from fo_edge.runs import load_weights

    runs = [fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-32-10", limit=256,
                             lr=0.1, out=str(tmp_path / f"r{i}")) for i in range(2)]
    a, b = (load_weights(r.run_dir, [64, 32, 10]) for r in runs)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert runs[0].record["counters"] == runs[1].record["counters"]
    totals = runs[0].record["counters"]["totals"]
    assert totals["spikes"] > 0 and totals["synaptic_events"] > 0 and totals["timesteps"] > 0
    assert totals["synaptic_updates"] == 8 * (64 * 32 + 32 * 10)  # every synapse, once per learning epoch (batch)
