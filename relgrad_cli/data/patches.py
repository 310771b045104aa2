"""8×8 natural-image patches in the BSDS300 layout of MAF, cut from the photographs scikit-learn ships (offline).

BSDS300 in MAF (Papamakarios et al. 2017) holds 8×8 patches of grey-scale photographs, dequantized and scaled to
[0, 1], with each patch's mean subtracted and the bottom-right pixel dropped (63 values: the dropped one is minus
the sum of the others). This loader builds the same kind of data from scikit-learn's two sample photographs
(``china.jpg``, ``flower.jpg``, 427×640 RGB), so the natural-image case can be trained and compared without the
MAF archive:

    grey k = round(0.299 R + 0.587 G + 0.114 B) ∈ {0..255}      (ITU-R BT.601 luma)
    u = (k + ε) / 256,  ε ~ U(0, 1)                              (dequantization, per pixel of every patch)
    x = (u − mean(u over the patch))[:63]                        (row-major, bottom-right pixel dropped)

Splits cannot share pixels: every photograph is cut into horizontal bands, rows [0, 70%) for training,
[70%, 85%) for validation, [85%, 100%) for test, and a patch lies wholly inside one band. Patch positions are drawn
uniformly without replacement within each band from a fixed seed (the same for every run); ``seed`` sets the
dequantization noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError
from .images import split_streams

PATCH = 8
BANDS = (0.0, 0.70, 0.85, 1.0)
POSITION_SEED = 300


def _grey_photographs() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    try:
        images = load_sample_images().images
    except ImportError as err:  # scikit-learn reads the JPEG files through Pillow
        raise DatasetError(f"the patches data set reads scikit-learn's sample photographs with Pillow ({err}); "
                           "install it with `pip install pillow`") from None  # fmt: skip
    return [np.rint(img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.int64)
            for img in images]  # fmt: skip


def _positions(shapes: list[tuple[int, int]], band: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct patch corners (rows of image, row, column), drawn uniformly without replacement over the band's
    valid corners of all images."""
    corners = []
    for i, (h, w) in enumerate(shapes):
        top, bottom = int(BANDS[band] * h), int(BANDS[band + 1] * h)
        rows, cols = np.meshgrid(np.arange(top, bottom - PATCH + 1), np.arange(w - PATCH + 1), indexing="ij")
        corners.append(np.stack([np.full(rows.size, i), rows.ravel(), cols.ravel()], axis=1))
    pool = np.concatenate(corners)
    if n > len(pool):
        raise DatasetError(f"the patches data set has {len(pool)} distinct patch positions in this split; ask for "
                           f"at most that many rows")  # fmt: skip
    return pool[rng.choice(len(pool), size=n, replace=False)]


def load_patches(
    root: str | Path | None = None, *, n_train: int = 30000, n_val: int = 5000, n_test: int = 5000, seed: int = 0
) -> Dataset:
    """Natural-image 8×8 patches (63-d, MAF's BSDS300 layout) from scikit-learn's photographs; see the module
    docstring. ``root`` is unused (the photographs ship with scikit-learn)."""
    for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise DatasetError(f"data.{key}={value!r} is not allowed: use an integer ≥ 2")
    greys = _grey_photographs()
    pos_rng = np.random.default_rng(POSITION_SEED)
    streams = split_streams(seed)
    splits = []
    for band, (n, rng) in enumerate(zip((n_train, n_val, n_test), streams, strict=True)):
        corners = _positions([g.shape for g in greys], band, n, pos_rng)
        patches = np.stack([greys[i][r : r + PATCH, c : c + PATCH].reshape(-1) for i, r, c in corners])
        u = (patches + rng.random(patches.shape)) / 256.0
        x = u - u.mean(axis=1, keepdims=True)
        splits.append(x[:, :-1].astype(np.float32))
    train, val, test = splits
    return Dataset(
        name="patches",
        train=train,
        val=val,
        test=test,
        info={
            "source": "sklearn.datasets.load_sample_images (china.jpg, flower.jpg), BT.601 grey",
            "layout": "MAF BSDS300: 8x8 patch, (k+U(0,1))/256, patch mean removed, bottom-right pixel dropped",
            "split": "horizontal bands 0-70% / 70-85% / 85-100% of each photograph; positions from seed "
            f"{POSITION_SEED}",
            "dequantization_seed": seed,
        },
    )
