"""Invertible element-wise maps between (and after) the dense layers.

Each map acts on every coordinate separately, z_i = φ_i(y_i), so its Jacobian is diagonal and

    log|det ∂z/∂y| = Σ_i log φ_i′(y_i),

which costs O(B·D) per batch: the step stays O(B·D²), dominated by the dense layers. Parameters of these maps are
not square matrices; they take ordinary (Euclidean) gradients from autograd, while W and b of the dense layers keep
the relative gradient (see :mod:`relgrad_cli.relative`: the relative backward receives ∂L/∂y from whatever follows
the layer, so nothing changes there).

Every map has ``forward(y) -> (z, Σ_i log φ′(y_i) per row)`` and ``inverse(z) -> y``. Three are provided:

- :class:`SmoothLeakyReLU`: σ(y) = α y + (1−α) softplus(y) with one fixed α (the paper's map);
- :class:`LearnedSmoothLeakyReLU`: the same with a learnable slope α_i per unit, starting at α_i = 1 (identity);
- :class:`RQSpline`: a monotone rational-quadratic spline per unit (Durkan et al., *Neural Spline Flows*, 2019) on
  [−B, B] with identity tails, starting as the identity.

A map that starts as the identity keeps a data-dependent start exact: with the first dense layer whitening the
data, the whole flow is then the fitted Gaussian (see :meth:`relgrad_cli.flow.InvertibleMLP.init_from_data`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .choices import ACTIVATIONS, FINAL_ACTIVATIONS
from .relative import SmoothLeakyReLU as _FusedSmoothLeakyReLU
from .relative import smooth_leaky_relu_inverse, softplus


class SmoothLeakyReLU(nn.Module):
    """σ(y) = α y + (1−α) softplus(y) with a fixed α ∈ (0, 1); σ′(y) = α + (1−α) sigmoid(y).

    Forward and backward are one fused autograd Function (:class:`relgrad_cli.relative.SmoothLeakyReLU`); the
    inverse is a monotone Newton solve."""

    def __init__(self, alpha: float = 0.3):
        super().__init__()
        self.alpha = float(alpha)

    def reset_parameters(self) -> None:
        """Nothing to reset: α is fixed."""

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet, _ = _FusedSmoothLeakyReLU.apply(y, self.alpha)
        return z, logdet

    def inverse(self, z: torch.Tensor, *, tol: float | None = None, max_iter: int = 100) -> torch.Tensor:
        return smooth_leaky_relu_inverse(z, self.alpha, tol=tol, max_iter=max_iter)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class LearnedSmoothLeakyReLU(nn.Module):
    """σ_i(y) = α_i y + (1−α_i) softplus(y) = y + (1−α_i) softplus(−y) with α_i = exp(a_i) learnable per unit.

    σ_i′(y) = α_i + (1−α_i) sigmoid(y) lies between α_i and 1, so σ_i is increasing for every α_i > 0: convex
    for α_i < 1, concave for α_i > 1, the identity at α_i = 1 (a_i = 0, the start). The gradients are autograd's;
    ∂σ/∂α = y − softplus(y) = −softplus(−y) and ∂ log σ′/∂α = (1 − sigmoid(y)) / σ′ (tested in float64)."""

    def __init__(self, dim: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """α_i = 1 for every unit: the identity."""
        self.log_alpha.zero_()

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alpha
        z = torch.addcmul(y, 1.0 - a, softplus(-y))
        logdet = torch.log(torch.addcmul(a, 1.0 - a, torch.sigmoid(y))).sum(-1)
        return z, logdet

    @torch.no_grad()
    def inverse(self, z: torch.Tensor, *, tol: float | None = None, max_iter: int = 100) -> torch.Tensor:
        return smooth_leaky_relu_inverse(z, self.alpha.to(z.dtype), tol=tol, max_iter=max_iter)


class RQSpline(nn.Module):
    """Monotone rational-quadratic spline per unit with K bins on [−B, B] and identity tails.

    Knots (x_k, y_k), k = 0..K, with x_0 = y_0 = −B, x_K = y_K = B, and derivatives d_k > 0 at the knots,
    d_0 = d_K = 1 so the curve joins the tails z = y smoothly. Widths w_k, heights h_k and interior derivatives come
    from unconstrained parameters: w = 2B (m + (1 − K m) softmax(u_w)), the same for h, d = m + softplus(u_d), m a
    small floor. In bin k, with ξ = (y − x_k)/w_k ∈ [0, 1] and s_k = h_k/w_k:

        φ(y)  = y_k + h_k [s_k ξ² + d_k ξ(1−ξ)] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1−ξ)]
        φ′(y) = s_k² [d_{k+1} ξ² + 2 s_k ξ(1−ξ) + d_k (1−ξ)²] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1−ξ)]²

    The inverse solves a quadratic in ξ for the bin holding z: with Δ = z − y_k and c₂ = d_{k+1} + d_k − 2 s_k,
    a = h_k (s_k − d_k) + Δ c₂, b = h_k d_k − Δ c₂, c = −s_k Δ, the root in [0, 1] is ξ = 2c / (−b − √(b² − 4ac)).
    Outside [−B, B] the map is the identity. At the start (all parameters zero, u_d chosen so d = 1) the bins are
    equal, s_k = 1 and φ(y) = y exactly.
    """

    def __init__(
        self,
        dim: int,
        bins: int = 8,
        bound: float = 5.0,
        *,
        min_size: float = 1e-3,
        min_derivative: float = 1e-3,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"spline bins must be an integer ≥ 2, got {bins!r}")
        if not (isinstance(bound, (int, float)) and bound > 0 and math.isfinite(bound)):
            raise ValueError(f"spline bound must be a positive number (the spline acts on [−B, B]), got {bound!r}")
        if min_size * bins >= 1:
            raise ValueError(f"min_size·bins must be below 1, got {min_size}·{bins}")
        self.bins, self.bound = bins, float(bound)
        self.min_size, self.min_derivative = min_size, min_derivative
        self.widths = nn.Parameter(torch.empty(dim, bins, dtype=dtype, device=device))
        self.heights = nn.Parameter(torch.empty(dim, bins, dtype=dtype, device=device))
        self.derivatives = nn.Parameter(torch.empty(dim, bins - 1, dtype=dtype, device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Equal bins and unit derivatives: the identity."""
        self.widths.zero_()
        self.heights.zero_()
        self.derivatives.fill_(math.log(math.expm1(1.0 - self.min_derivative)))  # softplus⁻¹(1 − m)

    def _knots(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin sizes (D, K) summing to 2B and knot positions (D, K+1) from −B to B."""
        sizes = (self.min_size + (1.0 - self.min_size * self.bins) * torch.softmax(u, dim=-1)) * (2.0 * self.bound)
        knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) - self.bound
        knots = torch.cat([knots[:, :1], knots[:, 1:-1], torch.full_like(knots[:, :1], self.bound)], dim=-1)
        return sizes, knots

    def _params(self) -> tuple[torch.Tensor, ...]:
        """Widths (D, K), x knots (D, K+1), heights, y knots and knot derivatives (D, K+1)."""
        w, xk = self._knots(self.widths)
        h, yk = self._knots(self.heights)
        ones = torch.ones_like(self.derivatives[:, :1])
        d = torch.cat([ones, self.min_derivative + F.softplus(self.derivatives), ones], dim=-1)
        return w, xk, h, yk, d

    def _table(self) -> torch.Tensor:
        """Per unit and bin (D, K, 6): left knot x_k, y_k, width w_k, height h_k, derivatives d_k and d_{k+1}."""
        w, xk, h, yk, d = self._params()
        return torch.stack([xk[:, :-1], yk[:, :-1], w, h, d[:, :-1], d[:, 1:]], dim=-1)

    def _lookup(self, v: torch.Tensor, table: torch.Tensor, column: int) -> torch.Tensor:
        """The table rows (B, D, 6) of the bins holding v (B×D, inside [−B, B]), found against the knots in
        ``column`` (0: x, the forward; 1: y, the inverse); one gather, whose backward is one scatter-add."""
        dim, bins = table.shape[0], table.shape[1]
        inner = table[:, 1:, column].to(v.dtype)  # (D, K−1) interior knots
        k = (v.unsqueeze(-1) >= inner).sum(-1)  # (B, D) in 0..K−1
        flat = k + torch.arange(0, dim * bins, bins, device=v.device)
        return table.reshape(dim * bins, 6)[flat]

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = (y > -self.bound) & (y < self.bound)
        yc = y.clamp(-self.bound, self.bound)
        x0, y0, wk, hk, d0, d1 = self._lookup(yc, self._table(), 0).unbind(-1)
        s = hk / wk
        xi = ((yc - x0) / wk).clamp(0.0, 1.0)
        t = xi * (1.0 - xi)
        den = s + (d1 + d0 - 2.0 * s) * t
        # The formulas of the docstring, rearranged so each term beyond the identity vanishes exactly at the start
        # (y_k = x_k, s = d = 1): there φ(y) = y and φ′(y) = 1 in floating point too, not just to rounding.
        z_in = yc + (y0 - x0) + (s - 1.0) * (yc - x0) + hk * t * ((d0 - s) * (1.0 - xi) + (s - d1) * xi) / den
        dz = s * s * (s + (d1 - s) * xi * xi + (d0 - s) * (1.0 - xi) ** 2) / (den * den)
        z = torch.where(inside, z_in, y)
        logdet = torch.where(inside, dz.log(), torch.zeros_like(dz)).sum(-1)
        return z, logdet

    @torch.no_grad()
    def inverse(self, z: torch.Tensor, **_: object) -> torch.Tensor:
        inside = (z > -self.bound) & (z < self.bound)
        zc = z.clamp(-self.bound, self.bound)
        x0, y0, wk, hk, d0, d1 = self._lookup(zc, self._table().to(z.dtype), 1).unbind(-1)
        s = hk / wk
        delta = zc - y0
        c2 = d1 + d0 - 2.0 * s
        a = hk * (s - d0) + delta * c2
        b = hk * d0 - delta * c2
        c = -s * delta
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        xi = (2.0 * c / (-b - disc.sqrt())).clamp(0.0, 1.0)
        return torch.where(inside, x0 + xi * wk, z)

    def extra_repr(self) -> str:
        return f"dim={self.widths.shape[0]}, bins={self.bins}, bound={self.bound}"


def make_elementwise(
    kind: str,
    dim: int,
    *,
    alpha: float = 0.3,
    bins: int = 8,
    bound: float = 5.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """The element-wise map named ``kind`` (one of :data:`ACTIVATIONS`) for ``dim`` units."""
    if kind == "slrelu":
        return SmoothLeakyReLU(alpha)
    if kind == "slrelu_learned":
        return LearnedSmoothLeakyReLU(dim, dtype=dtype, device=device)
    if kind == "spline":
        return RQSpline(dim, bins, bound, dtype=dtype, device=device)
    raise ValueError(f"unknown activation {kind!r}; choose one of: {', '.join(ACTIVATIONS)}")


__all__ = [
    "ACTIVATIONS",
    "FINAL_ACTIVATIONS",
    "LearnedSmoothLeakyReLU",
    "RQSpline",
    "SmoothLeakyReLU",
    "make_elementwise",
]
