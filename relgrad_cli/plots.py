"""Pictures a person would rather look at than read: sample grids and 2-D densities (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample_grid(flow: Any, ds: Any, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Draw ``n`` samples, map them back to pixels and save them as a square grid of images."""
    import torch

    from .data.images import to_unit_pixels

    g = torch.Generator(device=flow.device).manual_seed(seed)
    x = flow.sample(n, generator=g).double().cpu().numpy()
    pix = np.asarray(to_unit_pixels(x, ds.logit_alpha)).reshape(n, *ds.image_shape)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = ds.image_shape[:2]
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = pix[i]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6 * rows / cols))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{n} samples from the flow ({ds.name})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def density_2d(flow: Any, ds: Any, path: Path, resolution: int = 300) -> Path:
    """Side by side: the test data and the learned density exp(log p(x)) on a grid around it."""
    import torch

    data = ds.test
    lo, hi = np.percentile(data, 0.5, axis=0), np.percentile(data, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=flow.dtype, device=flow.device)
    with torch.no_grad():
        dens = flow.log_prob(grid).exp().double().cpu().numpy().reshape(gx.shape)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharex=True, sharey=True)
    axes[0].hist2d(data[:, 0], data[:, 1], bins=resolution // 3, range=[[lo[0], hi[0]], [lo[1], hi[1]]], cmap="viridis")
    axes[0].set_title(f"test data ({len(data)} points)")
    axes[1].imshow(dens, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", cmap="viridis")
    axes[1].set_title("learned density p(x)")
    for ax in axes:
        ax.set_xlabel("x₁")
    axes[0].set_ylabel("x₂")
    fig.suptitle(f"{ds.name}: {ds.info.get('shape', '')}".rstrip(": "))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
