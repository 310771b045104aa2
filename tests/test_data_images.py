"""Dequantization, the logit transform and pixel-space densities, in float64 against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logit

from relgrad_cli.data import images
from relgrad_cli.data.images import (
    bits_per_dim,
    dequantize_logit,
    load_digits,
    pixel_log_prob,
    to_unit_pixels,
)

ALPHA = 1e-6


def v_to_x(v: torch.Tensor, alpha: float, levels: int) -> torch.Tensor:
    """The map pixel space → logit space written directly: x = logit(α + (1 − 2α)·v/L)."""
    p = alpha + (1 - 2 * alpha) * v / levels
    return torch.log(p) - torch.log1p(-p)


def test_dequantize_matches_the_formula_and_recovers_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 17, size=(40, 6))
    x = dequantize_logit(pixels, 17, ALPHA, np.random.default_rng(5), dtype=np.float64)
    eps = np.random.default_rng(5).random(pixels.shape)  # the same stream, drawn independently
    expected = logit(ALPHA + (1 - 2 * ALPHA) * (pixels + eps) / 17)
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)
    u = to_unit_pixels(x, ALPHA)
    np.testing.assert_array_equal(np.floor(u * 17).astype(int), pixels)
    assert dequantize_logit(pixels, 17, ALPHA, np.random.default_rng(5)).dtype == np.float32


def test_dequantize_blocks_give_the_same_stream(monkeypatch):
    pixels = np.random.default_rng(1).integers(0, 256, size=(23, 5))
    whole = dequantize_logit(pixels, 256, ALPHA, np.random.default_rng(2), dtype=np.float64)
    monkeypatch.setattr(images, "_BLOCK_ROWS", 4)
    blocked = dequantize_logit(pixels, 256, ALPHA, np.random.default_rng(2), dtype=np.float64)
    np.testing.assert_array_equal(whole, blocked)


def test_dequantize_is_seeded():
    pixels = np.random.default_rng(1).integers(0, 256, size=(10, 5))
    a = dequantize_logit(pixels, 256, ALPHA, np.random.default_rng(3))
    b = dequantize_logit(pixels, 256, ALPHA, np.random.default_rng(3))
    c = dequantize_logit(pixels, 256, ALPHA, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("bad", [-1, 17])
def test_dequantize_rejects_pixels_out_of_range(bad):
    with pytest.raises(ValueError, match="0..16"):
        dequantize_logit(np.array([[0, bad]]), 17, ALPHA, np.random.default_rng(0))


@pytest.mark.parametrize("levels,alpha", [(256, 1e-6), (17, 0.05)])
def test_pixel_log_prob_equals_autograd_change_of_variables(levels, alpha):
    """log p_v(v) − log p_x(x) = log|det ∂x/∂v|, with the full Jacobian of v → x from autograd."""
    torch.manual_seed(0)
    n, d = 6, 5
    v = torch.rand(n, d, dtype=torch.float64) * levels
    x = v_to_x(v, alpha, levels)
    log_prob = torch.randn(n, dtype=torch.float64)
    expected = torch.stack(
        [
            log_prob[i]
            + torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda r: v_to_x(r, alpha, levels), v[i]))[1]
            for i in range(n)
        ]
    )
    got_torch = pixel_log_prob(x, log_prob, alpha, levels)
    got_numpy = pixel_log_prob(x.numpy(), log_prob.numpy(), alpha, levels)
    assert isinstance(got_torch, torch.Tensor) and isinstance(got_numpy, np.ndarray)
    torch.testing.assert_close(got_torch, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_numpy, expected.numpy(), rtol=1e-10, atol=1e-10)


def test_pixel_log_prob_equals_finite_differences():
    rng = np.random.default_rng(3)
    levels, alpha, h = 256, 1e-6, 1e-5
    v = rng.uniform(1.0, 255.0, size=(4, 7))

    def f(r):
        return logit(alpha + (1 - 2 * alpha) * r / levels)

    fd = np.log((f(v + h) - f(v - h)) / (2 * h)).sum(axis=1)
    log_prob = rng.normal(size=4)
    np.testing.assert_allclose(pixel_log_prob(f(v), log_prob, alpha, levels) - log_prob, fd, rtol=1e-7)


def test_pixel_log_prob_sums_over_image_axes_and_stays_differentiable():
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    lp = torch.zeros(3, dtype=torch.float64)
    flat = pixel_log_prob(x.reshape(3, 8), lp, ALPHA, 256)
    torch.testing.assert_close(pixel_log_prob(x, lp, ALPHA, 256), flat)
    mixed = pixel_log_prob(x.float(), lp, ALPHA, 256)  # float32 x, float64 log-density: the wider dtype wins
    assert mixed.dtype == torch.float64
    pixel_log_prob(x, lp, ALPHA, 256).sum().backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x) - torch.sigmoid(-x))  # d/dx [softplus(x) + softplus(−x)]


@pytest.mark.parametrize("levels", [256, 17])
def test_bits_per_dim_of_uniform_pixels_is_log2_levels(levels):
    """With α = 0, x ~ standard logistic makes u = sigmoid(x) uniform, so v = L·u is uniform on [0, L)^D:
    −log p_v = D·log L exactly, i.e. log2(L) bits per dimension. log p_x is the logistic density in closed form."""
    rng = np.random.default_rng(0)
    x = rng.logistic(size=(500, 12))
    log_px = (-x - 2 * np.logaddexp(0.0, -x)).sum(axis=1)
    assert bits_per_dim(x, log_px, 0.0, levels) == pytest.approx(math.log2(levels), abs=1e-10)
    assert bits_per_dim(torch.from_numpy(x), torch.from_numpy(log_px), 0.0, levels) == pytest.approx(
        math.log2(levels), abs=1e-10
    )


def test_bits_per_dim_of_a_beta_pixel_density():
    """v/L ~ Beta(2, 2) per pixel (density 6b(1−b)); log p_x from that density and the autograd Jacobian of
    v → x. bits/dim must equal the directly computed mean −log p_v(v)/(D ln 2)."""
    levels, alpha, n, d = 256, 1e-6, 300, 4
    rng = np.random.default_rng(1)
    b = rng.beta(2.0, 2.0, size=(n, d))
    log_pv = (np.log(6.0) + np.log(b) + np.log1p(-b) - np.log(levels)).sum(axis=1)
    v = torch.from_numpy(b * levels).requires_grad_(True)
    x = v_to_x(v, alpha, levels)
    (dxdv,) = torch.autograd.grad(x.sum(), v)  # the map is coordinate-wise: the Jacobian is diagonal
    log_px = log_pv - np.log(dxdv.numpy()).sum(axis=1)
    expected = float(np.mean(-log_pv)) / (d * math.log(2.0))
    assert bits_per_dim(x.detach().numpy(), log_px, alpha, levels) == pytest.approx(expected, rel=1e-10)


def test_to_unit_pixels_inverts_and_clips():
    u = np.linspace(0.0, 0.999, 11)
    x = logit(ALPHA + (1 - 2 * ALPHA) * u)
    np.testing.assert_allclose(to_unit_pixels(x, ALPHA), u, atol=1e-9)
    np.testing.assert_array_equal(to_unit_pixels(np.array([-1e3, 1e3]), ALPHA), [0.0, 1.0])
    t = to_unit_pixels(torch.tensor([-50.0, 0.0, 50.0]), ALPHA)
    torch.testing.assert_close(t, torch.tensor([0.0, 0.5, 1.0]))


def _pixels(x: np.ndarray) -> np.ndarray:
    return np.floor(to_unit_pixels(x.astype(np.float64), ALPHA) * 17).astype(int)


def test_load_digits_split_and_dequantization():
    from sklearn.datasets import load_digits as sk_load

    data = load_digits(None, seed=0)
    assert (data.train.shape, data.val.shape, data.test.shape) == ((1257, 64), (270, 64), (270, 64))
    assert data.image_shape == (8, 8) and data.levels == 17 and data.logit_alpha == ALPHA
    assert data.train.dtype == np.float32
    # the three splits partition the 1797 images (recovered exactly from the dequantized values)
    recovered = np.concatenate([_pixels(s) for s in data.splits().values()])
    original = sk_load().data.astype(int)
    assert sorted(map(tuple, recovered)) == sorted(map(tuple, original))
    # the split is fixed across seeds; the noise is not; the same seed repeats exactly
    other = load_digits(None, seed=1)
    np.testing.assert_array_equal(_pixels(other.test), _pixels(data.test))
    assert not np.array_equal(other.test, data.test)
    np.testing.assert_array_equal(load_digits(None, seed=0).train, data.train)
