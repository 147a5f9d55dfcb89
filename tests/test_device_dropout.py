"""Dropout on the Numba path (kernels.steps.drop_): the same masks as the torch path (so the float kernels
train the torch path's weights for every rule), the integer requantisation by 1 / (1 - p) worked by hand, the
mask in the device's memory, and the refusals that remain (spiking devices; momentum and weight decay)."""
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
    plain = fo_edge.simulate(backend="numba", out=str(tmp_path / "p"), **{**kw, "dropout": 0.0})
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
    for option in ("momentum", "weight_decay"):
        with pytest.raises(ConfigError, match=f"{option.replace('_', ' ')} runs on the float torch path only"):
            fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", **{option: 0.5})


def test_a_recipe_runs_on_a_device_with_its_dropout_and_overwrite_is_a_run_control():
    """foton-mnist-mlp's dropout 0.1 is honoured on an integer device; --overwrite is allowed beside a recipe."""
    from fo_edge.recipe import recipe_settings

    settings = recipe_settings("foton-mnist-mlp", device="fpga-fixed16", overwrite=True, limit=64, epochs=1)
    assert settings["dropout"] == 0.1 and settings["overwrite"] is True
