"""Dropout, momentum and weight decay on the Numba path (kernels.steps.drop_, kernels.linear.momentum_update_):
the same masks and SGD as the torch path (so the float kernels train the torch path's weights for every rule),
the integer requantisation by 1 / (1 - p) and an integer momentum step worked by hand, the mask and the
velocity in the device's memory, a resumed momentum run bit-identical, and the refusals that remain (spiking
and analog devices)."""
import numpy as np
import pytest

import fo_edge
from fo_edge.device import load_device
from fo_edge.errors import ConfigError
from fo_edge.kernels.counters import COUNTERS, new_counters
from fo_edge.kernels.fixed import fixed_multiplier
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.steps import drop_
from fo_edge.rules.numba_binding import make_params
from fo_edge.runs import load_weights

DIMS = [64, 32, 16, 10]


@pytest.mark.parametrize("rule", ["ftp", "foton", "pepita", "bp"])
def test_numba_float_with_dropout_trains_the_torch_paths_weights(tmp_path, rule):
    kw = dict(rule=rule, dataset="digits", model="64-32-16-10", limit=256, dropout=0.25, seed=4, device="gpu-fp32",
              on_unhealthy="warn", rule_options={"temperature": 0.25} if rule == "foton" else {})
    torch_run = fo_edge.simulate(backend="torch", out=str(tmp_path / "t"), **kw)
    numba_run = fo_edge.simulate(backend="numba", out=str(tmp_path / "n"), **kw)
    fo_edge.simulate(backend="numba", out=str(tmp_path / "p"), **{**kw, "dropout": 0.0})
    a, b, c = (load_weights(tmp_path / d, DIMS) for d in ("t", "n", "p"))
    for name in ("W0", "W1", "W2"):
        np.testing.assert_allclose(b[name], a[name], atol=1e-5)
    assert not np.allclose(b["W0"], c["W0"], atol=1e-5)  # the masks did something
    assert numba_run.accuracy == pytest.approx(torch_run.accuracy, abs=2 / 256)


def test_integer_dropout_requantises_by_hand():
    """p = 0.5: 1 / (1 - p) = 2 = 2048 / 2**10 exactly. pre [3, -5, 7, 100] with keep [1, 0, 1, 1] on an 8-bit
    activation format (mcu-int8: a_hi = 127) -> [6, 0, 14, 127 (saturated, counted)], h = relu(pre)."""
    profile = load_device("mcu-int8")
    P = make_params(profile, "relu", "ce")
    m, k = fixed_multiplier(2.0)
    assert (m, k) == (2048, 10)
    pre = np.array([[3, -5, 7, 100]], dtype=np.int64)
    h = np.zeros_like(pre)
    C = new_counters(1)
    drop_(pre, h, (np.array([1, 0, 1, 1], dtype=np.uint8), float(m), k), 0, P, C[0, 0], new_state(0))
    assert pre.tolist() == [[6, 0, 14, int(P.a_hi)]] and h.tolist() == [[6, 0, 14, int(P.a_hi)]]
    assert C[0, 0, COUNTERS.index("saturation_events")] == 1
    negative = np.array([[-3]], dtype=np.int64)
    drop_(negative, np.zeros_like(negative), (np.array([1], dtype=np.uint8), float(m), k), 0, P, C[0, 0],
          new_state(0))
    assert negative.tolist() == [[-6]]


def test_the_mask_is_in_the_devices_memory(tmp_path):
    with_mask = fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-32-16-10", limit=64,
                                 batch_size=16, dropout=0.1, out=str(tmp_path / "d"))
    without = fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-32-16-10", limit=64,
                               batch_size=16, out=str(tmp_path / "n"))
    buffers = with_mask.record["memory"]["buffers"]
    assert "dropout_mask" in buffers and "dropout_mask" not in without.record["memory"]["buffers"]
    assert with_mask.record["memory"]["peak_bytes"] - without.record["memory"]["peak_bytes"] == 16 * (32 + 16)


def test_what_the_device_paths_still_refuse():
    with pytest.raises(ConfigError, match="dropout runs on the float torch path only"):
        fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", dropout=0.1)
    for device in ("loihi-like", "memristor-rram"):
        for option in ("momentum", "weight_decay"):
            with pytest.raises(ConfigError, match=f"{option.replace('_', ' ')} runs on the float torch path only"):
                fo_edge.simulate(rule="ftp", device=device, dataset="digits", model="64-16-10", **{option: 0.5})


@pytest.mark.parametrize("rule", ["ftp", "foton", "pepita", "bp"])
def test_numba_float_momentum_and_weight_decay_train_the_torch_paths_weights(tmp_path, rule):
    kw = dict(rule=rule, dataset="digits", model="64-32-16-10", limit=256, momentum=0.9, weight_decay=1e-3,
              seed=4, device="gpu-fp32", on_unhealthy="warn",
              rule_options={"temperature": 0.25} if rule == "foton" else {})
    fo_edge.simulate(backend="torch", out=str(tmp_path / "t"), **kw)
    fo_edge.simulate(backend="numba", out=str(tmp_path / "n"), **kw)
    a, b = (load_weights(tmp_path / d, DIMS) for d in ("t", "n"))
    for name in ("W0", "W1", "W2"):
        np.testing.assert_allclose(b[name], a[name], atol=1e-5)


def test_integer_momentum_step_by_hand():
    """One row, B = 1: delta 2, h = [3, -1] so g = [6, -2]; velocity [8, 0], mu = 1/2, no weight decay, lr
    factor 1/4, nearest rounding: v = round(8/2) + round(6/2) = 7, step round(7/4) = 2, w 10 -> 8; v = 0 +
    round(-2/2) = -1, step round(-1/4) = 0: the update is lost and counted."""
    from fo_edge.kernels.fixed import ROUND_NEAREST_EVEN
    from fo_edge.kernels.update import momentum_update_

    P = make_params(load_device("mcu-int8"), "relu", "ce")._replace(upd_round=ROUND_NEAREST_EVEN)
    w = np.array([10, 10], dtype=np.int64)
    vel = np.array([8, 0], dtype=np.int64)
    C = new_counters(1)
    mom = np.array([1.0, 2.0, 1.0, 2.0, 0.0, 1.0, 1.0, 4.0])
    momentum_update_(w, 0, 1, 2, np.array([[2]], dtype=np.int64), np.array([[3, -1]], dtype=np.int64), vel, mom,
                     np.zeros(1, dtype=np.int64), P, C[0, 0], new_state(0))
    assert vel.tolist() == [7, -1] and w.tolist() == [8, 10]
    assert C[0, 0, COUNTERS.index("weight_writes")] == 1 and C[0, 0, COUNTERS.index("updates_lost")] == 1


def test_integer_momentum_trains_accounts_its_velocity_and_resumes_bit_identically():
    """mcu-int8: the velocity takes 4 bytes per weight; a run resumed from a mid-run checkpoint ends with the
    uninterrupted run's weights and velocity, bit for bit."""
    from fo_edge.data import load_dataset
    from fo_edge.engine.stream import train_stream
    from fo_edge.models import init_weights
    from fo_edge.rules import rule_config

    data = load_dataset("digits")
    profile = load_device("mcu-int8")
    kw = dict(activation="tanh", error="ce", lr=0.03, epochs=2, batch_size=32, seed=1, momentum=0.9,
              weight_decay=1e-3)
    saved = []
    full = train_stream(init_weights(tuple(DIMS), seed=1), data, "ftp", rule_config("ftp"), profile,
                        checkpoint_every=20, on_checkpoint=saved.append, **kw)
    assert full.memory["buffers"]["velocity"]["bytes"] == 4 * (64 * 32 + 32 * 16 + 16 * 10)
    middle = saved[1]
    assert "velocity" in middle and middle["velocity"].any()
    resumed = train_stream(init_weights(tuple(DIMS), seed=1), data, "ftp", rule_config("ftp"), profile,
                           resume=middle, **kw)
    for name in full.stored:
        np.testing.assert_array_equal(resumed.stored[name], full.stored[name])
    assert full.history[-1]["test_accuracy"] > 0.5


def test_a_recipe_runs_on_a_device_with_its_dropout_and_overwrite_is_a_run_control():
    """foton-mnist-mlp's dropout 0.1 is honoured on an integer device; --overwrite is allowed beside a recipe."""
    from fo_edge.recipe import recipe_settings

    settings = recipe_settings("foton-mnist-mlp", device="fpga-fixed16", overwrite=True, limit=64, epochs=1)
    assert settings["dropout"] == 0.1 and settings["overwrite"] is True
