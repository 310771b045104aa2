"""The closed-form Gaussian fit (relgrad_cli.gaussian) and the flow's data-dependent start built on it, in float64
against scipy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.covariance import ledoit_wolf

from relgrad_cli import InvertibleMLP
from relgrad_cli.gaussian import GaussianFit, fit_gaussian

f64 = torch.float64


def correlated(n=400, d=5, seed=0, draw=0, shift=3.0) -> np.ndarray:
    """Rows with a non-zero mean and a full, unevenly scaled covariance; the distribution is set by ``seed``,
    the rows by ``draw`` (so train and test rows share a distribution)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) @ np.diag(np.geomspace(0.3, 3.0, d))
    mean = shift * rng.normal(size=d)
    return np.random.default_rng([seed, draw + 1]).normal(size=(n, d)) @ mix.T + mean


def mle(x):
    return x.mean(0), np.cov(x, rowvar=False, bias=True)


# -- fit_gaussian ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [65536, 7])
def test_log_prob_matches_scipy(block):
    x = correlated()
    fit = fit_gaussian(x, block=block)
    mu, cov = mle(x)
    assert fit.shrinkage == 0.0
    np.testing.assert_allclose(fit.mean, mu, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-12, atol=1e-13)
    test = correlated(n=50, draw=1)
    ref = multivariate_normal(mu, cov).logpdf(test)
    np.testing.assert_allclose(fit.log_prob(test, block=block), ref, rtol=1e-11, atol=1e-11)
    # the unbiased (1/(N−1)) covariance gives a different answer: the test tells them apart
    assert np.abs(multivariate_normal(mu, np.cov(x, rowvar=False)).logpdf(test) - ref).max() > 1e-4


def test_fit_is_the_maximum_likelihood_estimate():
    """The mean log-likelihood on the training rows is −(D/2)(1 + log 2π) − ½ log det Σ, and any perturbation of
    (μ, Σ) lowers it."""
    x = correlated(n=300, d=4, seed=2)
    fit = fit_gaussian(x)
    d = x.shape[1]
    best = fit.log_prob(x).mean()
    assert abs(best - (-0.5 * d * (1 + np.log(2 * np.pi)) - 0.5 * np.linalg.slogdet(fit.cov)[1])) <= 1e-11
    rng = np.random.default_rng(0)
    for _ in range(5):
        e = rng.normal(size=(d, d)) * 1e-3
        other = GaussianFit(fit.mean + rng.normal(size=d) * 1e-3, fit.cov + e @ e.T)
        assert other.log_prob(x).mean() < best


def test_whitening_is_symmetric_zca():
    x = correlated(n=500, d=6, seed=3)
    fit = fit_gaussian(x)
    w, b = fit.whitening()
    np.testing.assert_allclose(w, w.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w @ fit.cov @ w.T, np.eye(6), rtol=0, atol=1e-10)
    assert np.linalg.eigvalsh(w).min() > 0  # the positive square root Σ^{-1/2}, not another symmetric factor
    np.testing.assert_allclose(w @ w, np.linalg.inv(fit.cov), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b, -w @ fit.mean, rtol=1e-12, atol=1e-12)
    white = x @ w.T + b
    np.testing.assert_allclose(white.mean(0), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(6), rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["n_below_d", "n_equals_d", "duplicated_column", "constant_column"])
def test_singular_covariance_gets_ledoit_wolf_shrinkage(case):
    if case == "n_below_d":
        x = correlated(n=5, d=8, seed=4)
    elif case == "n_equals_d":
        x = correlated(n=6, d=6, seed=5)
    elif case == "duplicated_column":
        x = correlated(n=300, d=5, seed=6)
        x = np.concatenate([x, x[:, 1:2]], axis=1)
    else:
        x = correlated(n=300, d=5, seed=7)
        x[:, 2] = 1.5
    mu, cov = mle(x)
    assert np.linalg.eigvalsh(cov).min() <= 1e-12 * np.linalg.eigvalsh(cov).max()
    fit = fit_gaussian(x)
    assert fit.shrinkage > 0
    lam = np.linalg.eigvalsh(fit.cov)
    assert lam.min() > 0 and np.isfinite(fit.cov).all()
    np.linalg.cholesky(fit.cov)
    np.testing.assert_allclose(fit.mean, mu, rtol=1e-13, atol=1e-13)
    # scikit-learn's Ledoit–Wolf estimate: (1 − ρ) S + ρ (tr S / D) I with the same ρ
    shrunk, rho = ledoit_wolf(x)
    assert abs(fit.shrinkage - max(rho, 1e-6)) <= 1e-12
    d = x.shape[1]
    expected = (1 - fit.shrinkage) * cov + fit.shrinkage * np.trace(cov) / d * np.eye(d)
    np.testing.assert_allclose(fit.cov, expected, rtol=1e-12, atol=1e-14)
    if rho > 1e-6:
        np.testing.assert_allclose(fit.cov, shrunk, rtol=1e-10, atol=1e-14)
    test = fit.mean + np.random.default_rng(8).normal(size=(20, d))
    lp = fit.log_prob(test)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(lp, multivariate_normal(fit.mean, fit.cov).logpdf(test), rtol=1e-10, atol=1e-10)
    w, _ = fit.whitening()
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w @ fit.cov @ w.T, np.eye(d), rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (5,), (2, 2, 2)])
def test_fewer_than_two_rows_or_not_a_matrix_raises(shape):
    with pytest.raises(ValueError, match="N ≥ 2 rows"):
        fit_gaussian(np.ones(shape))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_two_rows_fit_and_non_finite_data_raise():
    # N = D = 2: rank 1. The two centred rows are ±v, so Ledoit–Wolf's ρ is 0; the floor ρ = 1e-6 keeps Σ
    # positive definite (eigenvalues ρ·tr S/D and (1 − ρ)·2 + ρ·tr S/D, with tr S = 2)
    x2 = np.array([[0.0, 1.0], [2.0, -1.0]])
    assert ledoit_wolf(x2)[1] == 0
    fit = fit_gaussian(x2)
    assert fit.shrinkage == 1e-6
    np.testing.assert_allclose(np.linalg.eigvalsh(fit.cov), [1e-6, 2 - 1e-6], rtol=1e-9)
    assert np.isfinite(fit.log_prob(x2)).all()
    x = correlated(n=20, d=3)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[4, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            fit_gaussian(y)


# -- the flow's data-dependent start -----------------------------------------------------------------------------

CASES = [
    (kind, depth, final) for kind in ("slrelu_learned", "spline") for depth in (1, 2, 3) for final in (False, True)
]


def scrambled_flow(dim, depth, activation, final_activation, seed=0):
    """A flow away from any start (so init_from_data has to reset every piece)."""
    torch.manual_seed(seed)
    flow = InvertibleMLP(dim, depth, prior="gaussian", init="data", activation=activation,
                         final_activation=final_activation, spline_bins=6, spline_bound=2.0, dtype=f64)  # fmt: skip
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("activation,depth,final", CASES)
def test_init_from_data_is_the_fitted_gaussian(activation, depth, final):
    x = correlated(n=400, d=5, seed=depth)
    flow = scrambled_flow(5, depth, activation, activation if final else "none", seed=depth)
    test = torch.as_tensor(correlated(n=60, d=5, seed=depth, draw=1))
    assert np.abs(flow.log_prob(test).detach().numpy() - fit_gaussian(x).log_prob(test.numpy())).max() > 1e-2
    fit = flow.init_from_data(torch.as_tensor(x))
    assert isinstance(fit, GaussianFit)
    with torch.no_grad():
        lp = flow.log_prob(test).numpy()
        np.testing.assert_allclose(lp, fit.log_prob(test.numpy()), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(lp, multivariate_normal(*mle(x)).logpdf(test.numpy()), rtol=1e-10, atol=1e-10)
        white = flow.layers[0](torch.as_tensor(x))[0].numpy()
    np.testing.assert_allclose(white.mean(0), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(5), rtol=0, atol=1e-10)


def test_init_from_data_numpy_fit_reuse_and_shrinkage():
    x = correlated(n=300, d=4, seed=11)
    test = torch.as_tensor(correlated(n=40, d=4, seed=11, draw=1))
    a = scrambled_flow(4, 2, "spline", "slrelu_learned", seed=1)
    b = scrambled_flow(4, 2, "spline", "slrelu_learned", seed=2)
    fit = a.init_from_data(x)  # numpy rows
    assert b.init_from_data(fit) is fit  # a fit passed in is reused
    with torch.no_grad():
        assert torch.equal(a.log_prob(test), b.log_prob(test))
    # with fewer rows than dimensions the start is the shrunk Gaussian, still exactly
    few = correlated(n=3, d=4, seed=11, draw=2)
    fit = a.init_from_data(few)
    assert fit.shrinkage > 0
    with torch.no_grad():
        np.testing.assert_allclose(a.log_prob(test).numpy(), fit.log_prob(test.numpy()), rtol=1e-10, atol=1e-10)


def test_fixed_slope_flow_is_gaussian_only_at_depth_one():
    """The paper's fixed σ is not the identity: after init_from_data only a single-layer flow is the Gaussian, so
    the equality above is not automatic."""
    x = correlated(n=300, d=4, seed=14)
    test = torch.as_tensor(correlated(n=40, d=4, seed=14, draw=1))
    for depth, gaussian in ((1, True), (2, False)):
        flow = scrambled_flow(4, depth, "slrelu", "none", seed=3)
        fit = flow.init_from_data(x)
        with torch.no_grad():
            gap = np.abs(flow.log_prob(test).numpy() - fit.log_prob(test.numpy())).max()
        assert (gap <= 1e-10) if gaussian else (gap > 1e-2)


def test_init_from_data_rejects_mismatches():
    flow = InvertibleMLP(3, 2, init="data", dtype=f64)
    with pytest.raises(ValueError, match="4-dimensional, this flow is 3-dimensional"):
        flow.init_from_data(correlated(n=50, d=4))
    no_bias = InvertibleMLP(3, 2, bias=False, init="data", dtype=f64)
    with pytest.raises(ValueError, match="needs bias=True"):
        no_bias.init_from_data(correlated(n=50, d=3))
