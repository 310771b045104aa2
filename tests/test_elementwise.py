"""Numerical checks of the element-wise maps (relgrad_cli.elementwise) and of flows built with them, in float64
against autograd, brute-force Jacobians, bisection and the closed forms in the docstrings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from relgrad_cli import InvertibleMLP, training_loss
from relgrad_cli.elementwise import (
    ACTIVATIONS,
    FINAL_ACTIVATIONS,
    LearnedSmoothLeakyReLU,
    RQSpline,
    SmoothLeakyReLU,
    make_elementwise,
)
from relgrad_cli.relative import smooth_leaky_relu_inverse

f64 = torch.float64


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def random_spline(dim=3, bins=6, bound=2.5, seed=0, scale=1.0) -> RQSpline:
    """A spline well away from its identity start: unequal bins, derivatives far from 1."""
    torch.manual_seed(seed)
    s = RQSpline(dim, bins, bound, dtype=f64)
    with torch.no_grad():
        for p in s.parameters():
            p.normal_(0.0, scale)
    return s


def spline_points(s: RQSpline, n=200, seed=1) -> torch.Tensor:
    """(M, D) inputs: random points over [−1.4B, 1.4B] (tails included), every interior knot, ±B, and points
    1e-9 to either side of each of them."""
    g = torch.Generator().manual_seed(seed)
    dim, B = s.widths.shape[0], s.bound
    rand = (torch.rand(n, dim, generator=g, dtype=f64) * 2 - 1) * 1.4 * B
    with torch.no_grad():
        knots = s._knots(s.widths)[1]  # (D, K+1), from −B to B
    special = [knots.T + off for off in (-1e-9, 0.0, 1e-9)]
    return torch.cat(
        [rand, *special, torch.full((1, dim), 3.0 * B, dtype=f64), torch.full((1, dim), -3.0 * B, dtype=f64)]
    )


def elementwise_logdiff(module, y: torch.Tensor) -> torch.Tensor:
    """log dz/dy element-wise from autograd (the Jacobian of an element-wise map is diagonal)."""
    y = y.clone().requires_grad_()
    z, _ = module(y)
    (g,) = torch.autograd.grad(z.sum(), y)
    return g.log()


# -- rational-quadratic spline -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bins,bound,seed", [(2, 1.0, 0), (6, 2.5, 1), (8, 5.0, 2)])
def test_spline_log_derivative_matches_autograd_elementwise(bins, bound, seed):
    s = random_spline(dim=3, bins=bins, bound=bound, seed=seed)
    y = spline_points(s, seed=seed)
    assert bool((y.abs() > bound).any()) and bool((y.abs() < bound).any())
    ref = elementwise_logdiff(s, y)
    assert bool(torch.isfinite(ref).all())
    _, ld = s(y)
    assert torch.allclose(ld, ref.sum(-1), rtol=1e-11, atol=1e-11)
    # one unit at a time: every other coordinate sits far in the identity tail (log φ′ = 0 there)
    for i in range(y.shape[1]):
        yi = torch.full_like(y, 10.0 * bound)
        yi[:, i] = y[:, i]
        assert torch.allclose(s(yi)[1], ref[:, i], rtol=1e-11, atol=1e-11)
    # the spline really is non-trivial at these parameters
    assert float(ref.abs().max()) > 0.3


def test_spline_is_identity_in_the_tails():
    s = random_spline(bound=2.0)
    y = torch.tensor([[-1e3, -2.5, 2.0000001], [2.0, -2.0, 7.0]], dtype=f64)
    z, ld = s(y)
    assert torch.equal(z, y)
    assert torch.equal(ld, torch.zeros(2, dtype=f64))
    assert torch.equal(s.inverse(y), y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spline_monotone_and_continuous(seed):
    s = random_spline(dim=3, bins=7, bound=3.0, seed=seed, scale=1.5)
    t = torch.linspace(-3.6, 3.6, 20001, dtype=f64)
    with torch.no_grad():
        z, _ = s(t[:, None].expand(-1, 3).contiguous())
        _, xk, _, yk, _ = s._params()
    assert bool((z.diff(dim=0) > 0).all()), "spline not strictly increasing"
    # the value at every knot (including ±B, where the tails start) is the knot height, from both sides
    delta = 1e-9
    left, right = xk.T - delta, xk.T + delta  # (K+1, D)
    slope = torch.maximum(elementwise_logdiff(s, left).exp(), elementwise_logdiff(s, right).exp())
    with torch.no_grad():
        zl, zr = s(left)[0], s(right)[0]
    tol = 2 * delta * slope + 1e-12
    assert bool(((zl - yk.T).abs() <= tol).all())
    assert bool(((zr - yk.T).abs() <= tol).all())
    # the derivative is continuous too (C¹): from both sides it tends to the knot derivative d_k, which is 1 at ±B
    # where the identity tails start (φ″ can be ~1e5 in a narrow bin, hence the tiny offset)
    d = s._params()[4].detach().T  # (K+1, D)
    assert torch.equal(d[[0, -1]], torch.ones_like(d[[0, -1]]))
    assert float((d - 1).abs().max()) > 0.1  # interior knot derivatives are not all 1 here
    for side in (-1e-12, 1e-12):
        assert torch.allclose(elementwise_logdiff(s, xk.T + side).exp(), d, rtol=1e-5, atol=0)


def bisect_inverse(module, z: torch.Tensor, iters: int = 64) -> torch.Tensor:
    """Element-wise root of module(y) = z by bisection (the map is increasing; identity beyond ±B)."""
    span = float(z.abs().max()) + 4.0 * module.bound + 1.0
    lo, hi = torch.full_like(z, -span), torch.full_like(z, span)
    with torch.no_grad():
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = module(mid)[0] >= z
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("bins,bound,seed", [(2, 1.0, 3), (6, 2.5, 4), (8, 5.0, 5)])
def test_spline_inverse_matches_bisection_and_round_trips(bins, bound, seed):
    s = random_spline(dim=3, bins=bins, bound=bound, seed=seed)
    # targets in z-space: random over both tails and the interior, every knot height, ±B, and their neighbours
    with torch.no_grad():
        yk = s._knots(s.heights)[1]
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([(torch.rand(300, 3, generator=g, dtype=f64) * 2 - 1) * 1.4 * bound,
                   yk.T, yk.T + 1e-9, yk.T - 1e-9])  # fmt: skip
    y = s.inverse(z)
    assert torch.allclose(y, bisect_inverse(s, z), rtol=0, atol=1e-10)
    assert torch.allclose(s(y)[0], z, rtol=0, atol=1e-10)
    y2 = spline_points(s, seed=seed)
    assert torch.allclose(s.inverse(s(y2)[0]), y2, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bins,bound", [(2, 1.0), (5, 3.0), (8, 5.0), (16, 0.5)])
def test_spline_identity_at_start(bins, bound):
    s = RQSpline(4, bins, bound, dtype=f64)
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.randn(500, 4, generator=g, dtype=f64) * bound, s._knots(s.widths)[1].detach().T])
    with torch.no_grad():
        z, ld = s(y)
    assert torch.equal(z, y)
    assert torch.equal(ld, torch.zeros(y.shape[0], dtype=f64))
    assert torch.allclose(s.inverse(y), y, rtol=0, atol=1e-14)
    # reset_parameters brings a trained spline back to the identity
    with torch.no_grad():
        for p in s.parameters():
            p.normal_()
        assert not torch.allclose(s(y)[0], y)
        s.reset_parameters()
        assert torch.equal(s(y)[0], y)


def test_spline_gradcheck_parameters_and_input():
    s = random_spline(dim=2, bins=4, bound=2.0, seed=7)
    g = torch.Generator().manual_seed(7)
    y = ((torch.rand(6, 2, generator=g, dtype=f64) * 2 - 1) * 2.6).requires_grad_()  # interior and tails
    params = tuple(p.detach().clone().requires_grad_() for p in (s.widths, s.heights, s.derivatives))

    def f(y, uw, uh, ud):
        return functional_call(s, {"widths": uw, "heights": uh, "derivatives": ud}, (y,))

    assert torch.autograd.gradcheck(f, (y, *params))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bins": 1}, "bins must be an integer"),
        ({"bins": True}, "bins must be an integer"),
        ({"bins": 4.0}, "bins must be an integer"),
        ({"bound": 0.0}, "bound must be a positive number"),
        ({"bound": float("inf")}, "bound must be a positive number"),
        ({"bins": 1000, "min_size": 1e-3}, "min_size"),
    ],
)
def test_spline_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RQSpline(3, **kwargs)


# -- smooth leaky-ReLU with a learned slope ----------------------------------------------------------------------

LOG_ALPHA = torch.tensor([math.log(0.05), math.log(0.4), 0.0, math.log(1.7), math.log(8.0)], dtype=f64)


def learned(log_alpha=LOG_ALPHA) -> LearnedSmoothLeakyReLU:
    m = LearnedSmoothLeakyReLU(log_alpha.numel(), dtype=f64)
    with torch.no_grad():
        m.log_alpha.copy_(log_alpha)
    return m


def ys(n=64, dim=5, seed=0, scale=6.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=f64) * scale


def test_learned_slope_forward_formula_and_log_derivative():
    m = learned()
    y = ys()
    alpha = LOG_ALPHA.exp()
    z, ld = m(y)
    assert torch.allclose(z, alpha * y + (1 - alpha) * F.softplus(y), rtol=1e-13, atol=1e-13)
    ref = elementwise_logdiff(m, y)
    assert torch.allclose(ld, ref.sum(-1), rtol=1e-12, atol=1e-12)
    # element-wise: σ′ lies between α and 1 (increasing for α > 1 too: concave there)
    d = ref.exp()
    assert bool((d >= torch.minimum(alpha, torch.ones_like(alpha)) * (1 - 1e-12)).all())
    assert bool((d <= torch.maximum(alpha, torch.ones_like(alpha)) * (1 + 1e-12)).all())
    # identity at start
    start = LearnedSmoothLeakyReLU(5, dtype=f64)
    z0, ld0 = start(y)
    assert torch.equal(z0, y) and torch.equal(ld0, torch.zeros(y.shape[0], dtype=f64))


def test_learned_slope_gradcheck():
    m = learned()
    y = ys(n=4, scale=3.0).requires_grad_()
    la = LOG_ALPHA.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda y, la: functional_call(m, {"log_alpha": la}, (y,)), (y, la))


def test_learned_slope_closed_form_alpha_derivatives():
    """∂σ/∂α = −softplus(−y) and ∂ log σ′/∂α = (1 − sigmoid(y))/σ′, element by element (Jacobians in α)."""
    m = learned()
    y = ys(n=16)
    alpha = LOG_ALPHA.exp()

    def z_of(a):
        return functional_call(m, {"log_alpha": a.log()}, (y,))[0]

    def ld_of(a):
        return functional_call(m, {"log_alpha": a.log()}, (y,))[1]

    Jz = torch.func.jacrev(z_of)(alpha)  # (N, D, D), diagonal in the last two axes
    Jld = torch.func.jacrev(ld_of)(alpha)  # (N, D)
    dsig = alpha + (1 - alpha) * torch.sigmoid(y)
    expected_z = torch.diag_embed(-F.softplus(-y))
    assert torch.allclose(Jz, expected_z, rtol=1e-12, atol=1e-13)
    assert torch.allclose(Jld, (1 - torch.sigmoid(y)) / dsig, rtol=1e-12, atol=1e-13)


def test_learned_slope_inverse_round_trip_including_extremes():
    m = learned()  # α = 0.05, 0.4, 1, 1.7, 8
    base = torch.tensor([-1e3, -400.0, -30.0, -0.5, -1e-6, 0.0, 1e-6, 0.5, 3.0, 40.0, 1e3], dtype=f64)
    vals = base[:, None].expand(-1, 5).contiguous()
    with torch.no_grad():
        # y → z → y, with |y| up to 1e3
        y0 = torch.cat([vals, ys(n=50)])
        back = m.inverse(m(y0)[0])
        assert torch.allclose(back, y0, rtol=1e-12, atol=1e-10)
        # z → y → z, with |z| up to 1e3
        y = m.inverse(vals)
        assert bool(torch.isfinite(y).all())
        assert torch.allclose(m(y)[0], vals, rtol=1e-12, atol=1e-10)
        # α = 1 (third unit) is the identity, exactly
        assert torch.equal(y[:, 2], vals[:, 2])
        # and the inverse really depends on α per unit
        assert float((y[:, 0] - y[:, 4]).abs().max()) > 100


def test_learned_slope_forward_and_inverse_agree_past_the_softplus_threshold():
    """torch's softplus switches to y above 20 (an error of e⁻²⁰ ≈ 2e-9); the package's is exact in float64."""
    m = learned(torch.tensor([math.log(0.05), math.log(8.0)], dtype=f64))
    y = torch.tensor([[-21.0, -21.0], [-25.0, -25.0], [21.0, 21.0], [25.0, 25.0]], dtype=f64)
    alpha = m.alpha.detach()
    exact = alpha * y + (1 - alpha) * torch.logaddexp(y, torch.zeros_like(y))  # softplus without a threshold
    with torch.no_grad():
        assert torch.allclose(m(y)[0], exact, rtol=1e-14, atol=1e-13)
        assert torch.allclose(m(m.inverse(exact))[0], exact, rtol=1e-14, atol=1e-13)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0, 2.5, 20.0])
def test_smooth_leaky_relu_inverse_scalar_and_tensor_alpha(alpha):
    z = torch.tensor([[-1e3, -5.0, 0.0, 0.7, 1e3]], dtype=f64)
    for a in (alpha, torch.full((5,), alpha, dtype=f64)):
        y = smooth_leaky_relu_inverse(z, a)
        sig = alpha * y + (1 - alpha) * F.softplus(y)
        assert torch.allclose(sig, z, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("tol", [0.0, -1e-8, float("nan")])
def test_inverse_rejects_non_positive_tol(tol):
    z = torch.zeros(2, 5, dtype=f64)
    with pytest.raises(ValueError, match="tol"):
        smooth_leaky_relu_inverse(z, 0.3, tol=tol)
    with pytest.raises(ValueError, match="tol"):
        learned().inverse(z, tol=tol)
    with pytest.raises(ValueError, match="tol"):
        SmoothLeakyReLU(0.3).inverse(z, tol=tol)


def test_inverse_reports_non_convergence():
    with pytest.raises(RuntimeError, match="did not converge"):
        smooth_leaky_relu_inverse(
            torch.tensor([-1e3, 5.0], dtype=f64), torch.tensor([0.05, 8.0], dtype=f64), max_iter=1
        )


def test_fixed_smooth_leaky_relu_module_and_factory():
    m = make_elementwise("slrelu", 4, alpha=0.2)
    assert isinstance(m, SmoothLeakyReLU) and m.alpha == 0.2 and not list(m.parameters())
    y = ys(n=9, dim=4).requires_grad_()
    z, ld = m(y)
    assert torch.allclose(z, 0.2 * y + 0.8 * F.softplus(y), rtol=1e-14, atol=1e-14)
    assert torch.allclose(ld, elementwise_logdiff(m, y.detach()).sum(-1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(m.inverse(z.detach()), y.detach(), rtol=1e-12, atol=1e-12)
    ml = make_elementwise("slrelu_learned", 4, dtype=f64)
    assert isinstance(ml, LearnedSmoothLeakyReLU) and ml.log_alpha.shape == (4,) and ml.log_alpha.dtype == f64
    sp = make_elementwise("spline", 4, bins=3, bound=1.5, dtype=f64)
    assert isinstance(sp, RQSpline) and sp.widths.shape == (4, 3) and sp.derivatives.shape == (4, 2)
    assert sp.bound == 1.5
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        make_elementwise("relu", 4)


# -- flows with learnable element-wise maps ----------------------------------------------------------------------

COMBOS = [(a, f) for a in ACTIVATIONS for f in FINAL_ACTIVATIONS]
BOUND = 2.0


def perturbed_flow(dim=4, depth=3, activation="spline", final="spline", prior="gaussian", seed=0, scale=0.4,
                   map_scale=0.4, bins=5, bound=BOUND):  # fmt: skip
    """A flow away from its start: non-orthogonal W, non-zero b, and element-wise maps away from the identity."""
    torch.manual_seed(seed)
    flow = InvertibleMLP(dim, depth, alpha=0.4, prior=prior, activation=activation, final_activation=final,
                         spline_bins=bins, spline_bound=bound, dtype=f64)  # fmt: skip
    with torch.no_grad():
        for layer in flow.layers:
            layer.weight.add_(scale * torch.randn(dim, dim, dtype=f64))
            layer.bias.normal_(0.0, 0.5)
        maps = [*flow.activations, flow.final]
        for p in (p for m in maps if m is not None for p in m.parameters()):
            p.normal_(0.0, map_scale)
    return flow


def data(n=6, dim=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=f64) * 1.5


def pre_activations(flow, x):
    """Every y_k that enters an element-wise map."""
    out, h = [], x
    with torch.no_grad():
        for k, layer in enumerate(flow.layers):
            h = layer(h, "no_logdet")[0]
            m = flow.activations[k] if k < flow.depth - 1 else flow.final
            if m is not None:
                out.append(h)
                h = m(h)[0]
    return torch.cat(out) if out else torch.zeros(0)


@pytest.mark.parametrize(
    "activation,final,depth", [(a, f, 3) for a, f in COMBOS] + [("slrelu", f, 1) for f in FINAL_ACTIVATIONS]
)
def test_flow_log_prob_matches_brute_force_jacobian(activation, final, depth):
    flow = perturbed_flow(depth=depth, activation=activation, final=final, seed=depth)
    x = data(n=5)
    pre = pre_activations(flow, x)
    if "spline" in (activation if depth > 1 else "", final):  # both the spline's interior and its tails are hit
        assert bool((pre.abs() < BOUND).any()) and bool((pre.abs() > BOUND).any())
    lp = flow.log_prob(x)
    for i in range(x.shape[0]):
        J = torch.func.jacrev(lambda v: flow.transform(v[None], "no_logdet")[0][0])(x[i])
        z = flow(x[i : i + 1])[0]
        brute = flow.prior.log_prob(z).sum() + torch.linalg.slogdet(J).logabsdet
        assert abs(lp[i].item() - brute.item()) <= 1e-10 * max(1.0, abs(brute.item()))


@pytest.mark.parametrize("activation,final", COMBOS)
def test_flow_inverse_round_trip(activation, final):
    flow = perturbed_flow(dim=5, depth=3, activation=activation, final=final, seed=3)
    x = data(n=64, dim=5)
    x[0], x[1] = 6.0, -6.0
    with torch.no_grad():
        assert torch.allclose(flow.inverse(flow(x)), x, rtol=0, atol=1e-10)
        z = data(n=64, dim=5, seed=2)
        assert torch.allclose(flow(flow.inverse(z)), z, rtol=0, atol=1e-10)


def test_spline_flow_density_integrates_to_one_2d():
    flow = perturbed_flow(dim=2, depth=2, activation="spline", final="spline", seed=5, scale=0.3, map_scale=0.8)
    half, n = 10.0, 801
    t = torch.linspace(-half, half, n, dtype=f64)
    X, Y = torch.meshgrid(t, t, indexing="ij")
    grid = torch.stack([X.flatten(), Y.flatten()], 1)
    with torch.no_grad():
        p = flow.log_prob(grid).exp().reshape(n, n)
        # the grid reaches where the density is negligible
        assert float(p[[0, -1], :].max()) < 1e-12 and float(p[:, [0, -1]].max()) < 1e-12
    mass = torch.trapezoid(torch.trapezoid(p, t, dim=1), t)
    assert abs(float(mass) - 1.0) <= 1e-3


@pytest.mark.parametrize("activation,final", COMBOS)
def test_config_round_trip(activation, final):
    torch.manual_seed(0)
    flow = InvertibleMLP(3, 3, alpha=0.6, bias=True, prior="laplace", init="identity", activation=activation,
                         final_activation=final, spline_bins=3, spline_bound=1.5, dtype=f64)  # fmt: skip
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    other = InvertibleMLP(**flow.config(), dtype=f64)
    assert other.config() == flow.config()
    other.load_state_dict(flow.state_dict())
    x = data(n=8, dim=3)
    assert torch.equal(other.log_prob(x), flow.log_prob(x))
    assert flow.config()["activation"] == activation and flow.config()["final_activation"] == final


def test_sample_is_the_inverse_of_prior_draws():
    # (any seed: the softplus is exact in float64, see the threshold test above)
    flow = perturbed_flow(dim=3, depth=3, activation="slrelu_learned", final="spline", seed=10)
    x = flow.sample(200, generator=torch.Generator().manual_seed(3))
    assert x.shape == (200, 3) and x.dtype == f64
    z = flow.prior.sample((200, 3), dtype=f64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(flow(x), z, rtol=0, atol=1e-10)


def relative_from_euclidean(W, b, G_W, g_b):
    """R = G̃ W̃ᵀ W̃ with W̃ = [[W, b], [0, 1]], built on the augmented (D+1)×(D+1) matrices (as in test_flow)."""
    d = W.shape[0]
    Wt = torch.eye(d + 1, dtype=W.dtype)
    Wt[:d, :d] = W
    Wt[:d, d] = b
    Gt = torch.zeros(d, d + 1, dtype=W.dtype)
    Gt[:, :d] = G_W
    Gt[:, d] = g_b
    R = Gt @ Wt.T @ Wt
    return R[:, :d], R[:, d]


def exact_nll_grads(flow, x, how):
    flow.zero_grad()
    if how == "log_prob":
        nll = -flow.log_prob(x).mean()
    else:
        nll = training_loss(flow, x, "autograd_logdet")
    names, params = zip(*flow.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(nll, params), strict=True))


@pytest.mark.parametrize("activation,final", [c for c in COMBOS if c != ("slrelu", "none")])
@pytest.mark.parametrize("depth", [2, 3])
def test_relative_gradient_with_learnable_maps(activation, final, depth):
    flow = perturbed_flow(dim=4, depth=depth, activation=activation, final=final, seed=20 + depth)
    x = data(n=7)
    G = exact_nll_grads(flow, x, "log_prob")
    G2 = exact_nll_grads(flow, x, "autograd_logdet")
    for k in G:
        assert rel_err(G2[k], G[k]) <= 1e-12
    flow.zero_grad()
    training_loss(flow, x, "relative").backward()
    n_maps = 0
    for name, p in flow.named_parameters():
        if name.startswith("layers."):
            continue
        n_maps += 1
        assert float(G[name].abs().max()) > 1e-6  # the map's parameters do matter
        assert rel_err(p.grad, G[name]) <= 1e-12, name
    assert n_maps > 0
    for k, layer in enumerate(flow.layers):
        R_W, R_b = relative_from_euclidean(layer.weight.detach(), layer.bias.detach(),
                                           G[f"layers.{k}.weight"], G[f"layers.{k}.bias"])  # fmt: skip
        assert rel_err(layer.weight.grad, R_W) <= 1e-10
        assert rel_err(layer.bias.grad, R_b) <= 1e-10
        # and the relative gradient is not the Euclidean one at these parameters
        assert rel_err(layer.weight.grad, G[f"layers.{k}.weight"]) > 1e-3
    # the Euclidean mode leaves the Euclidean gradient everywhere
    flow.zero_grad()
    training_loss(flow, x, "euclidean").backward()
    for name, p in flow.named_parameters():
        assert rel_err(p.grad, G[name]) <= 1e-10, name
