"""Every loader of user files (run.json, weights, checkpoint, recipe, sweep spec, IDX) fuzzed by hypothesis in a
child process under an address-space limit (tests/fuzz_loaders.py): each input gives a value or one clean
one-line error, never a traceback, and never more memory than the limit, which sits 1.5 GiB above the child's
own footprint, below the 3 GiB the lying headers claim. Also: an IDX FIFO is refused without blocking."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import fo_edge
from fo_edge.data import read_idx
from fo_edge.errors import DataError

HEADROOM = 3 << 29  # 1.5 GiB above the child's footprint after its imports


def _footprint() -> int:
    """Peak virtual memory (bytes) of a fresh interpreter that has imported what the child imports."""
    code = ("import fo_edge.data, fo_edge.recipe, fo_edge.runs, fo_edge.sweep, hypothesis; "
            "print([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1])")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to size the limit")
def test_loaders_survive_fuzzing_under_a_memory_limit(tmp_path):
    run = tmp_path / "valid"
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=200,
                     checkpoint_every=2, out=str(run))
    assert (run / "checkpoint.npz").exists()
    limit = _footprint() + HEADROOM

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    child = Path(__file__).with_name("fuzz_loaders.py")
    proc = subprocess.run([sys.executable, str(child), str(run), "40"], capture_output=True, text=True,
                          timeout=900, preexec_fn=cap, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("examples clean") == 6, proc.stdout


def test_an_idx_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_idx(fifo)
