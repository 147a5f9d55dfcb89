"""A run directory belongs to one run: --out refuses another run's directory unless --overwrite; --resume
takes only a checkpoint of the run that run.json records, and no other options; SIGINT and SIGTERM record the run
as interrupted with a hint to resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import fo_edge
from fo_edge.cli import cli
from fo_edge.errors import ConfigError, RunError
from fo_edge.runs import read_run

TINY = dict(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=64)


def test_out_refuses_a_directory_holding_another_run(tmp_path):
    out = tmp_path / "r"
    fo_edge.simulate(**TINY, out=str(out))
    before = (out / "run.json").read_bytes()
    with pytest.raises(RunError, match=r"holds another run \(complete: ftp on mcu-int8\); pass --overwrite"):
        fo_edge.simulate(**{**TINY, "rule": "pepita"}, out=str(out))
    assert (out / "run.json").read_bytes() == before  # nothing of the old run was touched
    result = CliRunner().invoke(cli, ["simulate", "--rule", "pepita", "--device", "mcu-int8", "--dataset", "digits",
                                      "--model", "64-16-10", "--limit", "64", "--out", str(out)])
    assert result.exit_code != 0 and "holds another run" in result.output + str(result.exception)
    replaced = fo_edge.simulate(**{**TINY, "rule": "pepita"}, out=str(out), overwrite=True)
    assert read_run(out)["config"]["rule"] == "pepita" and replaced.run_dir == out


def test_overwrite_removes_the_old_runs_checkpoint(tmp_path):
    out = tmp_path / "r"
    fo_edge.simulate(**TINY, out=str(out), checkpoint_every=1)
    np.savez(out / "checkpoint.npz", stale=np.zeros(1))  # as if an older, killed run had left one
    fo_edge.simulate(**TINY, out=str(out), checkpoint_every=0, overwrite=True)
    assert not (out / "checkpoint.npz").exists()


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        fo_edge.simulate(**TINY, out=str(out), checkpoint_every=1)
    ids = {read_run(out)["run_id"] for out in (a, b)}
    assert len(ids) == 2  # every run has its own id
    record = read_run(b)
    record["status"] = "running"  # b killed mid-run, but holding a's checkpoint (a rerun into the same directory)
    (b / "run.json").write_text(json.dumps(record))
    (b / "checkpoint.npz").write_bytes((a / "checkpoint.npz").read_bytes())
    with pytest.raises(RunError, match="checkpoint.npz belongs to another run"):
        fo_edge.simulate(resume=b)


def test_resume_checks_the_config_and_weights_fingerprints(tmp_path):
    """A checkpoint carries SHA-256 fingerprints of run.json's config and of its own weights: an edited
    run.json or damaged weights are refused, an untouched pair resumes."""
    out = tmp_path / "r"
    fo_edge.simulate(**TINY, out=str(out), checkpoint_every=1, epochs=2)
    record = read_run(out)
    record["status"] = "running"
    (out / "run.json").write_text(json.dumps(record))
    pristine = (out / "checkpoint.npz").read_bytes()
    state = dict(np.load(out / "checkpoint.npz"))
    assert {"run_id", "config_sha", "w_sha"} <= set(state)
    edited = json.loads(json.dumps(record))
    edited["config"]["lr"] = 0.123
    (out / "run.json").write_text(json.dumps(edited))
    with pytest.raises(RunError, match="another configuration than run.json records"):
        fo_edge.simulate(resume=out)
    (out / "run.json").write_text(json.dumps(record))
    state["w"] = state["w"].copy()
    state["w"].flat[0] += 1
    np.savez(out / "checkpoint.npz", **state)
    with pytest.raises(RunError, match="do not match their fingerprint"):
        fo_edge.simulate(resume=out)
    (out / "checkpoint.npz").write_bytes(pristine)
    assert fo_edge.simulate(resume=out).record["status"] == "complete"


def test_options_beside_resume_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="options it was started with"):
        fo_edge.simulate(resume=tmp_path, epochs=3)
    result = CliRunner().invoke(cli, ["simulate", "--resume", str(tmp_path), "--epochs", "3", "--lr", "0.5"])
    assert result.exit_code == 2 and "drop --epochs, --lr" in result.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_is_recorded_and_resumes(tmp_path, signum):
    out = tmp_path / "r"
    args = [sys.executable, "-m", "fo_edge", "simulate", "--rule", "ftp", "--device", "mcu-int8", "--model",
            "784-64-10", "--limit", "16000", "--epochs", "2", "--checkpoint-every", "40", "--out", str(out)]
    # a shell's background jobs inherit SIGINT ignored (then Python never raises KeyboardInterrupt): restore it
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out / "checkpoint.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()[-1]) > 0 and read_run(out)["status"] == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--resume", str(out)],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert read_run(out)["status"] == "complete"


def test_results_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fo_edge.simulate(**TINY, out=str(tmp_path / "r"))
    finally:
        os.umask(old)
    for name in ("run.json", "weights.npz", "device.toml"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o640, name


def test_progress_on_a_non_terminal_is_lines_not_carriage_returns(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--rule", "ftp", "--device", "mcu-int8",
                           "--dataset", "digits", "--model", "64-16-10", "--limit", "200", "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "\r" not in proc.stderr
    assert "ftp on mcu-int8: 200/200 samples (100 %)" in proc.stderr


def test_digits_without_a_model_gets_one_that_fits(tmp_path):
    run = fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", limit=64, out=str(tmp_path / "r"))
    assert run.record["config"]["dims"] == [64, 256, 256, 10]
    spiking = fo_edge.simulate(rule="ftp", device="loihi-like", dataset="digits", limit=64, out=str(tmp_path / "s"))
    assert spiking.record["config"]["dims"] == [64, 256, 10]


def test_default_run_directories_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = [fo_edge.simulate(**TINY) for _ in range(3)]  # quicker than a second each: same timestamp
    assert len({r.run_dir for r in runs}) == 3 and all(read_run(r.run_dir)["status"] == "complete" for r in runs)
