"""Reading files a user hands in, bounded before anything is read: regular files only (a symlink is followed to
what it names, which must itself be a regular file: no FIFOs, devices or directories), a size cap checked on
the file's metadata and again on the bytes read, and for ``.npz`` archives every member's uncompressed size,
dtype and shape taken from the zip and .npy headers before any array is allocated.
"""
from __future__ import annotations

import math
import os
import stat
import tokenize
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_bounded", "regular_size", "npz_members", "TEXT_FILE_BYTES"]

#: the cap for the TOML and JSON files fo-edge reads (device profiles, recipes, sweep specs, run.json)
TEXT_FILE_BYTES = 64 << 20


def _regular(path: Path, what: str, error) -> int:
    """The size of ``path`` if it is a regular file (symlinks followed), else ``error``."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file")
    return info.st_size


def regular_size(path: str | Path, what: str, error) -> int:
    """The size in bytes of ``path`` if it is a regular file (symlinks followed); else ``error``, one line."""
    return _regular(Path(path), what, error)


def read_bounded(path: str | Path, cap: int, what: str, error) -> bytes:
    """The bytes of ``path`` (at most ``cap``); ``error`` (an exception class) for anything else, one line."""
    path = Path(path)
    if _regular(path, what, error) > cap:
        raise error(f"{what} {path} is larger than {cap >> 10} KiB; not a {what}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > cap:  # the file grew after the check
        raise error(f"{what} {path} is larger than {cap >> 10} KiB; not a {what}")
    return data


def npz_members(path: str | Path, cap: int, error) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and shape of every array in an .npz, from its headers only; ``error`` when the archive is not a
    regular file, not a zip of .npy members, holds object arrays, or would unpack to more than ``cap`` bytes."""
    path = Path(path)
    if _regular(path, "archive", error) > cap:
        raise error(f"{path} is larger than {cap >> 20} MiB; refusing to read it")
    members, total = {}, 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise error(f"{path} holds {info.filename!r}, not an .npy array; not an fo-edge archive")
                total += info.file_size
                if total > cap:
                    raise error(f"{path} unpacks to more than {cap >> 20} MiB; refusing to read it")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                                             else np.lib.format.read_array_header_2_0(member))
                if dtype.hasobject:
                    raise error(f"{path} contains pickled objects; fo-edge never loads pickles")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > info.file_size:
                    raise error(f"{path}: {info.filename} claims {nbytes} bytes of data but holds {info.file_size}")
                members[info.filename[:-4]] = (dtype, tuple(shape))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        # numpy parses an .npy header with Python's tokenizer: a mangled one can raise TokenError or SyntaxError
        raise error(f"{path} is truncated or not an npz archive ({' '.join(str(exc).split())})") from None
    return members
