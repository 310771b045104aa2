"""An LU-parametrized square affine layer: the peer of the relative gradient that needs no gradient trick at all.

As in Glow's invertible 1×1 convolution and nflows' ``LULinear``, the weight is kept factorized,

    W = P L U,   L unit lower-triangular,   U = strict upper part + diag(sign_i · exp(log_s_i)),

with the permutation P and the signs fixed at initialisation. Then log|det W| = Σ_i log_s_i costs O(D), and
y = x Wᵀ + b = ((x Uᵀ) Lᵀ) Pᵀ + b is two triangular (B×D)(D×D) products, O(B·D²), with autograd's ordinary
gradients; the inverse is two triangular solves. The price is the parametrization itself: the same set of matrices
(all invertible W with fixed P and signs), but a different geometry for the optimizer than the dense W.
"""

from __future__ import annotations

import torch
from torch import nn


class LULinear(nn.Module):
    """y = x Wᵀ + b with W = P L U (see the module docstring). ``forward(x, mode)`` returns ``(y, log|det W|)``
    exactly in every gradient mode (the mode is the dense layer's business, not this one's)."""

    def __init__(self, dim: int, bias: bool = True, init: str = "orthogonal", *, dtype=None, device=None):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim, dtype=dtype, device=device))
        self.upper = nn.Parameter(torch.zeros(dim, dim, dtype=dtype, device=device))
        self.log_s = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device))
        self.register_buffer("sign", torch.ones(dim, dtype=dtype, device=device))
        self.register_buffer("perm", torch.arange(dim, device=device))  # row i of P has its 1 in column perm[i]
        self.bias = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device)) if bias else None
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "orthogonal") -> None:
        """Factorize a random orthogonal W (``orthogonal``) or the identity (``identity``, ``data``); zero bias."""
        dim = self.log_s.shape[0]
        w = torch.empty(dim, dim, dtype=torch.float64)
        if init == "orthogonal":
            nn.init.orthogonal_(w)
        elif init in ("identity", "data"):
            w = torch.eye(dim, dtype=torch.float64)
        else:
            raise ValueError(f"unknown init {init!r}; choose orthogonal, identity or data")
        self.set_weight(w)
        if self.bias is not None:
            self.bias.zero_()

    @torch.no_grad()
    def set_weight(self, w: torch.Tensor) -> None:
        """Factorize an invertible W = P L U (LU with partial pivoting, float64) into this layer's parameters."""
        p, lower, upper = torch.linalg.lu(w.to(torch.float64).cpu())
        d = upper.diagonal()
        if bool((d == 0).any()):
            raise ValueError("the matrix is singular: it has no LU factorization with a non-zero diagonal")
        dtype, device = self.log_s.dtype, self.log_s.device
        self.lower.copy_(lower.tril(-1).to(dtype=dtype, device=device))
        self.upper.copy_(upper.triu(1).to(dtype=dtype, device=device))
        self.log_s.copy_(d.abs().log().to(dtype=dtype, device=device))
        self.sign.copy_(d.sign().to(dtype=dtype, device=device))
        self.perm.copy_(p.argmax(dim=1).to(device))  # row i of P has its 1 in column perm[i]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, U) as dense triangular matrices."""
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    @property
    def weight(self) -> torch.Tensor:
        """W = P L U (O(D³): for inspection and tests, never used in the step)."""
        lower, upper = self.factors()
        return (lower @ upper)[self.perm]

    def forward(self, x: torch.Tensor, mode: str = "autograd_logdet") -> tuple[torch.Tensor, torch.Tensor]:
        # x Uᵀ Lᵀ = x (L U)ᵀ with the diagonals applied element-wise: U = N + diag(s), L = M + I with N, M the strict
        # triangles, so x Uᵀ = x Nᵀ + x ⊙ s and h Lᵀ = h Mᵀ + h (no D×D identity or diagonal matrix is built)
        h = torch.addcmul(x @ self.upper.triu(1).mT, x, self.sign * self.log_s.exp())
        h = torch.addmm(h, h, self.lower.tril(-1).mT)
        y = h[:, self.perm]  # (P L U x)_i = (L U x)_{perm[i]}
        if self.bias is not None:
            y = y + self.bias
        return y, self.log_s.sum()

    def logabsdet(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """log|det W| = Σ_i log_s_i, exact, O(D), summed in ``dtype`` (default: the parameters')."""
        return (self.log_s if dtype is None else self.log_s.to(dtype)).sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x = W⁻¹ (y − b) by a permutation and two triangular solves."""
        lower, upper = self.factors()
        if self.bias is not None:
            y = y - self.bias
        h = y[:, torch.argsort(self.perm)]
        h = torch.linalg.solve_triangular(lower, h.mT, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, h, upper=True).mT

    def extra_repr(self) -> str:
        return f"dim={self.log_s.shape[0]}, bias={self.bias is not None}"
