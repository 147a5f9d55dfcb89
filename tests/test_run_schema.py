"""run.json read back through one schema (fo_edge.run_schema): every record fo-edge writes validates; a missing
or mistyped field is one line naming the file and the field in every command that reads runs; fuzzed records are
a clean error or a record."""
import copy
import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fo_edge
from fo_edge.errors import RunError
from fo_edge.runs import read_run


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "r"
    fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", model="64-16-10", limit=64, out=str(out))
    return out


@pytest.mark.parametrize("path, value, field", [
    (("config", "dims"), "64-16-10", "config.dims"),
    (("final", "test_accuracy"), "high", "final.test_accuracy"),
    (("final", "test_accuracy"), 7.5, "final.test_accuracy"),
    (("energy", "modes", "op", "per_training_sample_pj"), "x", "energy.modes.op.per_training_sample_pj"),
    (("counters", "values"), [[["1"]]], "counters.values.0.0.0"),
    (("history",), [{"epoch": "one", "test_accuracy": 0.5}], "history.0.epoch"),
    (("device", "id"), None, "device.id"),
])
def test_mistyped_fields_are_one_line_in_every_reader(good, tmp_path, path, value, field):
    record = json.loads((good / "run.json").read_text())
    node = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("device.toml", "weights.npz"):
        (bad / name).write_bytes((good / name).read_bytes())
    (bad / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match=re.escape(f"run.json is corrupt: {field}:")):
        read_run(bad)
    for command in (["energy-report", str(bad)], ["export", str(bad), "--nir", str(tmp_path / "x.nir")]):
        proc = subprocess.run([sys.executable, "-m", "fo_edge", *command], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert field in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_every_kind_of_record_fo_edge_writes_validates(good, tmp_path):
    fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="64-16-10", limit=64,
                     out=str(tmp_path / "torch"))  # torch path: no counters, no energy
    with pytest.raises(RunError):
        fo_edge.simulate(rule="bp", device="mcu-int8", dataset="digits", model="64-16-10", lr=1e3,
                         out=str(tmp_path / "stopped"))
    for run in (good, tmp_path / "torch", tmp_path / "stopped"):
        assert read_run(run)["schema_version"] == 2


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                    max_size=3), max_leaves=10),
       st.sampled_from(["config", "final", "energy", "counters", "memory", "history", "device"]))
def test_fuzzed_fields_are_a_clean_error_or_a_record(tmp_path_factory, good, junk, key):
    record = json.loads((good / "run.json").read_text())
    record[key] = copy.deepcopy(junk)
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "run.json").write_text(json.dumps(record))
    try:
        read_run(folder)
    except RunError as exc:
        assert "\n" not in str(exc)
