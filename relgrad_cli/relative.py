"""Affine layers with their log|det W| term, under the four gradient modes.

Notation (row-vector batches, as ``torch.nn.Linear``): a layer maps x (B×D) to y = x Wᵀ + 1bᵀ. The mean negative
log-likelihood L of a flow contains, for every layer, a data part (through y) and the term −log|det W|. Each layer
returns the pair ``(y, ld)`` and the loss is built as ``data_terms(y) − Σ_k ld_k``, so autograd hands every layer
two upstream gradients:

- gy = ∂L/∂y (B×D), already holding the 1/B of the batch mean;
- c = ∂L/∂ld, a scalar: −1 for the mean NLL, −S when the loss is multiplied by S (AMP loss scaling, weighting).

Carrying c from autograd instead of hard-coding −1 keeps every mode correct under loss scaling and reweighting.

The Euclidean gradients are then

    G_W = gyᵀ x + c W⁻ᵀ,     g_b = gyᵀ 1.

Relative gradient (Amari; Cardoso & Laheld), with the bias folded into the augmented matrix W̃ = [[W, b], [0, 1]]
acting on [x; 1]: R̃ = G̃ W̃ᵀW̃ where G̃ = [G_W, g_b]. Writing out W̃ᵀW̃ = [[WᵀW, Wᵀb], [bᵀW, bᵀb + 1]]:

    R_W = G_W WᵀW + g_b bᵀW,        R_b = G_W Wᵀb + g_b (1 + bᵀb).

Substituting G_W and g_b, and using x Wᵀ + 1bᵀ = y:

    R_W = gyᵀ (y W) + c W,           R_b = gyᵀ (y b + 1) + c b.

So the log-det part W⁻ᵀ becomes W (and b): no inverse, no determinant. The data part costs two (B×D)(D×D)-sized
products, y W and gyᵀ (yW), and never a D×D·D×D product; x is not even needed. Without bias: R_W = gyᵀ (y W) + c W
with y = x Wᵀ, the same formula.

Modes (``GRADIENT_MODES``):

- ``relative``: the relative gradient above. The value of ``ld`` is 0: log|det W| is never computed in the step
  (it would cost O(D³)), so a relative-mode loss is the data part of the NLL only;
- ``euclidean``: the exact Euclidean gradient, W⁻ᵀ from the LU factorisation of W (computed once in the forward
  pass, which also gives the exact log|det W| = Σ log|U_ii| as the value of ``ld``);
- ``autograd_logdet``: ``torch.linalg.slogdet`` inside the autograd graph (value and gradient exact);
- ``no_logdet``: plain backprop of the data part, no log-det term at all. Not a valid objective: it is the speed
  floor the benchmarks compare against;
- ``self_normalizing``: the self-normalizing flow's gradient (Keller, Peters, Jaini, Hoogeboom, Forré, Welling,
  ICML 2021). Each layer keeps a learned approximate inverse R ≈ W⁻¹ and replaces the log-det gradient W⁻ᵀ by Rᵀ:

      G_W = gyᵀ x + c Rᵀ,        g_b = gyᵀ 1,

  while R takes the likelihood's gradient written through x = R (y − b), with W standing in for R⁻¹: with
  z = y − b and gx = gy W (the input gradient, gx_b = Wᵀ δ_b per sample),

      ∂/∂R [data(R⁻¹ x)] = −R⁻ᵀ Σ_b δ_b z_bᵀ ≈ −gxᵀ z,     ∂/∂R [c log|det R⁻¹|] = −c R⁻ᵀ ≈ −c Wᵀ,

  so G_R = −gxᵀ z − c Wᵀ. A reconstruction loss λ·mean_b ‖x_b − R W x_b‖² (x detached; ordinary gradients for W
  and R, added by the layer) keeps R close to W⁻¹. O(B·D²) per layer, no inverse, no determinant. The reference
  code halves G_W and G_R, a constant rescaling of their steps that Adam removes; it is not applied here. The
  value of ``ld`` is 0 (the log-det is never computed in the step), as in the relative mode.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

GRADIENT_MODES: tuple[str, ...] = ("relative", "euclidean", "autograd_logdet", "no_logdet", "self_normalizing")


def check_gradient_mode(mode: str) -> str:
    """Return ``mode`` if it names a gradient mode, else raise a ValueError listing the choices."""
    if mode not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {mode!r}; choose one of: {', '.join(GRADIENT_MODES)}")
    return mode


def _signature_cached(cls: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """Class decorator: torch's ``Function.apply`` binds the arguments to ``inspect.signature(cls.forward)`` on every
    call, and computing a signature costs about 10 µs (≈ 8 % of a small step with three such calls). inspect
    returns a function's ``__signature__`` as it is, so it is computed once here."""
    cls.forward.__signature__ = inspect.signature(cls.forward)
    return cls


@_signature_cached
class RelativeAffine(torch.autograd.Function):
    """(x, W, b) ↦ (y = x Wᵀ + b, ld = 0) whose backward returns the relative gradients R_W and R_b.

    Forward costs one B·D² product; backward three (gy W for the input, y W, gyᵀ(yW)): about 4/3 of plain
    backprop. Saves y (the output) and W only. Parameter gradients are produced in the parameters' dtype, so
    mixed precision (autocast) leaves them in full precision.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        y = F.linear(x, weight, bias)
        ld = torch.zeros((), dtype=weight.dtype, device=weight.device)
        return y, ld

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, weight, bias = inputs
        ctx.save_for_backward(output[0], weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor, c: torch.Tensor):
        y, weight, bias = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = gy.mm(weight.to(gy.dtype))
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            p = weight.dtype
            gy_p, y_p, c_p = gy.to(p), y.to(p), c.to(p)
            # On the CPU the scalar c is read for free and folded into one fused addmm/addmv (saves a pass over
            # D×D memory); elsewhere reading it would stall the device queue, so it is applied as a tensor.
            c_host = _host_scalar(c_p)
            if ctx.needs_input_grad[1]:
                v = y_p.mm(weight)  # (B, D): y W
                if c_host is not None:
                    gw = torch.addmm(weight, gy_p.mT, v, beta=c_host)  # gyᵀ (y W) + c W
                else:
                    gw = gy_p.mT.mm(v).addcmul_(weight, c_p)
            if bias is not None and ctx.needs_input_grad[2]:
                s = y_p.mv(bias).add_(1.0)  # y b + 1, one scalar per sample
                if c_host is not None:
                    gb = torch.addmv(bias, gy_p.mT, s, beta=c_host)  # gyᵀ (y b + 1) + c b
                else:
                    gb = gy_p.mT.mv(s).addcmul_(bias, c_p)
        return gx, gw, gb


def _host_scalar(c: torch.Tensor) -> float | None:
    """The log-det coefficient as a Python float when reading it is free (a plain CPU tensor), else None.
    Under torch.func transforms (vmap of grad: per-sample gradients) it cannot be read and stays a tensor; under
    torch.compile it is not read either (Inductor fuses the tensor form instead)."""
    if c.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    try:
        return float(c)
    except RuntimeError:
        return None


@_signature_cached
class SelfNormalizingAffine(torch.autograd.Function):
    """(x, W, b, R) ↦ (y = x Wᵀ + b, ld = 0) whose backward returns the self-normalizing gradients of the module
    docstring: G_W = gyᵀ x + c Rᵀ, g_b = gyᵀ 1, G_R = −gxᵀ (y − b) − c Wᵀ, and gx = gy W for the layer below.
    Saves x, y, W, b and R; backward costs three (B×D)(D×D)-sized products, as plain backprop plus one."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, inverse: torch.Tensor):
        y = F.linear(x, weight, bias)
        return y, torch.zeros((), dtype=weight.dtype, device=weight.device)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, inverse = inputs
        ctx.save_for_backward(x, output[0], weight, bias, inverse)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor, c: torch.Tensor):
        x, y, weight, bias, inverse = ctx.saved_tensors
        p = weight.dtype
        gy_p, c_p = gy.to(p), c.to(p)
        gx = gy.mm(weight.to(gy.dtype))
        gw = gy_p.mT.mm(x.to(p)).add_(inverse.mT * c_p) if ctx.needs_input_grad[1] else None
        gb = gy_p.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        gr = None
        if ctx.needs_input_grad[3]:
            z = (y - bias if bias is not None else y).to(p)
            gr = gx.to(p).mT.mm(z).neg_().sub_(weight.mT * c_p)  # −gxᵀ z − c Wᵀ
        return (gx if ctx.needs_input_grad[0] else None), gw, gb, gr


@_signature_cached
class LULogAbsDet(torch.autograd.Function):
    """W ↦ log|det W| from an LU factorisation; backward c·W⁻ᵀ by solving X Wᵀ = I with the same factors.

    log|det W| = Σ_i log|U_ii| for W = P L U (L unit-diagonal). O(D³) forward and backward: this is the exact
    Euclidean baseline, not something to use in training.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor):
        lu, pivots, _ = torch.linalg.lu_factor_ex(weight)
        return lu.diagonal().abs().log().sum(), lu, pivots

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, lu, pivots = output
        ctx.mark_non_differentiable(lu, pivots)
        ctx.save_for_backward(lu, pivots)

    @staticmethod
    @once_differentiable
    def backward(ctx, c: torch.Tensor, _glu: torch.Tensor, _gpiv: torch.Tensor):
        lu, pivots = ctx.saved_tensors
        eye = torch.eye(lu.shape[-1], dtype=lu.dtype, device=lu.device)
        inv_t = torch.linalg.lu_solve(lu, pivots, eye, left=False, adjoint=True)  # X Wᵀ = I, so X = W⁻ᵀ
        return inv_t.mul_(c.to(lu.dtype))


def affine_with_logdet(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mode: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply y = x Wᵀ + b and return ``(y, ld)`` where ld stands for log|det W| under gradient ``mode``.

    ``ld`` is None in ``no_logdet`` mode and a zero-valued scalar in ``relative`` mode (see the module docstring).
    """
    if mode == "relative":
        return RelativeAffine.apply(x, weight, bias)
    if mode == "self_normalizing":
        raise ValueError("self_normalizing needs the layer's learned inverse: use InvertibleLinear")
    y = F.linear(x, weight, bias)
    if mode == "no_logdet":
        return y, None
    if mode == "euclidean":
        return y, LULogAbsDet.apply(weight)[0]
    if mode == "autograd_logdet":
        return y, torch.linalg.slogdet(weight).logabsdet
    raise ValueError(f"unknown gradient mode {mode!r}; choose one of: {', '.join(GRADIENT_MODES)}")


def softplus(y: torch.Tensor) -> torch.Tensor:
    """log(1 + eʸ), exact in float64 too: torch's default switches to y above 20, an error of e⁻²⁰ ≈ 2e-9; the
    switch at 40 is below float64's resolution (e⁻⁴⁰ ≈ 4e-18)."""
    return F.softplus(y, threshold=40.0)


@_signature_cached
class SmoothLeakyReLU(torch.autograd.Function):
    """y ↦ (σ(y), Σ_i log σ′(y_i)) fused, with a hand-written backward.

    σ(y) = α y + (1−α) softplus(y),   σ′(y) = α + (1−α) s,   s = sigmoid(y),
    d/dy log σ′(y) = (1−α) s (1−s) / σ′(y).

    Backward: gy = gz · σ′(y) + g_logdet · (1−α) s (1−s) / σ′(y). Saves s only.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(y: torch.Tensor, alpha: float):
        s = torch.sigmoid(y)
        z = softplus(y).mul_(1.0 - alpha).add_(y, alpha=alpha)
        dsig = s * (1.0 - alpha) + alpha
        logdet = dsig.log().sum(-1)
        return z, logdet, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.alpha = inputs[1]
        ctx.mark_non_differentiable(output[2])
        ctx.save_for_backward(output[2])

    @staticmethod
    @once_differentiable
    def backward(ctx, gz: torch.Tensor, glog: torch.Tensor, _gs: torch.Tensor):
        (s,) = ctx.saved_tensors
        a = ctx.alpha
        dsig = s * (1.0 - a) + a
        curv = (s * (1.0 - s)).mul_(1.0 - a).div_(dsig)  # d/dy log σ′(y) = (1−α) s (1−s) / σ′
        # out of place where an upstream gradient enters, so torch.func.vmap/jacrev can batch over it
        return torch.addcmul(gz * dsig, curv, glog.unsqueeze(-1)), None


def smooth_leaky_relu(y: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """σ(y) = α y + (1−α) softplus(y): monotone, slope between α and 1 (convex for α < 1, concave for α > 1)."""
    return softplus(y) * (1.0 - alpha) + alpha * y


def smooth_leaky_relu_inverse(
    z: torch.Tensor, alpha: float | torch.Tensor, *, tol: float | None = None, max_iter: int = 100
) -> torch.Tensor:
    """Solve σ(y) = z element-wise by Newton's method, vectorized; ``alpha`` > 0 is a number or a tensor that
    broadcasts against z (one slope per unit).

    σ is increasing for every α > 0; it is convex for α < 1 and concave for α > 1. For α < 1, σ(y) ≥ y and
    σ(y) ≥ α y, so the root satisfies y* ≤ z, and y* ≤ z/α when z < 0: starting from y₀ = z (z ≥ 0) or z/α
    (z < 0) puts σ(y₀) ≥ z, right of the root, where Newton's iterates of a convex increasing function decrease
    monotonically to it (no overshoot, no divergence). For α > 1 every inequality flips (σ(y) ≤ y, σ(y) ≤ α y), so
    y₀ = z/α (z ≥ 0) or z (z < 0) starts left of the root, from where Newton on a concave increasing function
    increases monotonically to it. α = 1 is the identity (y₀ = z is the root). Stops when every step satisfies
    |Δ| ≤ tol·(1 + |y|); tol defaults to 4·eps of the dtype. Raises ValueError for tol ≤ 0 and RuntimeError if the
    iteration does not converge within ``max_iter`` steps (it does in a handful in practice).
    """
    if tol is None:
        tol = 4.0 * torch.finfo(z.dtype).eps
    if not tol > 0:
        raise ValueError(f"tol must be a positive relative step tolerance, got {tol!r}")
    convex = torch.as_tensor(alpha, device=z.device) < 1
    y = torch.where((z < 0) == convex, z / alpha, z)
    for _ in range(max_iter):
        s = torch.sigmoid(y)
        f = smooth_leaky_relu(y, alpha) - z
        step = f / (s * (1.0 - alpha) + alpha)
        y = y - step
        if bool((step.abs() <= tol * (1.0 + y.abs())).all()):
            return y
    raise RuntimeError(
        f"inverting the smooth leaky-ReLU did not converge in {max_iter} Newton steps (tol={tol:g}); "
        "the input holds non-finite or extreme values"
    )
