"""The full-covariance Gaussian fitted in closed form: the baseline every flow must beat, and the flow's start.

Fit on the training split (float64): μ = mean, Σ = (1/N) Σ_n (x_n − μ)(x_n − μ)ᵀ, the maximum-likelihood estimate.
When Σ is singular or nearly so (N ≤ D, or λ_min ≤ 1e-12·λ_max), it is replaced by the Ledoit–Wolf shrinkage
estimate (1 − ρ) Σ + ρ (tr Σ / D) I, which is positive definite; ``shrinkage`` records ρ (0 when not needed).

    log N(x; μ, Σ) = −½ (x − μ)ᵀ Σ⁻¹ (x − μ) − ½ log det Σ − (D/2) log 2π

is computed through the Cholesky factor Σ = C Cᵀ: with r = C⁻¹ (x − μ), it is −½ ‖r‖² − Σ_i log C_ii − (D/2) log 2π.

The symmetric (ZCA) whitening W = Σ^{-1/2} = U Λ^{-1/2} Uᵀ, b = −W μ maps the data to zero mean and identity
covariance, and log|det W| = −½ log det Σ: a flow whose first layer is (W, b), whose later layers and element-wise
maps are identities and whose prior is the standard normal has exactly log p(x) = log N(x; μ, Σ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SINGULAR_RATIO = 1e-12  # λ_min/λ_max below this counts as singular


@dataclass(frozen=True)
class GaussianFit:
    """A fitted N(μ, Σ); ``shrinkage`` is the Ledoit–Wolf ρ used (0.0: the plain maximum-likelihood Σ)."""

    mean: np.ndarray
    cov: np.ndarray
    shrinkage: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def log_prob(self, x: np.ndarray, block: int = 65536) -> np.ndarray:
        """log N(x_n; μ, Σ) for every row of x (N×D), in nats, float64."""
        from scipy.linalg import solve_triangular

        chol = np.linalg.cholesky(self.cov)
        const = -np.log(np.diag(chol)).sum() - 0.5 * self.dim * math.log(2 * math.pi)
        out = np.empty(len(x))
        for start in range(0, len(x), block):
            centred = np.asarray(x[start : start + block], dtype=np.float64) - self.mean
            r = solve_triangular(chol, centred.T, lower=True)  # C r = x − μ
            out[start : start + block] = const - 0.5 * np.einsum("ij,ij->j", r, r)
        return out

    def whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) with W = Σ^{-1/2} (symmetric, ZCA) and b = −W μ: x ↦ W x + b has zero mean, identity covariance."""
        lam, u = np.linalg.eigh(self.cov)
        w = (u / np.sqrt(lam)) @ u.T
        return w, -w @ self.mean


def fit_gaussian(x: np.ndarray, block: int = 65536) -> GaussianFit:
    """Fit N(μ, Σ) to the rows of x by maximum likelihood (float64, in blocks of rows), with Ledoit–Wolf shrinkage
    when Σ is singular (see the module docstring). Raises ValueError for fewer than 2 rows or non-finite values."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"fitting a Gaussian needs an N×D array with N ≥ 2 rows, got shape {x.shape}")
    n, d = x.shape
    mean = np.zeros(d)
    for start in range(0, n, block):
        mean += np.asarray(x[start : start + block], dtype=np.float64).sum(0)
    mean /= n
    cov = np.zeros((d, d))
    for start in range(0, n, block):
        c = np.asarray(x[start : start + block], dtype=np.float64) - mean
        cov += c.T @ c
    cov /= n
    if not np.isfinite(cov).all():
        raise ValueError("the data hold NaN or infinite values; the Gaussian cannot be fitted")
    lam = np.linalg.eigvalsh(cov)
    if n > d and lam[0] > SINGULAR_RATIO * lam[-1]:
        return GaussianFit(mean, cov, 0.0)
    from sklearn.covariance import ledoit_wolf_shrinkage

    rho = float(ledoit_wolf_shrinkage(np.asarray(x[: min(n, 200_000)], dtype=np.float64) - mean, assume_centered=True))
    rho = max(rho, 1e-6)  # a positive ρ keeps Σ positive definite even when Ledoit–Wolf's estimate is 0
    mu = np.trace(cov) / d
    shrunk = (1.0 - rho) * cov + rho * mu * np.eye(d)
    return GaussianFit(mean, shrunk, rho)


__all__ = ["GaussianFit", "fit_gaussian"]
