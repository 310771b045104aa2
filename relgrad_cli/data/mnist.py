"""MNIST from its four IDX files, with the MAF split and the dequantize-then-logit transform.

Files (each plain or gzipped, ``.gz``), looked for in ``<root>/mnist/``, then ``<root>/``, then torchvision's
``<root>/MNIST/raw/``:

    train-images-idx3-ubyte   train-labels-idx1-ubyte   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

IDX layout (big-endian): a 4-byte magic number (2051 = 0x00000803 for unsigned-byte 3-D image arrays, 2049 =
0x00000801 for 1-D label arrays), one 4-byte size per dimension, then the bytes in row-major order.

Split (MAF): the last ``n_val`` (10 000) training images are validation, the first 50 000 are train, and the 10 000
t10k images are test. Pixels k ∈ {0..255} become x = logit(α + (1 − 2α)(k + U(0,1))/256); train, validation and
test each get their own random stream spawned from ``seed`` (see :mod:`relgrad_cli.data.images`).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, as_root
from .images import dequantize_logit, split_streams

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FETCH_HINT = "`relgrad-data download mnist` fetches them (with checksums)"


def mnist_search_dirs(root: str | Path) -> list[Path]:
    """The folders searched for the IDX files, in order."""
    root = as_root(root)
    return [root / "mnist", root, root / "MNIST" / "raw"]


def find_mnist_files(root: str | Path) -> tuple[dict[str, Path | None], list[Path]]:
    """For each of the four files, the first existing candidate (plain before ``.gz`` within a folder), or None;
    and the list of every path that was looked at."""
    found: dict[str, Path | None] = {}
    searched: list[Path] = []
    for key, name in MNIST_FILES.items():
        found[key] = None
        for folder in mnist_search_dirs(root):
            for candidate in (folder / name, folder / f"{name}.gz"):
                searched.append(candidate)
                if candidate.is_file():
                    found[key] = candidate
                    break
            if found[key] is not None:
                break
    return found, searched


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream is an EOFError
        raise DatasetError(
            f"{path} is not a complete gzip file ({exc}); the download was probably interrupted — "
            f"delete it and run `relgrad-data download mnist`"
        ) from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes (plain or ``.gz``), checking its magic number and length.

    ``magic`` is 2051 for an image file (returns N×rows×cols uint8) or 2049 for a label file (returns N uint8).
    """
    path = Path(path)
    raw = _read_bytes(path)
    ndim = {IMAGE_MAGIC: 3, LABEL_MAGIC: 1}[magic]
    kind = {IMAGE_MAGIC: "image", LABEL_MAGIC: "label"}[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is {len(raw)} bytes long, shorter than an IDX {kind} header ({header} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        what = {IMAGE_MAGIC: " (an image file)", LABEL_MAGIC: " (a label file)"}.get(found, "")
        raise DatasetError(
            f"{path} has magic number {found}{what}, expected {magic} for an IDX {kind} file; "
            f"the file is corrupt or misnamed — delete it and run `relgrad-data download mnist`"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path} holds {len(raw) - header} data bytes after its header, but the header's dimensions "
            f"{'×'.join(map(str, dims))} need {expected}; the file is truncated or corrupt — delete it and run "
            f"`relgrad-data download mnist`"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path) -> np.ndarray:
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path} holds {images.shape[1]}×{images.shape[2]} images; MNIST's are 28×28")
    if len(labels) != len(images):
        raise DatasetError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{labels_path} holds label {labels.max()}; MNIST labels are 0..9")
    return images.reshape(len(images), 28 * 28)


def load_mnist(root: str | Path, *, seed: int = 0, logit_alpha: float = 1e-6, n_val: int = 10000) -> Dataset:
    """MNIST in logit space: 50 000 train / 10 000 validation (the last n_val training images) / 10 000 test.

    Rows are flattened 28×28 images (784 values, float32). ``seed`` drives the dequantization noise (independent
    streams for the three splits); ``logit_alpha`` is the α of x = logit(α + (1 − 2α)u).
    """
    found, searched = find_mnist_files(root)
    missing = [MNIST_FILES[key] for key, path in found.items() if path is None]
    if missing:
        looked = ", ".join(str(p) for p in searched if p.name.removesuffix(".gz") in missing)
        raise DatasetError(
            f"MNIST file(s) {', '.join(missing)} not found (looked for {looked}); {FETCH_HINT}: "
            f"relgrad-data download mnist --root {as_root(root)}"
        )
    paths = {key: path for key, path in found.items() if path is not None}
    train_all = _read_pair(paths["train_images"], paths["train_labels"])
    test = _read_pair(paths["test_images"], paths["test_labels"])
    if not 0 < n_val < len(train_all):
        raise DatasetError(f"n_val={n_val} must lie between 1 and {len(train_all) - 1} (training images available)")
    n_train = len(train_all) - n_val
    rng_train, rng_val, rng_test = split_streams(seed)
    return Dataset(
        name="mnist",
        train=dequantize_logit(train_all[:n_train], 256, logit_alpha, rng_train),
        val=dequantize_logit(train_all[n_train:], 256, logit_alpha, rng_val),
        test=dequantize_logit(test, 256, logit_alpha, rng_test),
        image_shape=(28, 28),
        logit_alpha=logit_alpha,
        levels=256,
        info={
            "files": {key: str(path) for key, path in paths.items()},
            "split": f"train = first {n_train} of {paths['train_images'].name}, val = last {n_val}, "
            f"test = all {len(test)} of {paths['test_images'].name}",
            "dequantization_seed": seed,
            "transform": f"x = logit({logit_alpha:g} + (1 - 2*{logit_alpha:g}) * (k + U(0,1)) / 256)",
        },
    )
