"""Synthetic ICA ground truth and the evaluation metrics, checked against direct computations in float64."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.data.ica import true_flow
from relgrad_cli.metrics import amari_distance, mean_and_2se, mean_corr_coef
from relgrad_cli.priors import get_prior


def test_amari_distance_formula():
    rng = np.random.default_rng(0)
    P = rng.standard_normal((5, 5))
    Q = P**2
    direct = 0.0
    for i in range(5):
        direct += sum(Q[i, j] for j in range(5)) / max(Q[i, j] for j in range(5)) - 1
    for j in range(5):
        direct += sum(Q[i, j] for i in range(5)) / max(Q[i, j] for i in range(5)) - 1
    assert amari_distance(P) == pytest.approx(direct / 10, rel=1e-14)
    perm = np.eye(5)[[2, 0, 4, 1, 3]] * np.array([3.0, -0.5, 2.0, 1.0, -7.0])
    assert amari_distance(perm) == 0.0
    assert amari_distance(np.ones((5, 5))) == pytest.approx(4.0)  # the maximum, D − 1


def test_mean_corr_coef_recovers_permuted_scaled_sources():
    rng = np.random.default_rng(1)
    s = rng.laplace(size=(2000, 4))
    z = s[:, [3, 1, 0, 2]] * np.array([2.0, -1.0, 0.5, -3.0]) + 1.0
    assert mean_corr_coef(z, s) == pytest.approx(1.0, abs=1e-12)
    # brute force over all matchings agrees with the Hungarian solution on a noisy estimate
    zn = z + rng.standard_normal(z.shape) * 2
    c = np.abs(np.corrcoef(zn, s, rowvar=False)[:4, 4:])
    best = max(np.mean([c[i, p[i]] for i in range(4)]) for p in itertools.permutations(range(4)))
    assert mean_corr_coef(zn, s) == pytest.approx(best, rel=1e-12)
    assert mean_corr_coef(rng.standard_normal((2000, 4)), s) < 0.1


def test_mean_and_2se():
    v = np.array([1.0, 2.0, 4.0, 7.0])
    m, e = mean_and_2se(v)
    assert m == 3.5
    assert e == pytest.approx(2 * math.sqrt(((v - 3.5) ** 2).sum() / 3) / 2)


@pytest.mark.parametrize("mixing", ["linear", "mlp"])
@pytest.mark.parametrize("source", ["laplace", "logistic"])
def test_ica_truth_is_exact(mixing, source):
    opts = dict(dim=5, n_train=50, n_val=20, n_test=300, mixing=mixing, source=source, condition=4.0, seed=3)
    ds = load_dataset("ica", "unused", **opts)
    assert ds.train.shape == (50, 5) and ds.val.shape == (20, 5) and ds.test.shape == (300, 5)
    f = true_flow(5, mixing, 2, 0.3, 4.0, source, 3)
    x = torch.from_numpy(ds.test)
    with torch.no_grad():
        s = f(x)
    assert np.allclose(s.numpy(), ds.truth.test_sources, atol=1e-9)  # the stored sources generated the data
    for layer in f.layers:
        assert np.linalg.cond(layer.weight.detach().numpy()) == pytest.approx(4.0, rel=1e-9)
    if mixing == "linear":
        A = ds.truth.mixing
        direct = get_prior(source).log_prob(torch.from_numpy(ds.test @ np.linalg.inv(A).T)).sum(-1).numpy()
        direct -= np.linalg.slogdet(A)[1]  # log p(x) = Σ log p_s(A⁻¹x) − log|det A|
        assert np.allclose(ds.truth.test_log_prob, direct, atol=1e-9)
        assert np.allclose(ds.test, ds.truth.test_sources @ A.T, atol=1e-9)
    else:
        # change of variables through the mixing network g = f⁻¹, Jacobian by autograd on the forward map
        for i in range(3):
            J = torch.func.jacrev(lambda v: f.transform(v[None], "no_logdet")[0][0])(x[i])
            lp = get_prior(source).log_prob(s[i]).sum() + torch.linalg.slogdet(J).logabsdet
            assert lp.item() == pytest.approx(float(ds.truth.test_log_prob[i]), abs=1e-9)


def test_ica_is_deterministic_from_the_seed():
    a = load_dataset("ica", "unused", dim=3, n_train=10, n_val=5, n_test=5, seed=1)
    b = load_dataset("ica", "unused", dim=3, n_train=10, n_val=5, n_test=5, seed=1)
    c = load_dataset("ica", "unused", dim=3, n_train=10, n_val=5, n_test=5, seed=2)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert not np.allclose(a.train, c.train)
    assert not np.allclose(a.train[:5], a.val)  # the splits are different streams


@pytest.mark.parametrize(
    "opts, words",
    [
        ({"mixing": "quadratic"}, "unknown ICA mixing 'quadratic'"),
        ({"dim": 0}, "data.dim must be a positive integer"),
        ({"condition": 0.5}, "data.condition"),
        ({"source": "cauchy"}, "data.source: unknown prior 'cauchy'"),
    ],
)
def test_ica_bad_options(opts, words):
    with pytest.raises(DatasetError, match=words):
        load_dataset("ica", "unused", **opts)


def test_unknown_dataset_and_file_root(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; choose one of: bsds300, digits"):
        load_dataset("nope", tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_dataset("ica", tmp_path / "f")
