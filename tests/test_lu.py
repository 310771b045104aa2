"""The LU-parametrized dense layer and flow, and the zuko peers' wrapper, checked in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relgrad_cli import InvertibleMLP
from relgrad_cli.lu import LULinear

f64 = torch.float64


def perturbed_lu_flow(dim=4, depth=2, activation="spline", final="spline", seed=0):
    torch.manual_seed(seed)
    flow = InvertibleMLP(dim, depth, dense="lu", activation=activation, final_activation=final, dtype=f64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_set_weight_factorizes_exactly_and_forward_matches_the_dense_layer():
    torch.manual_seed(0)
    layer = LULinear(6, dtype=f64)
    w = torch.randn(6, 6, dtype=f64)
    layer.set_weight(w)
    with torch.no_grad():
        layer.bias.normal_()
        assert torch.allclose(layer.weight, w, atol=1e-13)
        x = torch.randn(9, 6, dtype=f64)
        y, ld = layer(x)
        assert torch.allclose(y, x @ w.T + layer.bias, atol=1e-12)
        assert float(ld) == pytest.approx(float(torch.linalg.slogdet(w).logabsdet), abs=1e-12)
        assert float(layer.logabsdet()) == pytest.approx(float(ld))
        assert torch.allclose(layer.inverse(y), x, atol=1e-11)


def test_parameters_stay_triangular_in_effect_and_the_log_det_follows_them():
    """Arbitrary values in the masked halves of lower/upper change nothing; log|det W| = Σ log_s after any update."""
    torch.manual_seed(1)
    layer = LULinear(5, dtype=f64)
    with torch.no_grad():
        for p in (layer.lower, layer.upper, layer.log_s):
            p.add_(torch.randn_like(p))
        w = layer.weight
        assert float(layer.logabsdet()) == pytest.approx(float(torch.linalg.slogdet(w).logabsdet), abs=1e-12)
        before = layer(torch.eye(5, dtype=f64))[0]
        layer.lower.add_(torch.triu(torch.randn(5, 5, dtype=f64)))  # the diagonal and above are not used
        layer.upper.add_(torch.tril(torch.randn(5, 5, dtype=f64)))
        assert torch.equal(layer(torch.eye(5, dtype=f64))[0], before)


@pytest.mark.parametrize("activation,final", [("slrelu", "none"), ("spline", "spline"), ("slrelu_learned", "none")])
def test_lu_flow_log_prob_matches_the_brute_force_jacobian(activation, final):
    flow = perturbed_lu_flow(activation=activation, final=final)
    x = torch.randn(5, 4, dtype=f64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        lp = flow.log_prob(x)
    for i in range(5):
        jac = torch.func.jacrev(lambda v: flow(v.unsqueeze(0)).squeeze(0))(x[i])
        z = flow(x[i : i + 1])
        ref = flow.prior.log_prob(z).sum() + torch.linalg.slogdet(jac).logabsdet
        assert float(lp[i]) == pytest.approx(float(ref.detach()), abs=1e-10)
    with torch.no_grad():
        assert torch.allclose(flow.inverse(flow(x)), x, atol=1e-10)


def test_lu_flow_density_integrates_to_one_in_2d():
    flow = perturbed_lu_flow(dim=2, depth=2)
    edge = torch.linspace(-12, 12, 801, dtype=f64)
    gx, gy = torch.meshgrid(edge, edge, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([gx.ravel(), gy.ravel()], 1)).exp()
    cell = float(edge[1] - edge[0]) ** 2
    assert float(p.sum()) * cell == pytest.approx(1.0, abs=2e-3)


def test_training_loss_of_an_lu_flow_is_the_exact_nll_in_every_mode():
    """The LU layer's log-det is exact and cheap, so the loss and its gradient are the exact ones whatever the
    configured gradient mode (which concerns dense W only)."""
    x = torch.randn(16, 4, dtype=f64, generator=torch.Generator().manual_seed(3))
    ref = perturbed_lu_flow()
    exact = -ref.log_prob(x).mean()
    grads = torch.autograd.grad(exact, list(ref.parameters()))
    for mode in ("relative", "euclidean", "autograd_logdet"):
        flow = perturbed_lu_flow()
        flow.gradient = mode
        loss = flow.training_loss(x)
        assert float(loss.detach()) == pytest.approx(float(exact.detach()), abs=1e-12)
        loss.backward()
        for p, g in zip(flow.parameters(), grads, strict=True):
            assert torch.allclose(p.grad, g, atol=1e-12)


def test_lu_flow_starts_at_the_gaussian():
    from relgrad_cli.gaussian import fit_gaussian

    rng = np.random.default_rng(0)
    data = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5)) + 2.0
    flow = InvertibleMLP(5, 3, dense="lu", init="data", activation="spline", final_activation="spline", dtype=f64)
    fit = flow.init_from_data(data)
    test = rng.standard_normal((50, 5)) @ rng.standard_normal((5, 5))
    with torch.no_grad():
        lp = flow.log_prob(torch.as_tensor(test)).numpy()
    assert np.allclose(lp, fit_gaussian(data).log_prob(test), atol=1e-9)
    assert fit.shrinkage == 0.0


@pytest.mark.parametrize("kind", ["maf", "realnvp", "nsf"])
def test_zuko_wrapper_adds_an_exact_standardisation(kind):
    from relgrad_cli.peers import ZukoFlow

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    data = rng.standard_normal((400, 3)) * np.array([0.1, 2.0, 5.0]) + np.array([1.0, -3.0, 0.5])
    flow = ZukoFlow(kind, 3, transforms=2, hidden_features=[8, 8], dtype=f64)
    fit = flow.init_from_data(data)
    assert torch.allclose(flow.shift, torch.as_tensor(fit.mean))
    assert torch.allclose(flow.log_scale.exp() ** 2, torch.tensor(np.diag(fit.cov)))
    x = torch.as_tensor(data[:7])
    with torch.no_grad():
        u = (x - flow.shift) / flow.log_scale.exp()
        expected = flow.flow().log_prob(u) - flow.log_scale.sum()  # change of variables through x ↦ u
        assert torch.allclose(flow.log_prob(x), expected, atol=1e-12)
        # and the density is normalised: a 3-D Monte Carlo check through samples would be weak; check the Jacobian
        jac = torch.func.jacrev(lambda v: (v - flow.shift) / flow.log_scale.exp())(x[0])
        assert float(torch.linalg.slogdet(jac).logabsdet) == pytest.approx(-float(flow.log_scale.sum()))
    loss = flow.training_loss(x)
    assert float(loss.detach()) == pytest.approx(-float(expected.mean()))
    state = torch.get_rng_state()
    a = flow.sample(5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, 3) and torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(flow.sample(5, generator=torch.Generator().manual_seed(0)), a)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        flow.log_prob(torch.zeros(2, 4, dtype=f64))
    assert math.isfinite(float(loss.detach()))


def test_an_lu_training_step_never_forms_w(monkeypatch):
    """W = P L U is an O(D³) product: the step (and the flow's dtype and device) must not form it."""
    torch.manual_seed(0)
    flow = InvertibleMLP(6, 2, dense="lu", final_activation="spline", dtype=f64)
    x = torch.randn(10, 6, dtype=f64)
    expected = float(flow.training_loss(x).detach())

    def forbidden(self):
        raise AssertionError("LULinear.weight formed in a training step")

    monkeypatch.setattr(LULinear, "weight", property(forbidden))
    assert flow.dtype == f64 and flow.device.type == "cpu"
    loss = flow.training_loss(x)
    loss.backward()
    assert float(loss.detach()) == expected
