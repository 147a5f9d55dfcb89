"""The Numba kernels: the devices' bit-exact arithmetic (see each module).

Compiled kernels are cached on disk in a folder named after the kernels' sources (SHA-256 of every kernel module
here, not this one, and of Numba's version): Numba checks only a cached function's own file, so a function inlined from another
module would otherwise run stale machine code (wrong results, or a crash) after an edit or an upgrade. The
folder lies under ``$NUMBA_CACHE_DIR`` when that is set, else in this package's ``__pycache__``, else in
``~/.cache/fo-edge``; the first of them that is writable.

A cached kernel may reference Numba's parallel runtime (``allocate_sched``) even when it is not itself parallel;
loading it before Numba's threading layer has started aborts the process ("LLVM ERROR: Symbol not found"). So
every device store (rules' DeviceNet, ConvDeviceNet) calls :func:`threads_ready` when it is made, before any kernel
runs; import alone starts nothing, so a torch-only run keeps torch's own OpenMP pool as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from pathlib import Path

__all__ = ["cache_name", "threads_ready", "single_threaded_blas"]


def cache_name(folder: Path, numba_version: str) -> str:
    """``numba-<16 hex>``: the digest of ``folder``'s ``*.py`` files but ``__init__.py`` (names and bytes, in
    name order) and of the Numba version."""
    digest = hashlib.sha256(numba_version.encode())
    for path in sorted(p for p in folder.glob("*.py") if p.name != "__init__.py"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"numba-{digest.hexdigest()[:16]}"


def threads_ready() -> None:
    """Start Numba's threading layer (idempotent), so cached kernels that link its runtime load."""
    import numba

    numba.get_num_threads()  # launches the threading layer the first time


@contextlib.contextmanager
def single_threaded_blas():
    """Hold BLAS (numpy's and scipy's OpenBLAS; scipy's is what Numba's ``np.dot`` calls, loaded first so that it
    is limited too) to one thread for the block, and give it its threads back after. The kernels call BLAS inside
    their parallel loops: BLAS's own threads would busy-wait beside them, and OpenBLAS started inside an OpenMP
    loop warns "Detect OpenMP Loop and this application may hang"."""
    from threadpoolctl import threadpool_limits

    importlib.import_module("scipy.linalg.cython_blas")
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _use_source_keyed_cache() -> None:
    import numba

    here = Path(__file__).parent
    name = cache_name(here, numba.__version__)
    for base in (os.environ.get("NUMBA_CACHE_DIR"), here / "__pycache__", Path.home() / ".cache" / "fo-edge"):
        if not base:
            continue
        folder = Path(base) / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            continue
        numba.config.CACHE_DIR = str(folder)  # read when each kernel is decorated, after this
        return


_use_source_keyed_cache()
