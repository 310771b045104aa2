"""Two-dimensional toy densities, for pictures of what a flow learns.

Every shape is drawn from a fixed generative recipe, then scaled per axis by its exact population mean and standard
deviation (computed analytically below, not from the sample), so each coordinate has mean 0 and standard deviation 1
before noise. ``noise`` is the standard deviation of isotropic Gaussian jitter added after that scaling, so the final
standard deviation per axis is √(1 + noise²). Train, validation and test each draw from their own random stream
spawned from ``seed``: the same seed gives the same points, and changing ``n_train`` does not change the test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError
from .images import split_streams


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles: (cos t, sin t) and (1 − cos t, ½ − sin t), t ~ U(0, π), each with prob. ½.

    Mean (½, ¼). Var x = E[x²] − ¼ = ½·½ + ½·(1 + ½) − ¼ = ¾; var y = ½·½ + ½(¼ − 2/π + ½) − 1/16 = 9/16 − 1/π.
    """
    t = rng.uniform(0.0, math.pi, n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(t), np.cos(t))
    y = np.where(lower, 0.5 - np.sin(t), np.sin(t))
    return (np.stack([x, y], axis=1) - [0.5, 0.25]) / [math.sqrt(0.75), math.sqrt(9 / 16 - 1 / math.pi)]


def _sine(rng: np.random.Generator, n: int) -> np.ndarray:
    """x ~ U(−π, π), y = sin x. Mean 0; sd x = π/√3, sd y = 1/√2."""
    x = rng.uniform(-math.pi, math.pi, n)
    return np.stack([x / (math.pi / math.sqrt(3)), np.sin(x) * math.sqrt(2)], axis=1)


def _trimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Equal mixture of three Gaussians (sd 0.2) centred on the unit circle at 90°, 210°, 330°.

    Mean 0; per-axis variance ½·1² (three symmetric centres) + 0.2² = 0.54.
    """
    angle = math.pi / 2 + 2 * math.pi / 3 * rng.integers(0, 3, n)
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + 0.2 * rng.standard_normal((n, 2))) / math.sqrt(0.54)


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two concentric circles of radii 1 and 2, uniform along their length (probabilities 1/3, 2/3).

    Mean 0; per-axis variance ½·E[r²] = ½(1/3 + 8/3) = 3/2.
    """
    radius = np.where(rng.random(n) < 1 / 3, 1.0, 2.0)
    angle = rng.uniform(0.0, 2 * math.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) / math.sqrt(1.5)


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the 8 black squares of a 4×4 board on [−2, 2]² (cell (i, j) black when i + j is even).

    Both marginals are U(−2, 2): mean 0, sd 4/√12.
    """
    x = rng.uniform(-2.0, 2.0, n)
    column = np.floor(x + 2.0).astype(np.int64).clip(0, 3)
    row = 2 * rng.integers(0, 2, n) + column % 2
    y = -2.0 + row + rng.random(n)
    return np.stack([x, y], axis=1) / (4 / math.sqrt(12))


SHAPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "moons": _moons,
    "sine": _sine,
    "trimodal": _trimodal,
    "rings": _rings,
    "checkerboard": _checkerboard,
}


def load_toy2d(
    root: str | Path | None = None,
    *,
    shape: str = "moons",
    n_train: int = 20000,
    n_val: int = 2000,
    n_test: int = 5000,
    seed: int = 0,
    noise: float = 0.05,
) -> Dataset:
    """A 2-D toy density (``shape`` in moons, sine, trimodal, rings, checkerboard), float32, scale ≈ 1 per axis.

    ``noise``: sd of the Gaussian jitter added after standardization. ``root`` is unused.
    """
    if shape not in SHAPES:
        raise DatasetError(f"unknown toy2d shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    for label, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(value) < 2:
            raise DatasetError(f"data.{label}={value} is not allowed: each toy2d split needs at least 2 rows (a mean "
                               "and its standard error); use an integer ≥ 2")  # fmt: skip
    if not noise >= 0:
        raise DatasetError(f"toy2d noise must be ≥ 0, got {noise}")
    sample = SHAPES[shape]
    splits = []
    for n, rng in zip((n_train, n_val, n_test), split_streams(seed), strict=True):
        points = sample(rng, int(n)) + noise * rng.standard_normal((int(n), 2))
        splits.append(points.astype(np.float32))
    return Dataset(
        name="toy2d",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        info={"shape": shape, "noise": noise, "seed": seed, "sizes": [n_train, n_val, n_test]},
    )
