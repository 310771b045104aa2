"""The invertible MLP flow and its training loss.

A flow f: x ↦ z of L square affine layers with an invertible element-wise map σ_k between them, and optionally a
final element-wise map φ after the last:

    y_k = W_k z_{k−1} + b_k,   z_k = σ_k(y_k) for k < L,   z = φ(y_L) (or y_L),   z_0 = x,

with a factorized prior p(z) = ∏_i p(z_i). By the change of variables,

    log p(x) = Σ_i log p(z_i) + Σ_{k<L} Σ_i log σ_k′(y_{k,i}) [+ Σ_i log φ′(y_{L,i})] + Σ_k log|det W_k|.

The paper's σ is the smooth leaky-ReLU α y + (1−α) softplus(y) with a fixed α; learnable element-wise maps
(:mod:`relgrad_cli.elementwise`) add flexibility at O(B·D) cost. A final map φ acts as a learned factorized prior:
p(z) pulled back through φ is a flexible univariate density per coordinate.

Every piece is exact; Σ log|det W_k| costs O(D³) per layer and is only evaluated where a value is needed
(``log_prob``, ``nll``), never in a relative-gradient training step (see :mod:`relgrad_cli.relative`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .choices import ACTIVATIONS, DENSE, FINAL_ACTIVATIONS, INITS
from .elementwise import make_elementwise
from .lu import LULinear
from .priors import Prior, get_prior, prior_names
from .relative import GRADIENT_MODES, SelfNormalizingAffine, affine_with_logdet, check_gradient_mode


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every entry is finite; True where it cannot be read: inside torch.func.vmap (per-sample work) and
    under torch.compile (a read would break the graph: the runner checks its data once, before training)."""
    if torch.compiler.is_compiling():
        return True
    try:
        return bool(torch.isfinite(x).all())
    except RuntimeError:
        return True


class InvertibleLinear(nn.Module):
    """A square affine layer y = x Wᵀ + b whose ``weight`` (D×D) and ``bias`` (D) are ordinary parameters.

    ``learned_inverse`` gives the layer an approximate inverse ``inverse_weight`` R ≈ W⁻¹ (starting at W⁻¹) for the
    ``self_normalizing`` gradient mode: its forward then adds λ·mean_b ‖x_b − R W x_b‖² (λ = ``recon_weight``,
    x detached) to the loss through ``ld`` (see :mod:`relgrad_cli.relative`)."""

    def __init__(
        self, dim: int, bias: bool = True, init: str = "orthogonal", *, learned_inverse: bool = False,
        recon_weight: float = 1.0, dtype=None, device=None,
    ):  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device)) if bias else None
        self.recon_weight = float(recon_weight)
        self.inverse_weight = nn.Parameter(torch.empty_like(self.weight)) if learned_inverse else None
        self.reset_parameters(init)

    @torch.no_grad()
    def set_weight(self, w: torch.Tensor) -> None:
        """W = w, and R = W⁻¹ when the layer has a learned inverse."""
        self.weight.copy_(w)
        if self.inverse_weight is not None:
            self.inverse_weight.copy_(torch.linalg.inv(w.to(torch.float64)))

    def reset_parameters(self, init: str = "orthogonal") -> None:
        """Orthogonal W (well conditioned, log|det W| = 0) or the identity (also the start of ``data``, which
        :meth:`InvertibleMLP.init_from_data` completes); zero bias; R = W⁻¹."""
        with torch.no_grad():
            w = torch.empty_like(self.weight)
            if init == "orthogonal":
                nn.init.orthogonal_(w)
            elif init in ("identity", "data"):
                w = torch.eye(self.weight.shape[0], dtype=w.dtype, device=w.device)
            else:
                raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
            self.set_weight(w)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, mode: str = "autograd_logdet") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(y, ld)``: the output and the stand-in for log|det W| under gradient ``mode``."""
        if mode != "self_normalizing":
            return affine_with_logdet(x, self.weight, self.bias, mode)
        if self.inverse_weight is None:
            raise ValueError("the self_normalizing mode needs layers built with learned_inverse=True")
        y, ld = SelfNormalizingAffine.apply(x, self.weight, self.bias, self.inverse_weight)
        xd = x.detach()
        recon = (xd - F.linear(F.linear(xd, self.weight), self.inverse_weight)).square().sum(-1).mean()
        return y, ld - self.recon_weight * recon  # the loss subtracts ld: + λ·reconstruction

    def logabsdet(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """log|det W| (slogdet, O(D³), differentiable), computed in ``dtype`` (default: the weight's)."""
        return torch.linalg.slogdet(self.weight if dtype is None else self.weight.to(dtype)).logabsdet

    def inverse(self, y: torch.Tensor, approximate: bool = False) -> torch.Tensor:
        """x = (y − b) W⁻ᵀ by a linear solve, or with ``approximate`` through the learned inverse: (y − b) Rᵀ."""
        if self.bias is not None:
            y = y - self.bias
        if approximate:
            if self.inverse_weight is None:
                raise ValueError("approximate inversion needs a learned inverse (the self_normalizing mode)")
            return F.linear(y, self.inverse_weight)
        return torch.linalg.solve(self.weight, y.mT).mT

    def extra_repr(self) -> str:
        learned = self.inverse_weight is not None
        return f"dim={self.weight.shape[0]}, bias={self.bias is not None}, learned_inverse={learned}"


class InvertibleMLP(nn.Module):
    """Dense invertible network x ↦ z with an exact log-density.

    Args:
        dim: data dimension D (every layer is D×D).
        depth: number of affine layers L ≥ 1 (L − 1 element-wise maps between them).
        alpha: slope parameter of the fixed smooth leaky-ReLU (``activation="slrelu"``), in (0, 1); σ′ ∈ (α, 1).
        bias: whether the affine layers have a bias.
        prior: a name from :func:`relgrad_cli.priors.prior_names` or a :class:`Prior` instance.
        init: ``"orthogonal"`` (default) or ``"identity"`` for the weights; ``"data"`` starts from the identity and
            expects :meth:`init_from_data`, which makes the first layer whiten the data. Biases start at zero.
        activation: the element-wise map between dense layers: ``"slrelu"`` (fixed α, the paper's),
            ``"slrelu_learned"`` (a learnable slope per unit, starting as the identity) or ``"spline"`` (a monotone
            rational-quadratic spline per unit, starting as the identity); see :mod:`relgrad_cli.elementwise`.
        final_activation: ``"none"`` or a learnable map (``"slrelu_learned"``, ``"spline"``) after the last layer.
        spline_bins, spline_bound: bins K and interval [−B, B] of the splines (identity outside).
        dense: ``"full"`` (an unconstrained D×D W, trained by the gradient mode) or ``"lu"`` (W = P L U,
            :class:`relgrad_cli.lu.LULinear`: exact log-det in O(D), ordinary gradients, the mode is ignored).
        gradient: the gradient mode :meth:`training_loss` uses (see :func:`training_loss`).
        recon_weight: λ of the ``self_normalizing`` mode's reconstruction loss (used only in that mode, where
            every dense layer gets a learned inverse R ≈ W⁻¹).
        dtype, device: as for any torch module (float32 and float64, CPU and CUDA).

    Methods: ``forward(x) -> z``, ``log_prob(x) -> (B,)``, ``nll(x)`` (exact mean NLL), ``inverse(z) -> x``,
    ``sample(n) -> (n, D)``, ``init_from_data(x)``. Training: :func:`training_loss`.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        *,
        alpha: float = 0.3,
        bias: bool = True,
        prior: str | Prior = "gaussian",
        init: str = "orthogonal",
        activation: str = "slrelu",
        final_activation: str = "none",
        spline_bins: int = 8,
        spline_bound: float = 5.0,
        dense: str = "full",
        gradient: str = "relative",
        recon_weight: float = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if dtype in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"{dtype} flows are not supported (log-determinants and LU factorisations need float32 or float64); "
                "build the flow in float32 and train under torch.autocast for mixed precision"
            )
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer ≥ 1 (number of affine layers), got {depth!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
            raise ValueError(f"alpha must lie strictly between 0 and 1 (σ′ ∈ (α, 1)), got {alpha!r}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if final_activation not in FINAL_ACTIVATIONS:
            raise ValueError(
                f"unknown final activation {final_activation!r}; choose one of: {', '.join(FINAL_ACTIVATIONS)}"
            )
        if dense not in DENSE:
            raise ValueError(f"unknown dense layer {dense!r}; choose one of: {', '.join(DENSE)}")
        self.dim = dim
        self.depth = depth
        self.alpha = float(alpha)
        self.init = init
        self.activation, self.final_activation = activation, final_activation
        self.spline_bins, self.spline_bound = spline_bins, float(spline_bound)
        self.dense = dense
        self.gradient = check_gradient_mode(gradient)
        self.recon_weight = float(recon_weight)
        snf = self.gradient == "self_normalizing" and dense == "full"
        if snf and not self.recon_weight >= 0:
            raise ValueError(f"recon_weight must be ≥ 0, got {recon_weight!r}")
        self.prior = get_prior(prior)
        self.check_inputs = True
        if dense == "full":
            self.layers = nn.ModuleList(
                InvertibleLinear(
                    dim,
                    bias=bias,
                    init=init,
                    learned_inverse=snf,
                    recon_weight=self.recon_weight,
                    dtype=dtype,
                    device=device,
                )  # fmt: skip
                for _ in range(depth)
            )
        else:
            self.layers = nn.ModuleList(
                LULinear(dim, bias=bias, init=init, dtype=dtype, device=device) for _ in range(depth)
            )

        def elementwise(kind: str) -> nn.Module:
            return make_elementwise(kind, dim, alpha=self.alpha, bins=spline_bins, bound=self.spline_bound,
                                    dtype=dtype, device=device)  # fmt: skip

        self.activations = nn.ModuleList(elementwise(activation) for _ in range(depth - 1))
        self.final = None if final_activation == "none" else elementwise(final_activation)

    # -- helpers ---------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (read off a parameter: an LU layer's ``weight`` is an O(D³) product)."""
        return next(self.layers[0].parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.layers[0].parameters()).device

    def _validate(self, x: torch.Tensor, what: str = "data") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{what} must have shape (batch, {self.dim}) for this {self.dim}-dimensional flow, got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (0 rows); pass at least one row")
        if x.is_complex():
            raise ValueError(f"{what} is complex ({x.dtype}); the flow models real numbers")
        if not x.is_floating_point():
            x = x.to(self.dtype)
        if self.check_inputs and not _all_finite(x):
            bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
            raise ValueError(
                f"{what} contains NaN or infinite values (rows {bad[:5].tolist()}"
                f"{' ...' if bad.numel() > 5 else ''}); clean or drop those rows"
            )
        return x.to(self.dtype)

    def transform(self, x: torch.Tensor, mode: str = "autograd_logdet"):
        """Run x → z under gradient ``mode``.

        Returns ``(z, log_dsigma, lds)``: the latent (B×D), the element-wise maps' Σ_k Σ_i log σ_k′(y_{k,i}) per
        sample (B,), and the list of per-layer log-det stand-ins (empty in ``no_logdet`` mode; zeros in
        ``relative`` mode).
        """
        h = x
        log_dsigma = x.new_zeros(x.shape[0])
        lds: list[torch.Tensor] = []
        maps = [*self.activations, self.final]
        for layer, elementwise in zip(self.layers, maps, strict=False):
            h, ld = layer(h, mode)
            if ld is not None:
                lds.append(ld)
            if elementwise is not None:
                h, ls = elementwise(h)
                log_dsigma = log_dsigma + ls
        return h, log_dsigma, lds

    # -- public API ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map data x (B×D) to latents z (B×D)."""
        x = self._validate(x)
        return self.transform(x, "no_logdet")[0]

    def logabsdet(self, dtype: torch.dtype | None = None, layers: Iterable[int] | None = None) -> torch.Tensor:
        """Σ_k log|det W_k| (O(L·D³) for dense layers, O(L·D) for LU ones; differentiable), over ``layers`` (indices;
        default all), computed in ``dtype`` (default: the weights' own; float64 for evaluation at large D)."""
        picked = range(len(self.layers)) if layers is None else layers
        terms = [self.layers[k].logabsdet(dtype) for k in picked]
        return torch.stack(terms).sum() if terms else torch.zeros((), dtype=dtype or self.dtype, device=self.device)

    def log_prob_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The per-row part of log p(x): Σ_i log p(z_i) + Σ_k Σ_i log σ_k′(y_{k,i}), shape (B,); the constant
        part is :meth:`logabsdet` (evaluation computes it once per pass)."""
        x = self._validate(x)
        z, log_dsigma, _ = self.transform(x, "no_logdet")
        return self.prior.log_prob(z).sum(-1) + log_dsigma

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of every row of x, in nats: shape (B,)."""
        return self.log_prob_rows(x) + self.logabsdet()

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Exact mean negative log-likelihood of the batch (nats), log-det terms included."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def inverse(
        self, z: torch.Tensor, *, tol: float | None = None, max_iter: int = 100, approximate: bool = False
    ) -> torch.Tensor:
        """Map latents z (B×D) back to data x = f⁻¹(z): linear solves (or, with ``approximate``, the learned inverses
        R of the ``self_normalizing`` mode: one product per layer), Newton for the smooth leaky-ReLUs (see
        :func:`relgrad_cli.relative.smooth_leaky_relu_inverse`; ``tol`` is its relative step tolerance) and the
        closed-form inverse of the splines."""
        h = self._validate(z, "latents")
        if self.final is not None:
            h = self.final.inverse(h, tol=tol, max_iter=max_iter)
        for k in range(len(self.layers) - 1, -1, -1):
            h = self.layers[k].inverse(h, approximate) if approximate else self.layers[k].inverse(h)
            if k > 0:
                h = self.activations[k - 1].inverse(h, tol=tol, max_iter=max_iter)
        return h

    @torch.no_grad()
    def init_from_data(self, x: Any) -> Any:
        """Start at the Gaussian fitted to x (rows; numpy or torch): the first layer becomes the ZCA whitening
        W₁ = Σ^{-1/2}, b₁ = −W₁ μ (see :mod:`relgrad_cli.gaussian`), every other layer the identity with zero bias,
        and every learnable element-wise map its identity start. With a standard-normal prior and learnable
        element-wise maps (or depth 1), log p(x) is then exactly log N(x; μ, Σ). Returns the
        :class:`~relgrad_cli.gaussian.GaussianFit` (pass one instead of data to reuse it)."""
        import numpy as np

        from .gaussian import GaussianFit, fit_gaussian

        fit = x if isinstance(x, GaussianFit) else fit_gaussian(x.detach().cpu().numpy() if torch.is_tensor(x) else x)
        if fit.dim != self.dim:
            raise ValueError(f"the data are {fit.dim}-dimensional, this flow is {self.dim}-dimensional")
        if self.layers[0].bias is None and np.abs(fit.mean).max() > 0:
            raise ValueError("init_from_data needs bias=True to centre the data (the first layer's b = −W μ)")
        w, b = fit.whitening()
        for k, layer in enumerate(self.layers):
            layer.reset_parameters("identity")
            if k == 0:
                layer.set_weight(torch.as_tensor(w))
                if layer.bias is not None:
                    layer.bias.copy_(torch.as_tensor(b))
        for m in [*self.activations, self.final]:
            if m is not None:
                m.reset_parameters()
        return fit

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, approximate: bool = False) -> torch.Tensor:
        """Draw n samples: z ~ p(z), x = f⁻¹(z). Shape (n, D). ``approximate``: through the learned inverses of the
        ``self_normalizing`` mode (O(n·D²) per layer, no solve)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of samples must be a positive integer, got {n!r}")
        z = self.prior.sample((n, self.dim), dtype=self.dtype, device=self.device, generator=generator)
        return self.inverse(z, approximate=approximate)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture (saved in every checkpoint of the runner)."""
        return {"dim": self.dim, "depth": self.depth, "alpha": self.alpha, "bias": self.layers[0].bias is not None,
                "prior": self.prior.name, "init": self.init, "activation": self.activation,
                "final_activation": self.final_activation, "spline_bins": self.spline_bins,
                "spline_bound": self.spline_bound, "dense": self.dense, "gradient": self.gradient,
                "recon_weight": self.recon_weight}  # fmt: skip

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`training_loss` under this flow's gradient mode (``self.gradient``)."""
        return training_loss(self, x, self.gradient)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> InvertibleMLP:
        """Rebuild a flow from a checkpoint written by ``relgrad-train`` (``best.pt`` or ``last.pt``): its
        architecture (``flow`` entry: the :meth:`config`) and weights, in the weights' dtype. Loaded with
        ``weights_only=True``: nothing in the file is executed. See :func:`relgrad_cli.models.load_model`, which
        this calls, for any other model of the runner."""
        from .models import load_model

        flow = load_model(path, map_location=map_location)
        if not isinstance(flow, cls):
            raise ValueError(f"{path} holds a {type(flow).__name__}, not an {cls.__name__}; use "
                             "relgrad_cli.models.load_model")  # fmt: skip
        return flow

    def extra_repr(self) -> str:
        return f"dim={self.dim}, depth={self.depth}, prior={self.prior.name}"


def training_loss(flow: InvertibleMLP, x: torch.Tensor, gradient: str = "relative") -> torch.Tensor:
    """Scalar loss whose ``.backward()`` leaves the chosen training gradient in every parameter's ``.grad``.

    ``gradient`` (see :mod:`relgrad_cli.relative`):

    - ``"relative"``: .grad holds the relative gradient R_W = G_W WᵀW + g_b bᵀW, R_b = G_W Wᵀb + g_b(1 + bᵀb) of
      the exact mean NLL, computed in O(B·D²) per layer. The returned value is the mean NLL *without*
      −Σ log|det W_k| (that value would cost O(D³)); use ``flow.nll(x)`` for the exact value;
    - ``"euclidean"``: .grad holds the Euclidean gradient of the exact mean NLL, W⁻ᵀ from an LU solve; the value is
      the exact mean NLL;
    - ``"autograd_logdet"``: the same gradient and value through ``torch.linalg.slogdet`` in the graph;
    - ``"no_logdet"``: plain backprop of the data part only (value and gradient without any log-det term): the
      speed floor, not a valid objective;
    - ``"self_normalizing"``: W gets gyᵀx − Rᵀ (the learned inverse R ≈ W⁻¹ in place of W⁻ᵀ), R its own update
      and, with W, the gradient of λ·mean‖x − R W x‖² per layer (see :mod:`relgrad_cli.relative`). The value is the
      data part plus the reconstruction losses. Needs a flow built with ``gradient="self_normalizing"``.

    The data part is −(1/B) Σ_b [Σ_i log p(z_{b,i}) + Σ_k Σ_i log σ_k′(y_{k,b,i})] (element-wise maps included).
    Parameters of learnable element-wise maps always receive their Euclidean gradient.
    """
    check_gradient_mode(gradient)
    x = flow._validate(x)
    z, log_dsigma, lds = flow.transform(x, gradient)
    loss = -(flow.prior.log_prob(z).sum(-1) + log_dsigma).mean()
    for ld in lds:
        loss = loss - ld
    return loss


__all__ = ["GRADIENT_MODES", "INITS", "InvertibleLinear", "InvertibleMLP", "prior_names", "training_loss"]
