"""Datasets: bundled MNIST hashes, shapes and class counts; clean errors for missing or corrupt files."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from fo_edge.data import FASHION_MNIST_DIR, MNIST_SHA256, load_dataset, parse_idx, read_idx
from fo_edge.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_shapes_counts_and_pixel_mean():
    data = load_dataset("mnist")
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.image_shape == (28, 28) and data.n_classes == 10
    assert np.bincount(data.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
    assert abs(float(data.x_train.mean()) - 0.1307) < 1e-4
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


def _copy_mnist(tmp_path: Path) -> Path:
    from importlib import resources

    src = Path(str(resources.files("fo_edge") / "datasets" / "mnist"))
    for name in MNIST_SHA256:
        shutil.copy(src / f"{name}.gz", tmp_path / f"{name}.gz")
    return tmp_path


def test_mnist_hash_mismatch_is_a_clear_error(tmp_path):
    directory = _copy_mnist(tmp_path)
    path = directory / "t10k-labels.idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="corrupt: SHA-256"):
        read_idx(path, MNIST_SHA256["t10k-labels.idx1-ubyte"])


def test_data_dir_reads_idx_and_reports_missing_files(tmp_path):
    directory = _copy_mnist(tmp_path)
    data = load_dataset(None, str(directory))
    assert data.x_test.shape == (10000, 784)
    (directory / "t10k-images.idx3-ubyte.gz").unlink()
    load_dataset.cache_clear()
    with pytest.raises(DataError, match="no t10k-images IDX file"):
        load_dataset(None, str(directory))


def test_truncated_and_garbage_idx_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"hello world", "x")
    header = bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big")
    with pytest.raises(DataError, match="truncated or corrupt"):
        parse_idx(header + bytes(50), "x")
    bad_gz = tmp_path / "train-images.idx3-ubyte.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(bad_gz)


def test_missing_directory_and_unknown_name():
    with pytest.raises(DataError, match="not found"):
        load_dataset(None, "/nonexistent/dir")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar-100")


def test_digits_split(digits):
    assert digits.x_train.shape[1] == 64 and len(digits.x_train) + len(digits.x_test) == 1797
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0


def test_fashion_mnist_reads_from_debian_package_or_says_how_to_install():
    if FASHION_MNIST_DIR.is_dir():
        data = load_dataset("fashion-mnist")
        assert data.x_train.shape == (60000, 784)
        assert np.bincount(data.y_test).tolist() == [1000] * 10
    else:
        with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
            load_dataset("fashion-mnist")


def test_decompression_bombs_are_refused_before_allocating(tmp_path, monkeypatch):
    import fo_edge.data as data

    monkeypatch.setattr(data, "_MAX_IDX_BYTES", 1000)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 200_000))  # no IDX header at all
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(bomb)
    header = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")  # claims 10 bytes, then 200 kB of zeros
    bomb.write_bytes(gzip.compress(header + b"\0" * 200_000))
    reads = []
    monkeypatch.setattr(data, "_CHUNK", 4)
    real_open = gzip.open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        read = handle.read
        handle.read = lambda n=-1: reads.append(n) or read(n)
        return handle

    monkeypatch.setattr(data.gzip, "open", counting_open)
    with pytest.raises(DataError, match="decompresses to more than the 10 data bytes"):
        data.read_idx(bomb)
    assert sum(reads) <= len(header) + 10 + 1  # read only as far as the header says, plus one byte
    big = bytes([0, 0, 8, 1]) + (1001).to_bytes(4, "big")  # a header beyond the limit: refused unread
    bomb.write_bytes(gzip.compress(big))
    with pytest.raises(DataError, match="more than the 2 GiB limit"):
        data.read_idx(bomb)
