"""Synthetic ICA data with an exactly known density.

Independent sources s ∈ R^D (each coordinate drawn from a registered prior: Laplace by default) are mixed by a
known invertible map g, x = g(s). We build g as the inverse of a "true" flow f = g⁻¹ of the same family the model
uses (:class:`relgrad_cli.flow.InvertibleMLP`), so the true density is exact:

    log p(x) = Σ_i log p_s(f(x)_i) + log|det J_f(x)|,

and a trained model's gap to the truth, (NLL_model − NLL_true) / D in nats per dimension, is reportable.

- ``mixing="linear"``: f(x) = W x (depth 1, no bias), so x = A s with A = W⁻¹ (classical ICA; Amari distance of
  W_est A is meaningful);
- ``mixing="mlp"``: f is a smooth leaky-ReLU MLP of ``mixing_depth`` layers with biases (well-specified nonlinear
  case for a model of the same depth and α).

Conditioning is controlled by construction: every true layer is W = U diag(σ) Vᵀ with U, V random orthogonal and
σ geometrically spaced between κ^(−1/2) and κ^(1/2) (κ = ``condition``), so cond(W) = κ and log|det W| = 0.
Everything is deterministic from ``seed``; each split has its own random stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, IcaTruth

MIXINGS = ("linear", "mlp")


def _orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # Haar-distributed


def true_flow(dim: int, mixing: str, mixing_depth: int, alpha: float, condition: float, source: str, seed: int):
    """The flow f = g⁻¹ (data → sources) that defines the synthetic data, in float64."""
    import torch

    from ..flow import InvertibleMLP

    rng = np.random.default_rng([seed, 0])
    depth = 1 if mixing == "linear" else mixing_depth
    flow = InvertibleMLP(dim, depth, alpha=alpha, bias=(mixing == "mlp"), prior=source, dtype=torch.float64)
    sv = np.geomspace(condition**-0.5, condition**0.5, dim)
    with torch.no_grad():
        for layer in flow.layers:
            w = _orthogonal(dim, rng) @ np.diag(rng.permutation(sv)) @ _orthogonal(dim, rng).T
            layer.weight.copy_(torch.from_numpy(w))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(0.5 * rng.standard_normal(dim)))
    return flow


def load_ica(
    root: Path | None = None,
    *,
    dim: int = 8,
    n_train: int = 20000,
    n_val: int = 2000,
    n_test: int = 5000,
    source: str = "laplace",
    mixing: str = "mlp",
    mixing_depth: int = 2,
    alpha: float = 0.3,
    condition: float = 3.0,
    seed: int = 0,
) -> Dataset:
    """Generate the synthetic ICA dataset (``root`` is unused: nothing is read from disk)."""
    import torch

    from ..priors import get_prior

    if mixing not in MIXINGS:
        raise DatasetError(f"unknown ICA mixing {mixing!r}; choose one of: {', '.join(MIXINGS)}")
    if int(dim) < 1:
        raise DatasetError(f"data.dim must be a positive integer, got {dim}")
    for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(value) < 2:
            raise DatasetError(f"data.{key}={value} is not allowed: each split needs at least 2 rows (a mean and "
                               "its standard error); use an integer ≥ 2")  # fmt: skip
    if not 0 < alpha < 1:
        raise DatasetError(f"data.alpha={alpha} is not allowed: the slope of the mixing network's smooth leaky-ReLU "
                           "must lie strictly between 0 and 1")  # fmt: skip
    if mixing == "mlp" and mixing_depth < 1:
        raise DatasetError(f"data.mixing_depth must be ≥ 1, got {mixing_depth}")
    if not condition >= 1.0:
        raise DatasetError(f"data.condition (condition number of each mixing layer) must be ≥ 1, got {condition}")
    try:
        prior = get_prior(source)
    except ValueError as err:
        raise DatasetError(f"data.source: {err}") from None
    flow = true_flow(dim, mixing, mixing_depth, alpha, condition, source, seed)

    splits, sources = {}, {}
    for i, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test)), start=1):
        g = torch.Generator().manual_seed(int(np.random.default_rng([seed, i]).integers(2**62)))
        s = prior.sample((n, dim), dtype=torch.float64, generator=g)
        sources[split] = s
        splits[split] = flow.inverse(s)
    with torch.no_grad():
        test_log_prob = flow.log_prob(splits["test"]).numpy()
    mixing_matrix = torch.linalg.inv(flow.layers[0].weight).detach().numpy() if mixing == "linear" else None
    truth = IcaTruth(
        test_log_prob=test_log_prob,
        test_sources=sources["test"].numpy(),
        mixing=mixing_matrix,
        source=source,
    )
    info = {
        "mixing": mixing,
        "mixing_depth": 1 if mixing == "linear" else mixing_depth,
        "source": source,
        "condition": condition,
        "alpha": alpha,
        "seed": seed,
    }
    return Dataset(
        name="ica",
        train=splits["train"].numpy(),
        val=splits["val"].numpy(),
        test=splits["test"].numpy(),
        truth=truth,
        info=info,
    )
