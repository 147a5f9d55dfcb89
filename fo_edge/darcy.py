"""Darcy flow, generated here (nothing downloads): -div(a grad u) = f on the unit square, u = 0 on the boundary.

Coefficients follow the FNO benchmark's recipe (Li et al. 2021): a Gaussian random field with covariance
(-Laplacian + tau^2)^(-alpha) (alpha 2, tau 3; sampled with the FFT on a periodic grid), thresholded to a
piecewise-constant a = 12 where the field is >= 0 and 3 elsewhere; f = 1.

Discretisation: cell-centred finite volumes on n x n cells (h = 1/n); the flux across an interior face uses
the harmonic mean of the two cells' a, a boundary face the cell's own a over the half-cell distance h/2
(Dirichlet u = 0). The 5-point system A u = f is assembled in scipy.sparse and solved by sparse LU
(``spsolve``); :func:`residual` gives |A u - f| / |f| for the tests.

``darcy_dataset`` caches what it generates in ``~/.cache/fo-edge/darcy`` (``FO_EDGE_CACHE`` overrides the
folder), written atomically, keyed by resolution, counts and seed.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .errors import DataError

__all__ = ["DARCY_DATASETS", "DARCY_SPLIT", "DarcyData", "coefficient_field", "darcy_matrix", "solve_darcy", "residual", "darcy_dataset",
           "relative_l2"]

A_HIGH, A_LOW = 12.0, 3.0

#: the Darcy sets ``--dataset`` names (resolution n of an n x n grid) and their split (train, test), seed 0
DARCY_DATASETS = {"darcy32": 32, "darcy64": 64}
DARCY_SPLIT = (1000, 200)


@dataclass(frozen=True)
class DarcyData:
    """a_*: (count, n, n) coefficients; u_*: (count, n, n) solutions, float32."""

    a_train: np.ndarray
    u_train: np.ndarray
    a_test: np.ndarray
    u_test: np.ndarray

    @property
    def size(self) -> int:
        return int(self.a_train.shape[-1])


def coefficient_field(n: int, rng: np.random.Generator, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """One piecewise-constant coefficient a: (n, n) in {3, 12} (module docstring)."""
    k = np.fft.fftfreq(n, d=1.0 / n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    spectrum = (4 * np.pi ** 2 * (kx ** 2 + ky ** 2) + tau ** 2) ** (-alpha / 2.0)
    spectrum[0, 0] = 0.0
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    field = np.real(np.fft.ifft2(noise * spectrum))
    return np.where(field >= 0, A_HIGH, A_LOW)


def darcy_matrix(a: np.ndarray) -> sp.csr_matrix:
    """The finite-volume matrix A (n^2 x n^2) for coefficient a (n, n); row i*n + j is cell (i, j)."""
    n = a.shape[0]
    h2 = (1.0 / n) ** 2
    index = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    diag = np.zeros((n, n))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = np.arange(n)[:, None] + di, np.arange(n)[None, :] + dj
        inside = (ni >= 0) & (ni < n) & (nj >= 0) & (nj < n)
        ni_c, nj_c = np.clip(ni, 0, n - 1), np.clip(nj, 0, n - 1)
        ni_c, nj_c = np.broadcast_to(ni_c, (n, n)), np.broadcast_to(nj_c, (n, n))
        neighbour = a[ni_c, nj_c]
        face = np.where(inside, 2 * a * neighbour / (a + neighbour), 2 * a)  # boundary: a over h/2
        diag += face / h2
        rows.append(index[inside])
        cols.append(index[ni_c, nj_c][inside])
        vals.append(-face[inside] / h2)
    rows.append(index.ravel())
    cols.append(index.ravel())
    vals.append(diag.ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))


def solve_darcy(a: np.ndarray, f: float = 1.0) -> np.ndarray:
    """u: (n, n) solving the discrete equation for coefficient a (n, n) and constant source f."""
    n = a.shape[0]
    return spla.spsolve(darcy_matrix(a).tocsc(), np.full(n * n, f)).reshape(n, n)


def residual(a: np.ndarray, u: np.ndarray, f: float = 1.0) -> float:
    """|A u - f| / |f| of a solution (the solver's tolerance check)."""
    rhs = np.full(a.size, f)
    return float(np.linalg.norm(darcy_matrix(a) @ u.ravel() - rhs) / np.linalg.norm(rhs))


def relative_l2(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over samples of |pred - true|_2 / |true|_2 (the paper's and FNO's error)."""
    diff = (pred - true).reshape(len(true), -1)
    return float(np.mean(np.linalg.norm(diff, axis=1) / np.linalg.norm(true.reshape(len(true), -1), axis=1)))


def _cache_dir() -> Path:
    return Path(os.environ.get("FO_EDGE_CACHE", Path.home() / ".cache" / "fo-edge")) / "darcy"


def darcy_dataset(n: int = 32, n_train: int = 1000, n_test: int = 200, seed: int = 0) -> DarcyData:
    """Generate (or read from the cache) a Darcy dataset at resolution n x n."""
    if not 4 <= n <= 512 or n_train < 1 or n_test < 1:
        raise DataError(f"Darcy needs 4 <= n <= 512 and positive counts, got n={n}, {n_train}/{n_test}")
    path = _cache_dir() / f"darcy-n{n}-train{n_train}-test{n_test}-seed{seed}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return DarcyData(*(data[k] for k in ("a_train", "u_train", "a_test", "u_test")))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated
    rng = np.random.default_rng(seed)
    a = np.stack([coefficient_field(n, rng) for _ in range(n_train + n_test)])
    u = np.stack([solve_darcy(field) for field in a])
    arrays = {"a_train": a[:n_train].astype(np.float32), "u_train": u[:n_train].astype(np.float32),
              "a_test": a[n_train:].astype(np.float32), "u_test": u[n_train:].astype(np.float32)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs regeneration next time
    return DarcyData(**arrays)
