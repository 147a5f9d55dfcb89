"""Datasets: the registry and the readers. Everything here is real data read from disk; nothing downloads.

- ``mnist``: the four IDX files shipped inside the package (``fo_edge/datasets/mnist``), SHA-256
  checked against SOURCE.md on load.
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
- ``digits``: scikit-learn's bundled 8x8 UCI digits (1,797 images), split 75/25 with a fixed seed.
- any directory of IDX files (``--data-dir``), named like MNIST's or Fashion-MNIST's files.

A :class:`Dataset` holds ``x_*: (N, D) float32`` in [0, 1] (``standardized()`` moves them to zero mean, unit
variance) and ``y_*: (N,) int64`` labels.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import regular_size

__all__ = ["Dataset", "DATASETS", "load_dataset", "read_idx", "MNIST_SHA256", "FASHION_MNIST_DIR"]

#: SHA-256 of the *uncompressed* bundled MNIST files (from ../shared/datasets/mnist/SOURCE.md).
MNIST_SHA256 = {
    "train-images.idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels.idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images.idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels.idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist", "fashion-mnist", "digits")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_IDX_BYTES = 2**31  # refuse to allocate more than 2 GiB for one file


@dataclass(frozen=True)
class Dataset:
    """A classification dataset, flattened.

    x_train: (N_train, D) float32 in [0, 1]; y_train: (N_train,) int64 in [0, n_classes).
    x_test, y_test: likewise for the test split. ``image_shape`` is the per-sample shape before flattening.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...]
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def standardized(self) -> "Dataset":
        """x' = (x - mean) / std for both splits, with the scalar mean and std of the whole training split (MNIST:
        0.1307 / 0.3081, the torchvision constants the FOTON reference uses); ``name`` gains no suffix. The
        pixels then leave [0, 1]: x' lies in [-mean/std, (1 - mean)/std] (MNIST: [-0.42, 2.82])."""
        mean, std = self.statistics()
        return Dataset(self.name, ((self.x_train - mean) / std).astype(np.float32), self.y_train,
                       ((self.x_test - mean) / std).astype(np.float32), self.y_test, self.image_shape,
                       self.n_classes)

    def statistics(self) -> tuple[float, float]:
        """(mean, std) of every training pixel, float64, rounded to 4 decimals as the published constants are."""
        x = self.x_train.astype(np.float64)
        return round(float(x.mean()), 4), round(float(x.std()), 4)

    def limited(self, limit: int | None) -> "Dataset":
        """The first ``limit`` training samples (and at most ``limit`` test samples); all when None."""
        if limit is None:
            return self
        return Dataset(self.name, self.x_train[:limit], self.y_train[:limit],
                       self.x_test[:limit], self.y_test[:limit], self.image_shape, self.n_classes)


_CHUNK = 16 << 20


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (decompressed for .gz), read in 16 MiB chunks only as far as its IDX header says the
    data goes (plus one byte, to notice trailing data): memory follows what the file really holds, never what a
    header claims, and never more than the 2 GiB IDX limit, so a decompression bomb or a lying header is
    refused before it is inflated."""
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    size = regular_size(path, "dataset file", DataError)  # no FIFOs, devices or directories
    if not path.name.endswith(".gz") and size > _MAX_IDX_BYTES + 4096:
        raise DataError(f"{path} is larger than the {_MAX_IDX_BYTES >> 30} GiB IDX limit")
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as handle:
            head = handle.read(4)
            ndim = head[3] if len(head) == 4 else 0
            head += handle.read(4 * ndim)
            want = _claimed_bytes(head, str(path))
            data = bytearray(head)
            while len(data) < len(head) + want + 1:
                chunk = handle.read(min(_CHUNK, len(head) + want + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
        if len(data) > len(head) + want:
            verb = "decompresses to" if path.name.endswith(".gz") else "holds"
            raise DataError(f"{path} {verb} more than the {want} data bytes its IDX header claims (corrupt, or "
                            f"not this dataset)")
        return bytes(data)
    except FileNotFoundError:
        raise DataError(f"dataset file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read dataset file {path}: {exc}") from None


def _claimed_bytes(header: bytes, origin: str) -> int:
    """The data bytes an IDX header claims (checked: magic, dimensions, the 2 GiB limit)."""
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_DTYPES:
        raise DataError(f"{origin} is not an IDX file (bad magic number)")
    ndim = header[3]
    if ndim == 0 or len(header) < 4 + 4 * ndim:
        raise DataError(f"{origin}: truncated IDX header")
    dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims) * np.dtype(_IDX_DTYPES[header[2]]).itemsize
    if expected > _MAX_IDX_BYTES:
        raise DataError(f"{origin}: IDX header claims {expected} bytes, more than the 2 GiB limit")
    return expected


def parse_idx(data: bytes, origin: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (magic 0x0000 TT NN, NN big-endian uint32 dims, then the data) into an array."""
    expected = _claimed_bytes(data[:4 + 4 * data[3]] if len(data) >= 4 else data, origin)
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) - header != expected:
        raise DataError(f"{origin}: IDX header claims {expected} data bytes but the file holds "
                        f"{len(data) - header} (truncated or corrupt)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read one IDX or IDX-gz file; when ``sha256`` is given, check the uncompressed bytes against it."""
    path = Path(path)
    data = _read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DataError(f"{path} is corrupt: SHA-256 {digest[:16]}... does not match the expected "
                            f"{sha256[:16]}...; reinstall fo-edge to restore it")
    return parse_idx(data, str(path))


def _find(directory: Path, split: str, kind: str) -> Path:
    """The file for ``split`` (train|t10k) and ``kind`` (images|labels), in MNIST or Fashion-MNIST naming."""
    rank = 3 if kind == "images" else 1
    for stem in (f"{split}-{kind}.idx{rank}-ubyte", f"{split}-{kind}-idx{rank}-ubyte"):
        for suffix in (".gz", ""):
            candidate = directory / (stem + suffix)
            if candidate.is_file():
                return candidate
    raise DataError(f"no {split}-{kind} IDX file in {directory} (expected {split}-{kind}.idx{rank}-ubyte[.gz] "
                    f"or {split}-{kind}-idx{rank}-ubyte[.gz])")


def _from_idx_dir(name: str, directory: Path, hashes: dict[str, str] | None = None) -> Dataset:
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    arrays = {}
    for split in ("train", "t10k"):
        for kind in ("images", "labels"):
            path = _find(directory, split, kind)
            key = path.name.removesuffix(".gz")
            arrays[split, kind] = read_idx(path, hashes.get(key) if hashes else None)
    images_tr, labels_tr = arrays["train", "images"], arrays["train", "labels"]
    images_te, labels_te = arrays["t10k", "images"], arrays["t10k", "labels"]
    for split, images, labels in (("train", images_tr, labels_tr), ("t10k", images_te, labels_te)):
        if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{directory}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    if images_tr.shape[1:] != images_te.shape[1:]:
        raise DataError(f"{directory}: train images {images_tr.shape[1:]} and test images "
                        f"{images_te.shape[1:]} differ in shape")
    scale = 255.0 if images_tr.dtype == np.uint8 else max(float(np.abs(images_tr).max()), 1.0)
    n_classes = int(max(labels_tr.max(), labels_te.max())) + 1
    return Dataset(name,
                   (images_tr.reshape(len(images_tr), -1) / scale).astype(np.float32),
                   labels_tr.astype(np.int64),
                   (images_te.reshape(len(images_te), -1) / scale).astype(np.float32),
                   labels_te.astype(np.int64),
                   tuple(images_tr.shape[1:]), n_classes)


def _mnist() -> Dataset:
    directory = Path(str(resources.files("fo_edge") / "datasets" / "mnist"))
    return _from_idx_dir("mnist", directory, MNIST_SHA256)


def _fashion_mnist() -> Dataset:
    if not FASHION_MNIST_DIR.is_dir():
        raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; install it with "
                        f"apt-get install dataset-fashion-mnist")
    return _from_idx_dir("fashion-mnist", FASHION_MNIST_DIR)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    n_train = int(round(0.75 * len(x)))
    tr, te = order[:n_train], order[n_train:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], (8, 8), 10)


@lru_cache(maxsize=8)
def load_dataset(name: str | None = "mnist", data_dir: str | None = None) -> Dataset:
    """Load a dataset by registry name, or from ``data_dir`` (a directory of IDX files) when given."""
    if data_dir is not None:
        return _from_idx_dir(Path(data_dir).name or "data-dir", Path(data_dir))
    loaders = {"mnist": _mnist, "fashion-mnist": _fashion_mnist, "digits": _digits}
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or pass --data-dir")
    return loaders[name]()
