"""Exact int8 x int8 -> int32 matrix products through the CPU's integer GEMM, callable from compiled kernels.

    out[m, n] = sum_k a[m, k] b[k, n]        a: (M, K) int8, b: (K, N) int8 (any strides), out: (M, N) int32

The integer kernels form their layer sums and update products with BLAS in float32, exact while every partial sum
is an integer below 2**24 (``linear.FLOAT32_EXACT``). An int8 device's operands are int8, and the CPU's int8 GEMM
(``torch._int_mm``: oneDNN, VNNI's ``vpdpbusd`` where the CPU has it) forms the same sums in int32, exact for
K < 2**31 / 128**2 = 131072 terms, at a quarter of float32's operand traffic: measured 3-4x faster than float32
BLAS on 2 cores of an AVX-512 VNNI EPYC for (128, 784) x (784, 256). Neither numpy nor Numba offers an integer
GEMM, so the compiled kernels call torch through ``numba.objmode`` (about 1 us a call), outside their parallel
loops: torch runs the product on its own threads.

torch 2.13.0's CPU ``_int_mm`` returns wrong sums for K = 1 (a single term: every shape (M, 1, N > 1) tried),
so products with fewer than ``MIN_TERMS`` terms stay on the float32 path (``tests/test_int8_gemm.py`` holds the
product against int64 sums over shapes, strides and the full int8 range).
"""
import torch
from numba import njit, objmode

__all__ = ["INT8_LO", "INT8_HI", "INT8_BATCH", "MIN_TERMS", "fits_int8", "int8_matmul_"]

INT8_LO, INT8_HI = -128, 127
#: products with fewer inner terms than this stay on float32 BLAS (torch's K = 1 case is wrong; a few terms gain
#: nothing from a GEMM call)
MIN_TERMS = 8
#: from this many samples on, an int8 device's forward sums and update products go through the int8 GEMM.
#: Measured (``python tools/profile_int8_step.py --batch B --repeats 400``, mcu-int8 FTP 784-256-256-10, this
#: constant set to 8, 16 and 32 in turn, two rounds each, 2 vCPUs AMD EPYC): at batch 8 the few-sample paths take
#: 0.52-0.55 ms a step against 0.60 / 0.95 ms through the GEMM; at batch 16 the GEMM takes 0.52-0.56 ms (one
#: round of four 1.15) against 0.68 ms on float32 BLAS
INT8_BATCH = 16


@njit(cache=True, inline="always")
def fits_int8(lo, hi):
    """Whether a format's mantissa bounds [lo, hi] lie within int8's [-128, 127]."""
    return lo >= INT8_LO and hi <= INT8_HI


def _int_mm_into(a, b, out):
    """out = a @ b in int32 through torch (the three arrays share memory with the tensors)."""
    torch._int_mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))


@njit(cache=True)
def int8_matmul_(a, b, out):
    """out = a @ b exactly: a (M, K) int8, b (K, N) int8, out (M, N) int32 preallocated, K >= MIN_TERMS."""
    with objmode():
        _int_mm_into(a, b, out)
