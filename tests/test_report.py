"""`fo-edge energy-report` end to end: every format, per-layer rows, the plot, and one-line errors for bad runs."""
import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.cli import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, rule, model in (("ftp-2", "ftp", "64-32-10"), ("bp-2", "bp", "64-32-10"), ("ftp-4", "ftp", "64-32x3-10")):
        fo_edge.simulate(rule=rule, device="mcu-int8", dataset="digits", model=model, epochs=1, limit=200,
                         out=str(root / name))
        out[name] = root / name
    return out


def _invoke(*args):
    return CliRunner().invoke(cli, ["energy-report", *map(str, args)], catch_exceptions=False)


def test_json_rows_carry_the_runs_numbers(runs):
    result = _invoke(*runs.values(), "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [r["run"] for r in rows] == list(runs)
    for row, path in zip(rows, runs.values()):
        record = json.loads((path / "run.json").read_text())
        energy = record["energy"]["modes"]["system"]
        assert row["energy_mode"] == "system"
        assert row["train_pj_per_sample"] == pytest.approx(energy["per_training_sample_pj"])
        assert row["test_accuracy"] == record["final"]["test_accuracy"]
        assert row["peak_memory_bytes"] == record["memory"]["peak_bytes"]
        assert sum(row[f"{p}_pj_per_sample"] for p in ("forward", "recompute", "modulated_forward", "backward",
                                                      "update", "orthogonalize", "feedback_refresh")) == \
            pytest.approx(row["train_pj_per_sample"])
    assert rows[1]["backward_pj_per_sample"] > 0 and rows[0]["backward_pj_per_sample"] == 0


def test_table_markdown_and_csv(runs):
    table = _invoke(*runs.values()).output
    assert "ftp-2" in table and ("µJ" in table or "nJ" in table)
    markdown = _invoke(*runs.values(), "--format", "markdown").output.splitlines()
    assert markdown[0].startswith("| run |") and markdown[1].startswith("|---") and len(markdown) == 5
    parsed = list(csv.DictReader(io.StringIO(_invoke(*runs.values(), "--format", "csv", "--mode", "op").output)))
    assert [r["energy_mode"] for r in parsed] == ["op"] * 3


def test_by_layer_rows_sum_to_the_training_energy(runs):
    rows = json.loads(_invoke(runs["ftp-4"], "--by-layer", "--format", "json").output)
    assert [r["layer"] for r in rows] == ["layer_1", "layer_2", "layer_3", "layer_4", "network"]
    record = json.loads((runs["ftp-4"] / "run.json").read_text())
    total = record["energy"]["modes"]["system"]["per_training_sample_pj"]
    assert sum(r["train_pj_per_sample"] for r in rows) == pytest.approx(total)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_plot_is_written_as_png(runs, tmp_path):
    target = tmp_path / "energy.png"
    assert _invoke(*runs.values(), "--plot", target).exit_code == 0
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1560, 540)  # two panels (the runs differ in depth), 13 x 4.5 in at 120 dpi


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "run.json").unlink(), "not a run directory"),
    (lambda d: (d / "run.json").write_text("{ nope"), "unreadable or corrupt"),
    (lambda d: (d / "run.json").write_text(json.dumps({"schema_version": 1})), "schema_version 1"),
])
def test_bad_run_dirs_give_one_line(runs, tmp_path, damage, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text((runs["ftp-2"] / "run.json").read_text())
    damage(bad)
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "energy-report", str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_plot_must_be_png(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "energy-report", str(runs["ftp-2"]), "--plot",
                           str(tmp_path / "x.pdf")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and ".png" in proc.stderr


def test_spiking_runs_show_static_energy_and_device_time(runs, tmp_path):
    spiking = tmp_path / "loihi"
    fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", limit=96, out=str(spiking))
    rows = json.loads(_invoke(spiking, runs["ftp-2"], "--format", "json").output)
    static = json.loads((spiking / "run.json").read_text())["energy"]["static"]
    assert static["per_training_sample_pj"] > 0
    assert rows[0]["static_train_pj_per_sample"] == pytest.approx(static["per_training_sample_pj"])
    assert rows[0]["static_inference_pj_per_sample"] == pytest.approx(static["per_inference_sample_pj"])
    assert rows[0]["device_train_s_per_sample"] == pytest.approx(static["training_s"] / 96)
    assert rows[0]["cores"] == static["cores_used"] and rows[1]["static_train_pj_per_sample"] is None
    table = _invoke(spiking, "--format", "markdown").output
    assert "static train E/sample" in table and "device train time/sample" in table
    assert "static train" not in _invoke(runs["ftp-2"], "--format", "markdown").output  # no spiking run: no column
