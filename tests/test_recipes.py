"""Recipes (recipes/*.toml) and the data pipeline they drive: loading and validation, a recipe run against the
same run given by flags, standardisation and drop_last by hand, FOTON under the reference's conventions against
the reference's formulas, and the Björck tolerance."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, strategies as st

from fo_edge.cli import cli, main
from fo_edge.data import Dataset
from fo_edge.engine.plan import BatchPlan
from fo_edge.engine.torch_loop import dropout_masks, train_torch
from fo_edge.errors import ConfigError
from fo_edge.kernels.counters import new_counters
from fo_edge.kernels.orth import bjorck_
from fo_edge.models import init_weights
from fo_edge.recipe import RUN_FIELDS, RecipeError, list_recipes, load_recipe, parse_recipe, recipe_settings
from fo_edge.rules import FOTONConfig, bjorck_torch, rule_config
from fo_edge.rules.numba_binding import FLOAT64, make_params
from fo_edge.kernels.rng import new_state


def test_every_bundled_recipe_loads_with_every_value_sourced():
    ids = list_recipes()
    assert {"foton-mnist-mlp", "foton-mnist-mlp50", "foton-mnist-conv", "pepita-mnist-1024", "ftp-mnist-mlp",
            "bp-mnist-mlp", "bp-mnist-1024", "bp-mnist-ftp-net"} <= set(ids)
    for rid in ids:
        recipe = load_recipe(rid)
        assert recipe.id == rid
        assert set(recipe.run) <= set(RUN_FIELDS)
        for key in recipe.run:
            assert recipe.sources[f"run.{key}"].strip()
        assert all(source.strip() for source in recipe.sources.values())


def test_the_foton_recipe_is_the_reference_configuration():
    recipe = load_recipe("foton-mnist-mlp")
    run = recipe.run
    assert (run["model"], run["activation"], run["lr"], run["batch_size"], run["epochs"]) == \
        ("784-256-256-10", "relu", 0.5, 256, 100)
    assert (run["normalize"], run["dropout"], run["batch_divisor"], run["momentum"]) == \
        ("standard", 0.1, "configured", 0.0)
    assert recipe.rule_options["temperature"] == 1.0  # the reference's ce_T = 1
    assert recipe.rule_options["ortho_every"] == 1 and recipe.rule_options["refresh_every"] == 1
    assert recipe.paper["test_accuracy"] == 98.5


RECIPE = '''id = "x"
title = "t"
[run]
rule = { value = "foton", source = "s" }
device = { value = "gpu-fp32", source = "s" }
dataset = { value = "digits", source = "s" }
model = { value = "64-32-10", source = "s" }
epochs = { value = 1, source = "s" }
batch_size = { value = 16, source = "s" }
lr = { value = 0.1, source = "s" }
'''


@pytest.mark.parametrize("text, match", [
    (RECIPE + 'bach_size = { value = 3, source = "s" }\n', "did you mean 'batch_size'"),
    (RECIPE.replace('lr = { value = 0.1, source = "s" }', 'lr = 0.1'), "run.lr: expected { value"),
    (RECIPE.replace('lr = { value = 0.1, source = "s" }', 'lr = { value = 0.1, source = "" }'),
     "run.lr.source: expected a non-empty citation"),
    (RECIPE.replace('epochs = { value = 1, source = "s" }', 'epochs = { value = "ten", source = "s" }'),
     "run.epochs.value: expected int"),
    (RECIPE.replace('lr = { value = 0.1, source = "s" }\n', ''), r"\[run\] lr: this key is missing"),
    (RECIPE + '[rule_options]\northo_evry = { value = 2, source = "s" }\n', "did you mean 'ortho_every'"),
    (RECIPE + '[rule_options]\nce_T = { value = 2, source = "s" }\ntemperature = { value = 2, source = "s" }\n',
     "ce_T .* or temperature, not both"),
    ("id = [", "not valid TOML"),
    (RECIPE + 'seeds = 3\n', "did you mean 'seed'"),
])
def test_malformed_recipes_are_one_line_errors(text, match):
    with pytest.raises(RecipeError, match=match) as info:
        parse_recipe(text, "bad.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.toml")


def test_ce_t_is_stored_as_the_inverse_temperature():
    recipe = parse_recipe(RECIPE + '[rule_options]\nce_T = { value = 4.0, source = "s" }\n')
    assert recipe.rule_options == {"temperature": 0.25}


def test_recipe_settings_override_single_fields_and_merge_rule_options(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE + '[rule_options]\northo_every = { value = 3, source = "s" }\n')
    settings = recipe_settings(str(path), epochs=2, rule_options={"bjorck_iters": 4})
    assert settings["epochs"] == 2 and settings["lr"] == 0.1 and settings["recipe"] == "x"
    assert settings["rule_options"] == {"ortho_every": 3, "bjorck_iters": 4}
    with pytest.raises(RecipeError, match="cannot override 'colour'"):
        recipe_settings(str(path), colour="red")


def test_unknown_recipe_and_special_files_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="did you mean 'foton-mnist-mlp'"):
        load_recipe("foton-mnist-mpl")
    with pytest.raises(RecipeError, match="not a regular file"):
        load_recipe(str(tmp_path) + "/")
    with pytest.raises(RecipeError, match="cannot read|not a regular file"):
        load_recipe(str(tmp_path / "missing.toml"))


def test_a_recipe_run_equals_the_same_run_given_by_flags(tmp_path):
    common = ["--epochs", "1", "--limit", "600"]
    by_recipe = CliRunner().invoke(cli, ["simulate", "--recipe", "foton-mnist-mlp", *common,
                                         "--out", str(tmp_path / "a")])
    assert by_recipe.exit_code == 0, by_recipe.output
    flags = ["--rule", "foton", "--device", "gpu-fp32", "--dataset", "mnist", "--model", "784-256-256-10",
             "--activation", "relu", "--error", "ce", "--batch-size", "256", "--lr", "0.5", "--lr-gamma", "1",
             "--dropout", "0.1", "--normalize", "standard", "--batch-divisor", "configured", "--seed", "0",
             "-o", "temperature=1.0", "-o", "ortho_every=1", "-o", "bjorck_iters=20", "-o", "bjorck_tol=1e-5",
             "-o", "refresh_every=1"]
    by_flags = CliRunner().invoke(cli, ["simulate", *flags, *common, "--out", str(tmp_path / "b")])
    assert by_flags.exit_code == 0, by_flags.output
    a, b = (np.load(tmp_path / d / "weights.npz") for d in ("a", "b"))
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["config"]["recipe"] == "foton-mnist-mlp" and record["config"]["epochs"] == 1


def test_recipes_command_and_bad_recipe_line(capsys):
    listing = CliRunner().invoke(cli, ["recipes"])
    assert listing.exit_code == 0 and "foton-mnist-mlp" in listing.output and "98.50 %" in listing.output
    as_json = json.loads(CliRunner().invoke(cli, ["recipes", "--json"]).output)
    assert {r["id"] for r in as_json} == set(list_recipes())
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--recipe", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("fo-edge: error: unknown recipe 'nope'") and err.count("\n") == 1


def test_standardisation_by_hand():
    # pixels 0, 1, 1, 1: mean 0.75, std sqrt(0.1875) = 0.4330 (4 decimals); test split uses the train statistics
    data = Dataset("tiny", np.array([[0.0, 1.0], [1.0, 1.0]], np.float32), np.array([0, 1]),
                   np.array([[0.5, 0.0]], np.float32), np.array([1]), (2,), 2)
    assert data.statistics() == (0.75, 0.433)
    out = data.standardized()
    np.testing.assert_allclose(out.x_train, [[-0.75 / 0.433, 0.25 / 0.433], [0.25 / 0.433, 0.25 / 0.433]], rtol=1e-6)
    np.testing.assert_allclose(out.x_test, [[-0.25 / 0.433, -0.75 / 0.433]], rtol=1e-6)
    assert out.y_train is data.y_train


def test_mnist_statistics_are_the_published_constants():
    from fo_edge.data import load_dataset

    assert load_dataset("mnist").statistics() == (0.1307, 0.3081)


def test_drop_last_and_the_batch_divisor_change_exactly_what_they_should():
    assert list(BatchPlan().starts(10, 4)) == [0, 4, 8]
    assert list(BatchPlan(drop_last=True).starts(10, 4)) == [0, 4]
    assert list(BatchPlan(drop_last=True).starts(10, 4, first=4)) == [4]
    assert list(BatchPlan(drop_last=True).starts(3, 4)) == []
    assert BatchPlan().step_lr(0.5, 0, 2, 4) == 0.5
    assert BatchPlan(batch_divisor="configured").step_lr(0.5, 0, 2, 4) == 0.25
    assert BatchPlan(batch_divisor="configured").step_lr(0.5, 0, 4, 4) == 0.5
    plan = BatchPlan(lr_milestones=(2, 4), lr_gamma=0.1)
    assert [plan.epoch_lr(1.0, e) for e in range(5)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(ConfigError, match="increasing"):
        BatchPlan(lr_milestones=(4, 2))


def test_drop_last_skips_the_partial_batch_in_a_run(tmp_path):
    import fo_edge

    kept = fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="64-10", batch_size=500,
                            out=str(tmp_path / "kept"), limit=1300, checkpoint_every=0)
    dropped = fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="64-10", batch_size=500,
                               out=str(tmp_path / "dropped"), limit=1300, drop_last=True, checkpoint_every=0)
    assert kept.history[0]["steps"] == 3 and dropped.history[0]["steps"] == 2


def _softmax(z):
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def test_foton_under_the_reference_conventions_matches_the_reference_formulas(digits):
    # The reference (ALGORITHMS.md): x standardised; h_l = relu(M_l * (h_{l-1} W_l^T)) with one inverted-dropout
    # mask M_l per batch shared by both passes; e = softmax(ce_T * y) - t; F = W_3 W_2 W_1; x_err = x - e F;
    # g_l = (h_l - h^err_l)^T h_{l-1} / B and g_L = e^T h_{L-1} / B with B the *configured* batch size, here 8
    # for a partial batch of 5 rows; SGD W <- W - lr g.
    ce_t, lr, batch, p = 2.0, 0.5, 8, 0.25
    data = Dataset("d", digits.x_train[:5], digits.y_train[:5], digits.x_test[:5], digits.y_test[:5], (8, 8), 10)
    data = data.standardized()
    weights = init_weights((64, 32, 16, 10), seed=4)
    config = rule_config("foton", temperature=1.0 / ce_t, ortho_every=0)
    final, _ = train_torch(weights, data, "foton", config, activation="relu", error="ce", lr=lr, epochs=1,
                           batch_size=batch, seed=0, plan=BatchPlan(batch_divisor="configured"), dropout=p)
    order = np.random.default_rng([0, 0]).permutation(5)
    x = data.x_train[order].astype(np.float64)
    t = np.eye(10)[data.y_train[order]]
    masks = [m.numpy().astype(np.float64) for m in dropout_masks((64, 32, 16, 10), 5, p, 0, 0, "cpu")]
    w = [wl.astype(np.float64) for wl in weights]
    h1 = np.maximum(masks[0] * (x @ w[0].T), 0)
    h2 = np.maximum(masks[1] * (h1 @ w[1].T), 0)
    e = _softmax(ce_t * (h2 @ w[2].T)) - t
    x_err = x - e @ (w[2] @ w[1] @ w[0])
    m1 = np.maximum(masks[0] * (x_err @ w[0].T), 0)
    m2 = np.maximum(masks[1] * (m1 @ w[1].T), 0)
    grads = [(h1 - m1).T @ x / batch, (h2 - m2).T @ h1 / batch, e.T @ h2 / batch]
    for ours, wl, g in zip(final, w, grads):
        np.testing.assert_allclose(ours, wl - lr * g, atol=2e-6)


def test_momentum_and_weight_decay_follow_torch_sgd(digits):
    data = Dataset("d", digits.x_train[:64], digits.y_train[:64], digits.x_test[:8], digits.y_test[:8], (8, 8), 10)
    weights = init_weights((64, 10), seed=1)
    ours, _ = train_torch(weights, data, "bp", rule_config("bp"), activation="relu", error="ce", lr=0.1, epochs=2,
                          batch_size=16, seed=0, momentum=0.9, weight_decay=0.01)
    w = torch.nn.Parameter(torch.as_tensor(weights[0]).clone())
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    for epoch in range(2):
        order = np.random.default_rng([0, epoch]).permutation(64)
        for begin in range(0, 64, 16):
            idx = order[begin:begin + 16]
            opt.zero_grad()
            x = torch.as_tensor(data.x_train[idx])
            loss = torch.nn.functional.cross_entropy(x @ w.T, torch.as_tensor(data.y_train[idx]))
            loss.backward()
            opt.step()
    np.testing.assert_allclose(ours[0], w.detach().numpy(), atol=1e-5)


def test_pipeline_options_are_range_checked_and_refused_where_unsupported():
    import fo_edge

    for kwargs, match in [({"dropout": 1.5}, "--dropout must be"), ({"momentum": -0.1}, "--momentum must be"),
                          ({"normalize": "zscore"}, "--normalize must be"),
                          ({"lr_milestones": (3,), "epochs": 2}, "beyond --epochs"),
                          ({"batch_divisor": "mean"}, "batch_divisor must be")]:
        with pytest.raises(ConfigError, match=match):
            fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="64-10", **kwargs)
    with pytest.raises(ConfigError, match="momentum runs on the float torch path only"):
        fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-10", momentum=0.9)
    with pytest.raises(ConfigError, match="rate-codes pixel intensities"):
        fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-10", normalize="standard")


def _orthonormal(n, m, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, m)))
    return q


@given(st.integers(4, 24), st.integers(1, 4), st.integers(0, 2**16))
def test_bjorck_tolerance_stops_early_near_orthogonal_and_converges_on_random(m, extra, seed):
    n = m + extra
    near = _orthonormal(n, m, seed) + 1e-9 * np.random.default_rng(seed + 1).standard_normal((n, m))
    used: list[int] = []
    out = bjorck_torch(torch.as_tensor(near), 20, tol=1e-6, used=used).numpy()
    assert used == [0] and np.array_equal(out, near)
    rand = np.random.default_rng(seed + 2).standard_normal((n, m))
    used = []
    out = bjorck_torch(torch.as_tensor(rand), 60, tol=1e-8, used=used).numpy()
    assert np.linalg.norm(out.T @ out - np.eye(m)) <= 1e-8 and 0 < used[0] < 60
    wide = bjorck_torch(torch.as_tensor(rand.T), 60, tol=1e-8).numpy()  # a wide W: rows orthonormal
    assert np.linalg.norm(wide @ wide.T - np.eye(m)) <= 1e-8


def test_bjorck_tolerance_on_the_numba_kernel_matches_torch():
    rand = np.random.default_rng(0).standard_normal((12, 8))
    flat = rand.ravel().copy()
    params = make_params(_float_profile(), "identity", "mse")
    counters = new_counters(1)[0, 0]
    done = bjorck_(flat, 0, 12, 8, 1.0, np.zeros(12, dtype=np.int64), 60, params, new_state(0), counters, 1e-8)
    used: list[int] = []
    ref = bjorck_torch(torch.as_tensor(rand), 60, tol=1e-8, used=used).numpy()
    assert done == used[0] and np.allclose(flat.reshape(12, 8), ref, atol=1e-12)
    fixed = rand.ravel().copy()
    assert bjorck_(fixed, 0, 12, 8, 1.0, np.zeros(12, dtype=np.int64), 20, params, new_state(0),
                   new_counters(1)[0, 0]) == 20


def _float_profile():
    from fo_edge.device.spec import Arithmetic, Capacity, DeviceProfile, Overflow, Rounding

    return DeviceProfile("float64", "float64", Arithmetic.FLOAT, FLOAT64, FLOAT64, FLOAT64, 64,
                         Rounding.NEAREST_EVEN, Rounding.NEAREST_EVEN, Overflow.SATURATE, Capacity(2**62), {})


def test_foton_records_the_bjorck_iterations_it_used(tmp_path):
    import fo_edge

    result = fo_edge.simulate(rule="foton", device="gpu-fp32", dataset="digits", model="64-32-10", limit=400,
                              rule_options={"bjorck_tol": 1e-5}, checkpoint_every=0, out=str(tmp_path / "r"))
    assert 0 < result.history[0]["bjorck_iters_mean"] < 20
    assert FOTONConfig(bjorck_tol=1e-5).bjorck_tol == 1e-5


def test_the_darcy_recipe_runs_mano_with_its_schedule_and_reproduce_paper_leaves_it_out(tmp_path):
    """bp-darcy32-mano is a MANO operator run (relative L2, Adam's lr stepped at its milestones), so
    `fo-edge simulate --recipe` runs it, and tools/reproduce_paper.py, which compares accuracies, leaves it out of
    its default list and refuses it by name in one line."""
    import subprocess
    import sys
    from pathlib import Path

    import fo_edge

    recipe = load_recipe("bp-darcy32-mano")
    assert (recipe.run["dataset"], recipe.run["model"], tuple(recipe.run["lr_milestones"])) == ("darcy32",
                                                                                               "mano:dim=64",
                                                                                               (96, 168, 216))
    settings = recipe_settings("bp-darcy32-mano", epochs=1, limit=24, lr_milestones=(), out=str(tmp_path / "d"))
    result = fo_edge.simulate(fo_edge.SimulateConfig(**settings))
    assert result.record["config"]["task"] == "field" and result.record["final"]["relative_l2"] > 0
    tool = Path(__file__).resolve().parents[1] / "tools" / "reproduce_paper.py"
    proc = subprocess.run([sys.executable, str(tool), "--recipes", "bp-darcy32-mano"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "relative L2" in proc.stderr
    sys.path.insert(0, str(tool.parent))
    try:
        from reproduce_paper import accuracy_recipes
    finally:
        sys.path.remove(str(tool.parent))
    assert "bp-darcy32-mano" not in accuracy_recipes() and "foton-mnist-mlp" in accuracy_recipes()
