"""The capability matrix (fo_edge.capabilities) against the code: every cell names every guarantee, every
guarantee a cell claims holds on a short real run, and every gap it admits is really there."""
import numpy as np
import pytest

import fo_edge
from fo_edge.api import diagnose
from fo_edge.capabilities import CAPABILITIES, EXPORTS, GUARANTEES
from fo_edge.errors import ConfigError, RunError, RunInterrupted
from fo_edge.runs import read_run

#: a short run of each (family, backend): digits, two epochs, a checkpoint every 3 steps
RUNS = {
    ("mlp", "numba"): dict(rule="ftp", device="mcu-int8", model="64-16-10"),
    ("mlp", "torch"): dict(rule="ftp", device="gpu-fp32", model="64-16-10"),
    ("spiking", "numba"): dict(rule="ftp", device="loihi-like", model="64-16-10", backend="numba"),
    ("spiking", "torch"): dict(rule="ftp", device="loihi-like", model="64-16-10", backend="torch"),
    ("conv", "numba"): dict(rule="foton", device="mcu-int8", model="c2-10"),
    ("conv", "torch"): dict(rule="foton", device="gpu-fp32", model="c2-10"),
    ("mano", "torch"): dict(rule="ftp", device="gpu-fp32", model="mano:dim=8,depth=2,heads=2,window=2,patch=2"),
    ("mano", "numba"): dict(rule="ftp", device="mcu-int8", model="mano:dim=8,depth=2,heads=2,window=2,patch=2"),
}
COMMON = dict(dataset="digits", limit=96, epochs=2, batch_size=16, checkpoint_every=3)
#: what makes a cell's run unhealthy: a huge lr diverges (or saturates), except on the chip, whose integer weights
#: clip where they would diverge and whose spikes dwarf the clipped values; there a tiny lr stalls. MANO fits
#: classes with cross-entropy only
DIVERGE = dict(lr=1e3, error="mse")
HEALTH = {("spiking", "numba"): dict(lr=1e-6, stall_steps=2),
          ("mano", "torch"): dict(lr=1e3, epochs=8),  # Adam steps about lr: past max_weight within 10 steps
          ("mano", "numba"): dict(lr=1e3, epochs=8)}


def test_every_cell_names_every_guarantee():
    for cell, row in CAPABILITIES.items():
        assert set(row) == set(GUARANTEES), cell
        for name, value in row.items():
            assert value is True or (isinstance(value, str) and value.startswith("gap: ")) or \
                (name == "export" and value in EXPORTS), (cell, name, value)
    assert set(RUNS) == {cell for cell, row in CAPABILITIES.items() if row["memory"] is True}


def test_mano_runs_refuse_what_they_cannot_do():
    with pytest.raises(ConfigError, match="digital non-spiking"):
        fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="mano")
    with pytest.raises(ConfigError, match="--backend numba"):
        fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="mano", backend="torch")
    with pytest.raises(ConfigError, match="float torch path only"):
        fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="mano",
                         rule_options={"block_loss": "target"})
    with pytest.raises(ConfigError, match="bp or ftp"):
        fo_edge.simulate(rule="foton", device="gpu-fp32", dataset="digits", model="mano")
    with pytest.raises(ConfigError, match="dim"):
        fo_edge.simulate(rule="ftp", device="gpu-fp32", dataset="digits", model="mano:dim=16,heads=3")
    with pytest.raises(ConfigError, match="--model mano"):
        fo_edge.simulate(rule="ftp", device="gpu-fp32", dataset="darcy32", model="1024-10")


@pytest.mark.parametrize("cell", sorted(RUNS), ids=lambda cell: "-".join(cell))
def test_each_guarantee_a_cell_claims_holds(tmp_path, cell):
    row, options = CAPABILITIES[cell], {**RUNS[cell], **COMMON}
    run = fo_edge.simulate(out=str(tmp_path / "run"), **options)
    record = run.record
    assert 0 < record["memory"]["peak_bytes"] <= record["memory"]["capacity_bytes"]
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    if row["counters"] is True:
        assert record["counters"]["totals"] and max(record["counters"]["totals"].values()) > 0
    else:
        assert not record["counters"]
    assert bool(record["energy"] and record["energy"]["modes"]) == (row["energy"] is True)

    # resume: interrupted after four batches (past the checkpoint at step 3), resumed, it ends as the whole run
    seen = []

    def interrupt(n):
        seen.append(n)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        fo_edge.simulate(out=str(tmp_path / "cut"), on_batch=interrupt, **options)
    assert read_run(tmp_path / "cut")["status"] == "interrupted"
    resumed = fo_edge.simulate(resume=str(tmp_path / "cut"))
    a, b = np.load(tmp_path / "run" / "weights.npz"), np.load(tmp_path / "cut" / "weights.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert resumed.record["counters"] == record["counters"]

    # health: a diverging (or, on the chip, stalling) run stops, is recorded as stopped, names the layer and step
    with pytest.raises(RunError, match="numeric health: layer"):
        fo_edge.simulate(out=str(tmp_path / "boom"), **{**options, **HEALTH.get(cell, DIVERGE),
                                                         "rule_options": {"ortho_every": 0} if cell[0] == "conv" else {}})
    assert read_run(tmp_path / "boom")["status"] == "stopped"

    from fo_edge.export import export_onnx
    from fo_edge.export_nir import export_nir

    if str(row["export"]).startswith("gap: "):
        with pytest.raises(RunError):
            export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    elif row["export"] == "nir":
        assert export_nir(tmp_path / "run", tmp_path / "m.nir")["passed"]
        with pytest.raises(RunError):
            export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    else:
        assert export_onnx(tmp_path / "run", tmp_path / "m.onnx")["passed"]
        if row["export"] == "onnx-int8":
            assert export_onnx(tmp_path / "run", tmp_path / "m8.onnx", int8=True)["passed"]
    if row["diagnose"] is True:  # one cosine per layer, or per stage (MANO: stem, blocks, head)
        layers = len(record["config"].get("stages") or record["config"]["dims"][1:])
        assert len(diagnose(str(tmp_path / "run"))["cosine"][0]) == layers
    else:
        with pytest.raises(RunError):
            diagnose(str(tmp_path / "run"))


def test_the_architecture_map_shows_the_matrix_as_the_code_has_it():
    from pathlib import Path

    from fo_edge.capabilities import markdown_table

    assert markdown_table() in (Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md").read_text()
