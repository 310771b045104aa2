"""Image data: dequantization, the logit transform, pixel-space densities, and scikit-learn's 8×8 digits.

Convention (MAF, Papamakarios et al. 2017). Raw pixels k ∈ {0, …, L−1} (L = ``levels``) are dequantized and mapped
to an unbounded space:

    u = (k + ε) / L,                ε ~ U(0, 1), so u ∈ [0, 1)
    p = α + (1 − 2α)·u              (α = ``alpha``, 1e-6 by default; keeps p away from 0 and 1)
    x = logit(p) = log p − log(1 − p)

The flow models x, and its log-likelihood is reported in that logit space (nats), as MAF and the relative-gradient
paper do. Bits per dimension are reported in pixel space, for v = L·u ∈ [0, L)^D (a density on the dequantized
pixel values). With p = sigmoid(x), the map v → x is coordinate-wise, so

    dx/dv = (1 − 2α)/L · 1/(p(1 − p))
    log p_v(v) = log p_x(x) + Σ_i log(dx_i/dv_i)
               = log p_x(x) + Σ_i [log(1 − 2α) − log L + softplus(x_i) + softplus(−x_i)]

using −log p = softplus(−x) and −log(1 − p) = softplus(x), which is exact and stable for any x.
bits/dim = −log p_v(v) / (D·ln 2), averaged over rows.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .base import Dataset

#: rows dequantized per block (keeps the float64 temporaries of a 60k×784 array small; the random stream is the
#: same as one draw of the whole array, since Generator.random consumes one 64-bit word per double in order).
_BLOCK_ROWS = 8192

#: the digits split: a permutation of the 1797 images from this fixed seed, independent of the dequantization seed,
#: so every run evaluates on the same 270 test images.
DIGITS_SPLIT_SEED = 1797
DIGITS_SPLIT = (1257, 270, 270)


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")  # never import torch here: numpy callers should not pay for it
    return torch is not None and isinstance(x, torch.Tensor)


def dequantize_logit(
    pixels: np.ndarray,
    levels: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    dtype: type | np.dtype = np.float32,
) -> np.ndarray:
    """Dequantize integer pixels and map them to logit space, row by row.

    u = (pixels + ε)/levels with ε ~ U(0, 1) drawn from ``rng`` (one value per pixel, in row-major order);
    x = logit(α + (1 − 2α)·u). The arithmetic is float64; the result is cast to ``dtype`` (float32 by default).
    ``pixels`` is N×D (or any shape whose first axis is rows) with integer values in 0..levels−1.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim < 1:
        raise ValueError("pixels must have a leading axis of rows")
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > levels - 1):
        raise ValueError(f"pixel values must lie in 0..{levels - 1}; found {pixels.min()}..{pixels.max()}")
    out = np.empty(pixels.shape, dtype=dtype)
    for start in range(0, len(pixels), _BLOCK_ROWS):
        block = pixels[start : start + _BLOCK_ROWS].astype(np.float64)
        u = (block + rng.random(block.shape)) / levels
        p = alpha + (1.0 - 2.0 * alpha) * u
        out[start : start + _BLOCK_ROWS] = np.log(p) - np.log1p(-p)
    return out


def _logit_jacobian(x: Any, alpha: float, levels: int) -> Any:
    """Σ_i log(dx_i/dv_i) per row: Σ_i [log(1 − 2α) − log L + softplus(x_i) + softplus(−x_i)]."""
    const = math.log1p(-2.0 * alpha) - math.log(levels)
    if _is_torch(x):
        import torch.nn.functional as F

        terms = F.softplus(x) + F.softplus(-x) + const
        return terms.reshape(terms.shape[0], -1).sum(dim=1)
    x = np.asarray(x, dtype=np.float64)
    terms = np.logaddexp(0.0, x) + np.logaddexp(0.0, -x) + const
    return terms.reshape(terms.shape[0], -1).sum(axis=1)


def pixel_log_prob(x: Any, log_prob: Any, alpha: float, levels: int) -> Any:
    """Log-density (nats) of v = levels·u in pixel space [0, levels)^D, from the log-density in logit space.

    log p_v(v) = log p_x(x) + Σ_i log(dx_i/dv_i),  dx/dv = (1 − 2α)/levels · 1/(p(1 − p)),  p = sigmoid(x).
    ``x`` is N×D (or N×H×W; all axes after the first are summed), ``log_prob`` has shape (N,). numpy inputs give a
    float64 numpy array; torch tensors give a tensor (differentiable, in the wider of the two dtypes).
    """
    if _is_torch(x) or _is_torch(log_prob):
        import torch

        x_t = torch.as_tensor(x)
        lp = torch.as_tensor(log_prob, device=x_t.device)
        dtype = torch.promote_types(torch.promote_types(x_t.dtype, lp.dtype), torch.get_default_dtype())
        return lp.to(dtype) + _logit_jacobian(x_t.to(dtype), alpha, levels)
    return np.asarray(log_prob, dtype=np.float64) + _logit_jacobian(x, alpha, levels)


def bits_per_dim(x: Any, log_prob: Any, alpha: float, levels: int) -> float:
    """Mean over rows of −log p_v(v) / (D·ln 2): bits per pixel of the dequantized data in pixel space.

    D is the number of values per row (the product of x's shape after the first axis).
    """
    lp = pixel_log_prob(x, log_prob, alpha, levels)
    dim = math.prod(tuple(x.shape[1:]))
    mean = lp.double().mean().item() if _is_torch(lp) else float(np.mean(lp))
    return -mean / (dim * math.log(2.0))


def to_unit_pixels(x: Any, alpha: float) -> Any:
    """Inverse of the logit transform, for pictures: u = (sigmoid(x) − α)/(1 − 2α), clipped to [0, 1]."""
    if _is_torch(x):
        import torch

        return ((torch.sigmoid(x) - alpha) / (1.0 - 2.0 * alpha)).clamp(0.0, 1.0)
    x = np.asarray(x, dtype=np.float64)
    sig = np.exp(-np.logaddexp(0.0, -x))  # sigmoid without overflow warnings
    return np.clip((sig - alpha) / (1.0 - 2.0 * alpha), 0.0, 1.0)


def split_streams(seed: int, n: int = 3) -> list[np.random.Generator]:
    """``n`` independent, deterministic generators from one seed (train, val, test), via SeedSequence.spawn."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


def load_digits(root: str | Path | None = None, *, seed: int = 0, logit_alpha: float = 1e-6) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 17 grey levels 0..16), offline.

    Split: a fixed permutation (numpy default_rng(1797)) gives 1257 train / 270 validation / 270 test images, the
    same for every ``seed``. Each split is dequantized with its own stream spawned from ``seed`` and
    logit-transformed with α = ``logit_alpha``. ``root`` is unused (the data ships with scikit-learn).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    images = sk_load_digits().data.astype(np.int64)  # (1797, 64), values 0..16
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    n_train, n_val, _ = DIGITS_SPLIT
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    streams = split_streams(seed)
    train, val, test = (
        dequantize_logit(images[idx], 17, logit_alpha, rng) for idx, rng in zip(parts, streams, strict=True)
    )
    return Dataset(
        name="digits",
        train=train,
        val=val,
        test=test,
        image_shape=(8, 8),
        logit_alpha=logit_alpha,
        levels=17,
        info={
            "source": "sklearn.datasets.load_digits",
            "split": f"fixed permutation default_rng({DIGITS_SPLIT_SEED}): 1257/270/270",
            "dequantization_seed": seed,
            "transform": f"x = logit({logit_alpha:g} + (1 - 2*{logit_alpha:g}) * (k + U(0,1)) / 17)",
        },
    )
