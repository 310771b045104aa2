"""Numerical checks of the flow and of every gradient mode, in float64 against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relgrad_cli import GRADIENT_MODES, InvertibleMLP, prior_names, training_loss
from relgrad_cli.priors import get_prior

D, B = 5, 7
# the modes that train one and the same flow; self_normalizing needs a flow with learned inverses (tests/test_snf.py)
MODES = [m for m in GRADIENT_MODES if m != "self_normalizing"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def perturbed_flow(dim=D, depth=2, bias=True, prior="gaussian", alpha=0.3, seed=0, scale=0.4):
    """A flow away from its orthogonal start (non-orthogonal W, non-zero b) so no term is trivially zero."""
    torch.manual_seed(seed)
    flow = InvertibleMLP(dim, depth, alpha=alpha, bias=bias, prior=prior, dtype=torch.float64)
    with torch.no_grad():
        for layer in flow.layers:
            layer.weight.add_(scale * torch.randn(dim, dim, dtype=torch.float64))
            if layer.bias is not None:
                layer.bias.normal_(0.0, 0.5)
    return flow


def reference_forward(flow, x):
    """Independent x → z and Σ log σ′, written with plain torch ops (not the package's fused Functions)."""
    a = flow.alpha
    h, log_dsigma = x, torch.zeros(x.shape[0], dtype=x.dtype)
    for k, layer in enumerate(flow.layers):
        h = F.linear(h, layer.weight, layer.bias)
        if k < flow.depth - 1:
            log_dsigma = log_dsigma + torch.log(a + (1 - a) * torch.sigmoid(h)).sum(-1)
            h = a * h + (1 - a) * F.softplus(h)
    return h, log_dsigma


def reference_log_prob(flow, x):
    z, log_dsigma = reference_forward(flow, x)
    logdet = sum(torch.linalg.slogdet(layer.weight).logabsdet for layer in flow.layers)
    return flow.prior.log_prob(z).sum(-1) + log_dsigma + logdet


def reference_grads(flow, x, with_logdet=True):
    """Euclidean gradients of the mean NLL by autograd on the reference computation: [(G_W, g_b), ...]."""
    if with_logdet:
        nll = -reference_log_prob(flow, x).mean()
    else:
        z, log_dsigma = reference_forward(flow, x)
        nll = -(flow.prior.log_prob(z).sum(-1) + log_dsigma).mean()
    params = [p for layer in flow.layers for p in (layer.weight, layer.bias) if p is not None]
    grads = iter(torch.autograd.grad(nll, params))
    return [(next(grads), next(grads) if layer.bias is not None else None) for layer in flow.layers]


def relative_from_euclidean(W, b, G_W, g_b):
    """R = G̃ W̃ᵀ W̃ with W̃ = [[W, b], [0, 1]], built by brute force on the augmented (D+1)×(D+1) matrices."""
    d = W.shape[0]
    Wt = torch.eye(d + 1, dtype=W.dtype)
    Wt[:d, :d] = W
    Gt = torch.zeros(d, d + 1, dtype=W.dtype)
    Gt[:, :d] = G_W
    if b is not None:
        Wt[:d, d] = b
        Gt[:, d] = g_b
    R = Gt @ Wt.T @ Wt
    return R[:, :d], (R[:, d] if b is not None else None)


def data(n=B, dim=D, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) * 1.5


@pytest.mark.parametrize("prior", prior_names())
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_independent_autograd(mode, depth, bias, prior):
    flow = perturbed_flow(depth=depth, bias=bias, prior=prior, seed=depth)
    x = data()
    ref = reference_grads(flow, x, with_logdet=(mode != "no_logdet"))
    flow.zero_grad()
    training_loss(flow, x, gradient=mode).backward()
    for layer, (G_W, g_b) in zip(flow.layers, ref, strict=True):
        if mode == "relative":
            G_W, g_b = relative_from_euclidean(layer.weight.detach(), _d(layer.bias), G_W, g_b)
        assert rel_err(layer.weight.grad, G_W) <= 1e-10
        if bias:
            assert rel_err(layer.bias.grad, g_b) <= 1e-10
        else:
            assert layer.bias is None


def _d(t):
    return None if t is None else t.detach()


@pytest.mark.parametrize("mode", MODES)
def test_loss_values(mode):
    """euclidean/autograd_logdet return the exact mean NLL; relative/no_logdet the NLL without −Σ log|det W|."""
    flow = perturbed_flow(depth=3)
    x = data()
    value = training_loss(flow, x, gradient=mode).detach().item()
    with torch.no_grad():
        exact = float(-reference_log_prob(flow, x).mean())
        expected = exact if mode in ("euclidean", "autograd_logdet") else exact + float(flow.logabsdet())
        assert abs(float(flow.nll(x)) - exact) <= 1e-12 * abs(exact)
    assert abs(value - expected) <= 1e-12 * abs(expected)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_follows_loss_scale(mode):
    """The log-det part takes its coefficient from autograd: (S·loss).backward() gives S times the gradient."""
    flow = perturbed_flow(depth=2)
    x = data()
    training_loss(flow, x, gradient=mode).backward()
    g1 = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    (-3.5 * training_loss(flow, x, gradient=mode)).backward()
    for a, p in zip(g1, flow.parameters(), strict=True):
        assert rel_err(p.grad, -3.5 * a) <= 1e-12


@pytest.mark.parametrize("prior", prior_names())
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_log_prob_matches_brute_force_jacobian(depth, bias, prior):
    flow = perturbed_flow(dim=6, depth=depth, bias=bias, prior=prior, seed=10 + depth)
    x = data(n=4, dim=6)
    lp = flow.log_prob(x)
    for i in range(x.shape[0]):
        J = torch.func.jacrev(lambda v: reference_forward(flow, v[None])[0][0])(x[i])
        z = reference_forward(flow, x[i : i + 1])[0][0]
        brute = flow.prior.log_prob(z).sum() + torch.linalg.slogdet(J).logabsdet
        assert abs(lp[i].item() - brute.item()) <= 1e-10 * max(1.0, abs(brute.item()))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_inverse_round_trip(depth, dtype, tol):
    flow = perturbed_flow(dim=8, depth=depth, seed=3).to(dtype)
    x = data(n=64, dim=8).to(dtype)
    x[0] = 6.0  # far into both tails of σ
    x[1] = -6.0
    back = flow.inverse(flow(x))
    assert float((back - x).abs().max()) <= tol * max(1.0, float(x.abs().max()))


def test_activation_inverse_extremes():
    from relgrad_cli.relative import smooth_leaky_relu, smooth_leaky_relu_inverse

    for dtype in (torch.float32, torch.float64):
        y = torch.tensor([-1e3, -50.0, -1.0, 0.0, 1e-3, 2.0, 50.0, 1e3], dtype=dtype)
        for alpha in (0.01, 0.3, 0.9):
            back = smooth_leaky_relu_inverse(smooth_leaky_relu(y, alpha), alpha)
            eps = torch.finfo(dtype).eps
            assert torch.allclose(back, y, rtol=50 * eps / alpha, atol=50 * eps / alpha)


def test_fused_activation_against_autograd():
    from relgrad_cli.relative import SmoothLeakyReLU

    y = (torch.randn(6, 4, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: SmoothLeakyReLU.apply(t, 0.2)[:2], (y,))
    z, ld, _ = SmoothLeakyReLU.apply(y, 0.2)
    assert torch.allclose(z, 0.2 * y + 0.8 * F.softplus(y), rtol=1e-14, atol=0)
    assert torch.allclose(ld, torch.log(0.2 + 0.8 * torch.sigmoid(y)).sum(-1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("prior", prior_names())
def test_density_integrates_to_one_2d(prior):
    flow = perturbed_flow(dim=2, depth=3, prior=prior, seed=5, scale=0.3, alpha=0.7)
    half, n = 24.0, 2401
    t = torch.linspace(-half, half, n, dtype=torch.float64)
    X, Y = torch.meshgrid(t, t, indexing="ij")
    grid = torch.stack([X.flatten(), Y.flatten()], 1)
    with torch.no_grad():
        p = flow.log_prob(grid).exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(p, t, dim=1), t)
    assert abs(float(mass) - 1.0) <= 1e-3


@pytest.mark.parametrize("prior", prior_names())
def test_samples_consistent_with_log_prob_2d(prior):
    """Mean log p over samples ≈ −H(p), with H(p) = −∫ p log p integrated on a grid: checks sample() draws
    from the density that log_prob() evaluates."""
    flow = perturbed_flow(dim=2, depth=3, prior=prior, seed=6, scale=0.3, alpha=0.7)
    t = torch.linspace(-40, 40, 2001, dtype=torch.float64)  # wide enough for the heavier Laplace/logistic tails
    X, Y = torch.meshgrid(t, t, indexing="ij")
    with torch.no_grad():
        lp = flow.log_prob(torch.stack([X.flatten(), Y.flatten()], 1)).reshape(X.shape)
    entropy = -torch.trapezoid(torch.trapezoid(lp.exp() * lp, t, dim=1), t)
    samples = flow.sample(40000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lps = flow.log_prob(samples)
    se = float(lps.std()) / math.sqrt(lps.numel())
    assert abs(float(-lps.mean() - entropy)) <= 4 * se
    # a wrong sampler (e.g. the prior itself) is detected at this sample size
    with torch.no_grad():
        wrong = flow.log_prob(torch.randn(40000, 2, dtype=torch.float64))
    assert abs(float(-wrong.mean() - entropy)) > 4 * se


@pytest.mark.parametrize("prior", prior_names())
def test_prior_formulas(prior):
    """log_prob integrates to 1, score = d log p/dz (autograd), entropy = −∫ p log p, samples match moments."""
    p = get_prior(prior)
    t = torch.linspace(-40, 40, 400001, dtype=torch.float64)
    lp = p.log_prob(t)
    assert abs(float(torch.trapezoid(lp.exp(), t)) - 1) <= 1e-8
    assert abs(float(-torch.trapezoid(lp.exp() * lp, t)) - p.entropy) <= 1e-6
    z = torch.linspace(-5, 5, 101, dtype=torch.float64).add(0.013).requires_grad_()
    (g,) = torch.autograd.grad(p.log_prob(z).sum(), z)
    assert torch.allclose(p.score(z), g, rtol=1e-12, atol=1e-12)
    s = p.sample((200000,), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    var = float(torch.trapezoid(lp.exp() * t * t, t))
    assert abs(float(s.mean())) <= 4 * math.sqrt(var / s.numel())
    assert abs(float(s.var()) / var - 1) <= 0.02


FORBIDDEN_OPS = {"linalg", "lu", "inverse", "det", "slogdet", "logdet", "solve", "cholesky", "qr", "svd", "eig"}


def record_step_ops(mode: str, dim: int = 16, batch: int = 5) -> list[tuple[str, list[tuple[int, ...]]]]:
    """Every aten op (name, tensor argument shapes) of one forward+backward in ``mode``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    flow = perturbed_flow(dim=dim, depth=3)
    x = data(n=batch, dim=dim)
    seen: list[tuple[str, list[tuple[int, ...]]]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            seen.append((str(func).split(".")[1], shapes))  # "aten.mm.default" -> "mm"
            return func(*args, **(kwargs or {}))

    with Record():
        training_loss(flow, x, gradient=mode).backward()
    return seen


def linalg_ops(seen) -> list[str]:
    return [n for n, _ in seen if FORBIDDEN_OPS & set(n.strip("_").split("_"))]


def test_relative_step_has_no_inverse_determinant_or_cubic_product():
    """Record every aten op of a relative-mode forward+backward: no linalg op, no D×D·D×D matmul."""
    dim = 16
    seen = record_step_ops("relative", dim=dim)
    assert not linalg_ops(seen)
    mms = [shapes for n, shapes in seen if n in ("mm", "addmm", "bmm", "matmul")]
    assert mms, "expected matrix products in the step"
    for shapes in mms:
        mats = [s for s in shapes if len(s) == 2]
        assert not all(s == (dim, dim) for s in mats[-2:]), f"D×D·D×D product {shapes}"
    # the detector does see the O(D³) work of the baselines
    assert linalg_ops(record_step_ops("euclidean")) and linalg_ops(record_step_ops("autograd_logdet"))


def test_training_reduces_exact_nll():
    """A few hundred Adam steps on relative gradients fit linearly mixed Laplace sources."""
    torch.manual_seed(0)
    dim = 4
    A = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))[0] @ torch.diag(
        torch.tensor([2.0, 1.0, 0.7, 0.5], dtype=torch.float64)
    )
    s = torch.distributions.Laplace(0.0, 1.0).sample((4000, dim)).double()
    x = s @ A.T
    flow = InvertibleMLP(dim, 1, prior="laplace", dtype=torch.float64)
    opt = torch.optim.Adam(flow.parameters(), lr=0.02)
    start = flow.nll(x).item()
    for i in range(300):
        batch = x[(i * 100) % 4000 : (i * 100) % 4000 + 100]
        opt.zero_grad()
        training_loss(flow, batch, "relative").backward()
        opt.step()
    true_nll = float(-(get_prior("laplace").log_prob(s).sum(-1)).mean() + torch.linalg.slogdet(A).logabsdet)
    end = flow.nll(x).item()
    assert end < start - 0.5
    assert end - true_nll < 0.05 * dim


def test_autocast_bfloat16_keeps_parameter_gradients_in_float32():
    flow = perturbed_flow(dim=8, depth=2).float()
    x = data(n=16, dim=8).float()
    training_loss(flow, x, "relative").backward()
    ref = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = training_loss(flow, x, "relative")
    loss.backward()
    for r, p in zip(ref, flow.parameters(), strict=True):
        assert p.grad.dtype == torch.float32
        assert rel_err(p.grad, r) < 0.1


def test_state_dict_round_trip():
    flow = perturbed_flow(depth=3)
    other = InvertibleMLP(D, 3, dtype=torch.float64)
    other.load_state_dict(flow.state_dict())
    x = data()
    assert torch.equal(other.log_prob(x), flow.log_prob(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu(mode):
    flow = perturbed_flow(depth=2)
    x = data()
    training_loss(flow, x, mode).backward()
    cuda = perturbed_flow(depth=2).cuda()
    training_loss(cuda, x.cuda(), mode).backward()
    for a, b in zip(flow.parameters(), cuda.parameters(), strict=True):
        assert rel_err(b.grad.cpu(), a.grad) <= 1e-10


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: InvertibleMLP(4, 0), "depth must be an integer ≥ 1"),
        (lambda: InvertibleMLP(4, 2, alpha=1.0), "alpha must lie strictly between 0 and 1"),
        (lambda: InvertibleMLP(4, 2, alpha=0.0), "alpha must lie strictly between 0 and 1"),
        (lambda: InvertibleMLP(0, 2), "dim must be a positive integer"),
        (lambda: InvertibleMLP(4, 2, dtype=torch.float16), "float16 flows are not supported.*autocast"),
        (lambda: InvertibleMLP(4).log_prob(torch.zeros(0, 4)), "empty batch"),
        (lambda: InvertibleMLP(4).nll(torch.zeros(0, 4)), "empty batch"),
        (lambda: InvertibleMLP(4).log_prob(torch.zeros(2, 4, dtype=torch.complex64)), "complex"),
        (lambda: InvertibleMLP(4, 2, prior="cauchy"), "unknown prior 'cauchy'; choose one of: gaussian, laplace"),
        (lambda: InvertibleMLP(4, 2, init="xavier"), "unknown init 'xavier'"),
        (lambda: training_loss(InvertibleMLP(4), torch.zeros(2, 4), "natural"), "unknown gradient mode 'natural'"),
        (lambda: InvertibleMLP(4).log_prob(torch.zeros(2, 5)), r"shape \(batch, 4\).*got \(2, 5\)"),
        (lambda: InvertibleMLP(4).log_prob(torch.zeros(4)), r"shape \(batch, 4\).*got \(4,\)"),
        (
            lambda: training_loss(InvertibleMLP(4), torch.tensor([[0, 1, 2, float("nan")]])),
            "NaN or infinite.*rows \\[0\\]",
        ),
        (lambda: InvertibleMLP(4).sample(0), "number of samples must be a positive integer"),
    ],
)
def test_bad_input_raises_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_torch_func_jacobian_through_the_flow():
    """The fused custom Functions support torch.func transforms (jacrev, vmap)."""
    flow = perturbed_flow(dim=4, depth=3)
    x = data(n=3, dim=4)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: flow.transform(v[None], "no_logdet")[0][0]))(x)
    for i in range(3):
        ref = torch.func.jacrev(lambda v: reference_forward(flow, v[None])[0][0])(x[i])
        assert torch.allclose(jac[i], ref, rtol=1e-12, atol=1e-12)


def test_relative_tensor_branch_matches_the_cpu_fast_path(monkeypatch):
    """On CUDA the log-det coefficient stays a tensor (mm + addcmul_); on the CPU it is folded into addmm.
    Both give the same relative gradient."""
    import relgrad_cli.relative as rel

    flow = perturbed_flow(depth=3)
    x = data()
    training_loss(flow, x, "relative").backward()
    fast = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    monkeypatch.setattr(rel, "_host_scalar", lambda c: None)
    (2.5 * training_loss(flow, x, "relative")).backward()
    for a, p in zip(fast, flow.parameters(), strict=True):
        assert rel_err(p.grad, 2.5 * a) <= 1e-13


@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
def test_per_sample_relative_gradients_with_vmap():
    """torch.func.vmap over grad works in relative mode; the mean of per-sample gradients is the batch gradient."""
    flow = perturbed_flow(depth=2)
    x = data()
    module = _LossModule(flow)
    params = {k: v.detach() for k, v in module.named_parameters()}

    def per_sample(p, xi):
        return torch.func.functional_call(module, p, (xi[None],))

    grads = torch.func.vmap(torch.func.grad(per_sample), in_dims=(None, 0))(params, x)
    training_loss(flow, x, "relative").backward()
    for k, p in module.named_parameters():
        assert rel_err(grads[k].mean(0), p.grad) <= 1e-12


class _LossModule(torch.nn.Module):
    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, x):
        return training_loss(self.flow, x, "relative")


def test_laplace_sampling_never_returns_infinity(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype")))
    s = get_prior("laplace").sample((4,), dtype=torch.float32)
    assert bool(torch.isfinite(s).all())
