"""Files a user hands in are bounded before they are read (fo_edge.files): special files and symlinks to them,
size caps, and .npz members whose headers claim more than they hold, each one clean error; fuzzed archives
give a clean error or their members, never anything else."""
import io
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fo_edge
from fo_edge.device import load_device
from fo_edge.errors import DeviceProfileError, RunError
from fo_edge.files import npz_members, read_bounded
from fo_edge.runs import load_checkpoint, read_run


def test_special_files_and_symlinks_to_them_are_refused(tmp_path):
    fifo = tmp_path / "run.json"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(RunError, match="not a regular file"):
        read_run(tmp_path)
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "run.json").symlink_to("/dev/zero")  # reading it would exhaust memory
    with pytest.raises(RunError, match="not a regular file"):
        read_run(zero)
    link = tmp_path / "device.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(DeviceProfileError, match="not a regular file"):
        load_device(str(link))


def test_size_caps_are_checked_before_reading(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 5000)
    with pytest.raises(RunError, match="larger than 4 KiB"):
        read_bounded(big, 4096, "file", RunError)
    assert read_bounded(big, 8192, "file", RunError) == b"#" * 5000


def _forged_npz(path, shape, data=b""):
    """An .npz whose member's .npy header claims ``shape`` float64 but holds only ``data``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w.npy", header.getvalue() + data)  # the header writer emits the magic too


def test_an_npz_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    run = tmp_path / "run"
    fo_edge.simulate(rule="ftp", device="mcu-int8", dataset="digits", model="64-16-10", limit=64,
                     checkpoint_every=1, out=str(run))
    _forged_npz(run / "checkpoint.npz", (400_000_000,))  # 3.2 GB claimed, a few bytes held
    with pytest.raises(RunError, match="claims 3200000000 bytes of data but holds"):
        load_checkpoint(run)
    honest = tmp_path / "honest.npz"
    np.savez_compressed(honest, w=np.zeros(4096))  # 32 KiB unpacked, a few hundred bytes packed
    with pytest.raises(RunError, match="unpacks to more than"):
        npz_members(honest, 16 << 10, RunError)
    assert npz_members(honest, 1 << 20, RunError) == {"w": (np.dtype("<f8"), (4096,))}


def test_object_arrays_are_refused_from_the_header(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunError, match="pickled objects"):
        npz_members(path, 1 << 20, RunError)


@pytest.mark.parametrize("mangle", [b"{'descr': '<f8'", b"{'descr': ('<f8'"])
def test_a_header_numpy_cannot_tokenise_is_a_clean_error(tmp_path, mangle):
    """numpy reads an .npy header with Python's tokenizer: an unterminated string or bracket there raises
    tokenize.TokenError or SyntaxError, which must come out as the loader's one-line error (found by the
    loaders' fuzzing)."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    member = buffer.getvalue()
    start = member.index(b"{")
    broken = member[:start] + mangle + b" " * (member.index(b"}") + 1 - start - len(mangle)) + member[
        member.index(b"}") + 1:]
    path = tmp_path / "broken.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", broken)
    with pytest.raises(RunError, match="truncated or not an npz archive") as caught:
        npz_members(path, 1 << 20, RunError)
    assert "\n" not in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzzed_archives_are_a_clean_error_or_their_members(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "x.npz"
    path.write_bytes(blob)
    try:
        members = npz_members(path, 1 << 20, RunError)
    except RunError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(members, dict)
