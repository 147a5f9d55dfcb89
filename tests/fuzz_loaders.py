"""Hypothesis fuzzing of every loader of user files, run by tests/test_fuzz_loaders.py in a child process whose
address space is capped (RLIMIT_AS), so a loader that allocated what a lying header claims dies of MemoryError
instead of passing. Each loader must return a value or raise one FoEdgeError whose message is one line.

    python tests/fuzz_loaders.py VALID_RUN_DIR EXAMPLES
"""
import gzip
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fo_edge.data import read_idx
from fo_edge.errors import FoEdgeError
from fo_edge.recipe import load_recipe
from fo_edge.runs import load_checkpoint, load_weights, read_run
from fo_edge.sweep import expand, load_spec

RUN = Path(sys.argv[1])
EXAMPLES = int(sys.argv[2])
WORK = Path(tempfile.mkdtemp(prefix="fuzz-"))
RECIPE = (Path(__file__).resolve().parents[1] / "recipes" / "ftp-mnist-mlp.toml").read_bytes()
SPEC = b'[sweep]\nrule = ["ftp", "bp"]\nseed = { start = 0, stop = 2 }\ndevice = "mcu-int8"\nmodel = "64-16-10"\n'
IDX = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 3, 3)) + bytes(range(18))


def clean(call) -> None:
    """Run ``call``; a value or a one-line FoEdgeError pass, anything else propagates (and fails the child)."""
    try:
        call()
    except FoEdgeError as exc:
        assert "\n" not in str(exc), repr(str(exc))


@st.composite
def mutated(draw, base: bytes):
    """``base`` with a few byte edits, a truncation, an insertion, or big integers written over it."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "big"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        else:
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"9999", b"\xff" * 4]))
    return bytes(data)


def lying_npz(name: str) -> bytes:
    """An .npz whose member's .npy header claims a 3 GiB array (the bytes are a few hundred)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (3 << 27,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}.npy", header.getvalue() + b"\0" * 64)
    return buffer.getvalue()


def run_copy(tag: str, name: str, data: bytes) -> Path:
    target = WORK / tag
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(RUN, target)
    (target / name).write_bytes(data)
    return target


fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


@fuzz
@given(st.one_of(mutated((RUN / "run.json").read_bytes()), JSON.map(lambda v: json.dumps(v).encode())))
def fuzz_run_json(data):
    clean(lambda: read_run(run_copy("run", "run.json", data)))


@fuzz
@given(st.one_of(mutated((RUN / "weights.npz").read_bytes()), st.just(lying_npz("W0"))))
def fuzz_weights(data):
    dims = json.loads((RUN / "run.json").read_text())["config"]["dims"]
    clean(lambda: load_weights(run_copy("w", "weights.npz", data), dims))


@fuzz
@given(st.one_of(mutated((RUN / "checkpoint.npz").read_bytes()), st.just(lying_npz("w"))))
def fuzz_checkpoint(data):
    clean(lambda: load_checkpoint(run_copy("c", "checkpoint.npz", data)))


@fuzz
@given(mutated(RECIPE))
def fuzz_recipe(data):
    path = WORK / "r.toml"
    path.write_bytes(data)
    clean(lambda: load_recipe(str(path)))


@fuzz
@given(mutated(SPEC))
def fuzz_sweep_spec(data):
    path = WORK / "s.toml"
    path.write_bytes(data)
    clean(lambda: expand(load_spec(path)))


@fuzz
@given(mutated(IDX), st.booleans())
def fuzz_idx(data, compressed):
    path = WORK / ("x-idx3-ubyte.gz" if compressed else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if compressed else data)
    clean(lambda: read_idx(path))


if __name__ == "__main__":
    for fuzzer in (fuzz_run_json, fuzz_weights, fuzz_checkpoint, fuzz_recipe, fuzz_sweep_spec, fuzz_idx):
        fuzzer()
        print(f"{fuzzer.__name__}: {EXAMPLES} examples clean", flush=True)
    shutil.rmtree(WORK, ignore_errors=True)
