"""`fo-edge sweep`: expansion, a 4-point local sweep end to end, rerun skips, a broken point fails alone, spec
errors are one line, and the same sweep on a local Ray instance."""
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fo_edge.cli import cli
from fo_edge.errors import ConfigError
from fo_edge.sweep import expand, load_spec, run_sweep

SPEC = """
[sweep]
rule = ["ftp", "bp"]
seed = {{ start = 0, stop = 2 }}
device = {device}
model = "64-16-10"
dataset = "digits"
limit = 300
"""


def _spec(tmp_path, device='"mcu-int8"', extra=""):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(device=device) + extra)
    return path


def test_expansion_of_lists_ranges_and_precision_overrides(tmp_path):
    points = expand(load_spec(_spec(tmp_path, extra="weight_bits = [6, 8]\n")))
    assert len(points) == 2 * 2 * 2
    assert {p.settings["seed"] for p in points} == {0, 1} and {p.formats["weight_bits"] for p in points} == {6, 8}
    assert len({p.name for p in points}) == 8


def test_local_sweep_end_to_end_then_rerun_skips(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["sweep", str(_spec(tmp_path)), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "sweep.json").read_text())
    assert [s["status"] for s in record["statuses"]] == ["complete"] * 4
    for name in ("summary.md", "summary.csv", "energy.png", "pareto.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "summary.md").read_text().count("| 000") == 4
    from fo_edge.engine.threads import available_threads

    share = max(1, available_threads() // 2)  # two workers share the cores: no oversubscribed kernels
    assert {json.loads(p.read_text())["config"]["threads"] for p in out.glob("points/*/run.json")} == {share}
    again = run_sweep(_spec(tmp_path), out)
    assert [s["status"] for s in again["statuses"]] == ["skipped (already complete)"] * 4


def test_a_broken_device_fails_its_points_only(tmp_path):
    (tmp_path / "broken.toml").write_text('id = "broken"\n')
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "sweep", str(_spec(tmp_path, '["mcu-int8", "broken.toml"]')),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    statuses = json.loads((tmp_path / "out" / "sweep.json").read_text())["statuses"]
    failed = [s for s in statuses if s["status"] == "failed"]
    assert len(failed) == 4 and all("broken.toml" in s["error"] for s in failed)
    assert sum(s["status"] == "complete" for s in statuses) == 4


def test_editing_a_device_file_reruns_its_points(tmp_path):
    """Points are keyed by content: the same spec after an edit of the device file runs again."""
    from importlib import resources

    profile = tmp_path / "mine.toml"
    text = (resources.files("fo_edge") / "profiles" / "mcu-int8.toml").read_text(encoding="utf-8")
    profile.write_text(text)
    spec = tmp_path / "one.toml"
    spec.write_text('[sweep]\nrule = "ftp"\ndevice = "mine.toml"\nmodel = "64-16-10"\ndataset = "digits"\n'
                    'limit = 100\n')
    out = tmp_path / "out"
    assert [s["status"] for s in run_sweep(spec, out)["statuses"]] == ["complete"]
    assert [s["status"] for s in run_sweep(spec, out)["statuses"]] == ["skipped (already complete)"]
    profile.write_text(text.replace('id = "mcu-int8"', 'id = "mcu-int8"  # edited'))
    assert [s["status"] for s in run_sweep(spec, out)["statuses"]] == ["complete"]


def test_pareto_front_compares_one_energy_mode(tmp_path):
    """mcu-int8's primary mode is system (board level), loihi-like's op: the front prices both in op mode."""
    spec = tmp_path / "two.toml"
    spec.write_text('[sweep]\nrule = "ftp"\ndevice = ["mcu-int8", "loihi-like"]\nmodel = "64-16-10"\n'
                    'dataset = "digits"\nlimit = 100\n')
    out = tmp_path / "out"
    run_sweep(spec, out)
    csv_text = (out / "summary.csv").read_text()
    header = csv_text.splitlines()[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in csv_text.splitlines()[1:] if line]
    assert {r["energy_mode"] for r in rows} == {"system", "op"} and {r["pareto_mode"] for r in rows} == {"op"}


@pytest.mark.parametrize("extra, message", [("bogus = 1\n", "unknown keys"),
                                            ("epochs = { start = 3, stop = 1 }\n", "range is empty"),
                                            ("epochs = { start = 1, stop = 3, step = 0 }\n", "step 0"),
                                            ("stall_steps = { start = 1, stop = 1000000000 }\n", "at most 100,000"),
                                            ("epochs = { start = 1, stop = 2.5 }\n", "integer start"),
                                            ("batch_size = [0, 8]\n", "sweep spec: batch_size must be an integer"),
                                            ("lr = [1e30]\n", "sweep spec: lr must be a number in (0, 1000]")])
def test_spec_errors_are_one_line(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        expand(load_spec(_spec(tmp_path, extra=extra)))


def test_the_same_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs the extra: pip install -e '.[ray]' (CI installs it)")
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(device='"mcu-int8"').replace('rule = ["ftp", "bp"]', 'rule = "ftp"'))
    record = run_sweep(path, tmp_path / "out", executor="ray", workers=2)
    assert [s["status"] for s in record["statuses"]] == ["complete"] * 2
    assert (tmp_path / "out" / "pareto.png").exists()
