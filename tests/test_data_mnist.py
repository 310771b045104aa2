"""The MNIST loader on small files written in the real IDX format (big-endian headers), plain and gzipped."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.data.images import to_unit_pixels
from relgrad_cli.data.mnist import load_mnist, read_idx

N_TRAIN, N_TEST, N_VAL = 60, 20, 10
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding: big-endian int32 magic (0x08 = unsigned byte, then the number of dims), sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    return struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload, compresslevel=1))
    else:
        path.write_bytes(payload)
    return path


def make_mnist(folder: Path, gz: bool = True, seed: int = 0, size: int = 28) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(N_TRAIN, size, size)),
        "train_labels": rng.integers(0, 10, size=N_TRAIN),
        "test_images": rng.integers(0, 256, size=(N_TEST, size, size)),
        "test_labels": rng.integers(0, 10, size=N_TEST),
    }
    arrays["train_images"][:, 0, 0] = 255  # the extremes must survive the transform
    arrays["test_images"][:, 0, 1] = 0
    for key, array in arrays.items():
        write(folder / NAMES[key], idx_bytes(array), gz)
    return arrays


def pixels_of(x: np.ndarray, alpha: float = 1e-6) -> np.ndarray:
    return np.floor(to_unit_pixels(x.astype(np.float64), alpha) * 256).astype(int)


def test_header_constants_are_the_published_magic_numbers():
    assert idx_bytes(np.zeros((1, 28, 28)))[:4] == bytes([0, 0, 8, 3]) == (2051).to_bytes(4, "big")
    assert idx_bytes(np.zeros(3))[:4] == bytes([0, 0, 8, 1]) == (2049).to_bytes(4, "big")


@pytest.mark.parametrize("layout", ["mnist", ".", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_every_layout(tmp_path, layout, gz):
    arrays = make_mnist(tmp_path / layout, gz=gz)
    data = load_mnist(tmp_path, n_val=N_VAL)
    assert data.train.shape == (N_TRAIN - N_VAL, 784) and data.val.shape == (N_VAL, 784)
    assert data.test.shape == (N_TEST, 784)
    assert data.train.dtype == np.float32 and np.all(np.isfinite(data.train))
    assert data.image_shape == (28, 28) and data.levels == 256 and data.logit_alpha == 1e-6
    flat = arrays["train_images"].reshape(N_TRAIN, 784)
    np.testing.assert_array_equal(pixels_of(data.train), flat[: N_TRAIN - N_VAL])  # validation = the LAST n_val
    np.testing.assert_array_equal(pixels_of(data.val), flat[N_TRAIN - N_VAL :])
    np.testing.assert_array_equal(pixels_of(data.test), arrays["test_images"].reshape(N_TEST, 784))


def test_seeded_dequantization_with_independent_split_streams(tmp_path):
    make_mnist(tmp_path / "mnist")
    a = load_dataset("mnist", tmp_path, seed=3, n_val=N_VAL)
    b = load_mnist(tmp_path, seed=3, n_val=N_VAL)
    c = load_mnist(tmp_path, seed=4, n_val=N_VAL)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
        assert not np.array_equal(getattr(a, split), getattr(c, split))
    # the test stream does not depend on how train/val are cut
    np.testing.assert_array_equal(load_mnist(tmp_path, seed=3, n_val=20).test, a.test)
    # a custom alpha is used and recorded
    d = load_mnist(tmp_path, seed=3, n_val=N_VAL, logit_alpha=0.05)
    assert d.logit_alpha == 0.05 and np.abs(d.train).max() < np.log(0.95 / 0.05) + 1e-6


def test_missing_file_lists_the_paths_searched(tmp_path):
    make_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_mnist(tmp_path, n_val=N_VAL)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and "relgrad-data download mnist" in message
    for folder in (tmp_path / "mnist", tmp_path, tmp_path / "MNIST" / "raw"):
        assert str(folder / "t10k-labels-idx1-ubyte.gz") in message


def test_bad_magic_number_names_the_file(tmp_path):
    make_mnist(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros((N_TRAIN, 28, 28)), magic=2049)))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz has magic number 2049.*expected 2051"):
        load_mnist(tmp_path, n_val=N_VAL)


def test_little_endian_header_is_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(struct.pack("<ii", 2049, 3) + bytes(3))
    with pytest.raises(DatasetError, match="magic number"):
        read_idx(path, 2049)


def test_truncated_gzip_names_the_file(tmp_path):
    make_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz is not a complete gzip file"):
        load_mnist(tmp_path, n_val=N_VAL)


def test_not_gzip_at_all(tmp_path):
    make_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz is not a complete gzip file"):
        load_mnist(tmp_path, n_val=N_VAL)


def test_plain_file_shorter_than_its_header_says(tmp_path):
    make_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"holds \d+ data bytes.*60×28×28 need 47040"):
        load_mnist(tmp_path, n_val=N_VAL)


def test_file_shorter_than_a_header(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DatasetError, match="shorter than an IDX image header"):
        read_idx(tmp_path / "x", 2051)


def test_wrong_image_size_and_label_count(tmp_path):
    make_mnist(tmp_path / "mnist", size=27)
    with pytest.raises(DatasetError, match="27×27 images; MNIST's are 28×28"):
        load_mnist(tmp_path, n_val=N_VAL)
    make_mnist(tmp_path / "mnist")
    write(tmp_path / "mnist" / NAMES["test_labels"], idx_bytes(np.zeros(N_TEST - 1)), gz=True)
    with pytest.raises(DatasetError, match=f"holds {N_TEST} images but .* holds {N_TEST - 1} labels"):
        load_mnist(tmp_path, n_val=N_VAL)


@pytest.mark.parametrize("n_val", [0, N_TRAIN])
def test_n_val_out_of_range(tmp_path, n_val):
    make_mnist(tmp_path / "mnist")
    with pytest.raises(DatasetError, match="n_val"):
        load_mnist(tmp_path, n_val=n_val)
