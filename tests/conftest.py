"""Shared fixtures: small real data (scikit-learn digits) and a tiny orthogonal net."""
import numpy as np
import pytest

from fo_edge.kernels import threads_ready
from fo_edge.models import init_weights

# tests call kernels directly too: start Numba's threading layer before any cached kernel loads (fo_edge.kernels)
threads_ready()


@pytest.fixture(scope="session")
def digits():
    from fo_edge.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def small_batch():
    """weights (64-32-16-10, float64, orthogonal), x (8, 64) real digits, one-hot t (8, 10)."""
    from fo_edge.data import load_dataset

    data = load_dataset("digits")
    weights = [w.astype(np.float64) for w in init_weights((64, 32, 16, 10), seed=3)]
    x = data.x_train[:8].astype(np.float64)
    t = np.eye(10)[data.y_train[:8]]
    return weights, x, t

from hypothesis import settings  # noqa: E402

# Numba compiles on first call; a deadline would flag that, not the property under test.
settings.register_profile("fo-edge", deadline=None, max_examples=60)
settings.load_profile("fo-edge")
