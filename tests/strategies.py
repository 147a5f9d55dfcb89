"""Hypothesis strategies shared by the kernel tests (one place, as brevitas' hyp_helper)."""
from hypothesis import strategies as st

#: int64 mantissas well inside the range where products of two stay exact
mantissas = st.integers(min_value=-(2**40), max_value=2**40)
#: power-of-two divisors 2**0 .. 2**20
pow2 = st.integers(min_value=0, max_value=20).map(lambda k: 1 << k)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
