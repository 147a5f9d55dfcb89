"""How many threads the Numba kernels use, and BLAS beside them.

The kernels parallelise with Numba's threading layer (``prange``: the rows of an update; the samples of an
integer layer forward, a projection or a spiking presentation), so their BLAS calls run single-threaded: OpenBLAS's own threads
busy-wait after every call and would hold the cores the parallel loops need next. Results do not depend on
the thread count (every parallel loop writes disjoint outputs and reduces its tallies in a fixed order).

Numba's OpenMP threading layer shares the process's OpenMP runtime with torch (one ``libgomp.so.1``), so
setting Numba's threads sets torch's too; ``kernel_threads`` gives torch its thread count back on exit, so
that a torch run after a Numba run in the same process computes as it would alone.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numba

from ..kernels import single_threaded_blas

__all__ = ["available_threads", "kernel_threads"]


def available_threads() -> int:
    """The cores this process may run on (its CPU affinity), at most Numba's thread pool."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity
        cores = os.cpu_count() or 1
    return max(1, min(cores, numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def kernel_threads(threads: int | None = None):
    """Run the block with ``threads`` Numba threads (None: every available core) and single-threaded BLAS
    (numpy's and scipy's OpenBLAS, which Numba's ``np.dot`` calls); restores both after."""
    n = available_threads() if threads is None else max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))

    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with single_threaded_blas():
            yield n
    finally:
        numba.set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(torch_before)
