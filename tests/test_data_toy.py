"""The 2-D toy densities: geometry of each shape, unit scale, seeding and split independence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.data.toy import SHAPES, load_toy2d


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_unit_scale_shapes_and_sizes(shape):
    data = load_toy2d(None, shape=shape, n_train=40000, n_val=300, n_test=500, noise=0.05, seed=1)
    assert (data.train.shape, data.val.shape, data.test.shape) == ((40000, 2), (300, 2), (500, 2))
    assert data.train.dtype == np.float32 and data.info["shape"] == shape
    np.testing.assert_allclose(data.train.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(data.train.std(axis=0), math.sqrt(1 + 0.05**2), atol=0.03)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_seeded_with_independent_split_streams(shape):
    a = load_dataset("toy2d", shape=shape, n_train=100, seed=7)
    b = load_toy2d(None, shape=shape, n_train=100, seed=7)
    c = load_toy2d(None, shape=shape, n_train=100, seed=8)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    # more training points leave validation and test untouched
    d = load_toy2d(None, shape=shape, n_train=300, seed=7)
    np.testing.assert_array_equal(d.test, a.test)
    np.testing.assert_array_equal(d.val, a.val)


def raw(shape: str, n: int = 4000) -> np.ndarray:
    return load_toy2d(None, shape=shape, n_train=n, noise=0.0, seed=0).train.astype(np.float64)


def test_moons_lie_on_two_unit_half_circles():
    pts = raw("moons") * [math.sqrt(0.75), math.sqrt(9 / 16 - 1 / math.pi)] + [0.5, 0.25]
    upper = np.abs(np.hypot(pts[:, 0], pts[:, 1]) - 1) < 1e-5
    lower = np.abs(np.hypot(pts[:, 0] - 1, pts[:, 1] - 0.5) - 1) < 1e-5
    assert np.all(upper | lower) and 0.45 < upper.mean() < 0.55
    assert np.all(pts[upper, 1] >= -1e-6) and np.all(pts[lower, 1] <= 0.5 + 1e-6)


def test_sine_is_a_sine():
    pts = raw("sine")
    x, y = pts[:, 0] * math.pi / math.sqrt(3), pts[:, 1] / math.sqrt(2)
    np.testing.assert_allclose(y, np.sin(x), atol=1e-5)
    assert x.min() >= -math.pi - 1e-5 and x.max() <= math.pi + 1e-5


def test_trimodal_has_three_equal_modes():
    pts = raw("trimodal", 9000) * math.sqrt(0.54)
    angles = np.deg2rad([90, 210, 330])
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    nearest = np.argmin(((pts[:, None, :] - centres) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=3) / len(pts)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)
    for k in range(3):
        np.testing.assert_allclose(pts[nearest == k].std(axis=0), 0.2, atol=0.02)


def test_rings_have_radii_one_and_two():
    r = np.hypot(*raw("rings").T) * math.sqrt(1.5)
    on_one, on_two = np.abs(r - 1) < 1e-5, np.abs(r - 2) < 1e-5
    assert np.all(on_one | on_two)
    assert abs(on_one.mean() - 1 / 3) < 0.03


def test_checkerboard_uses_only_the_black_squares():
    pts = raw("checkerboard") * (4 / math.sqrt(12))
    assert np.all(np.abs(pts) <= 2 + 1e-5)
    cells = np.floor(pts + 2).astype(int)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    assert len({tuple(c) for c in cells}) == 8


def test_noise_is_gaussian_jitter_of_the_given_size():
    clean = load_toy2d(None, shape="rings", n_train=20000, noise=0.0, seed=0).train
    noisy = load_toy2d(None, shape="rings", n_train=20000, noise=0.3, seed=0).train
    r = np.hypot(*noisy.astype(np.float64).T)
    assert np.abs(r - np.hypot(*clean.astype(np.float64).T)).mean() > 0.1  # jitter moves points off the rings
    np.testing.assert_allclose(noisy.std(axis=0), math.sqrt(1 + 0.3**2), atol=0.03)


def test_unknown_shape_lists_the_shapes():
    with pytest.raises(DatasetError, match="unknown toy2d shape 'spiral'.*moons, sine, trimodal, rings, checkerboard"):
        load_toy2d(None, shape="spiral")


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_test": -1}, {"noise": -0.1}])
def test_bad_sizes_and_noise(kwargs):
    with pytest.raises(DatasetError):
        load_toy2d(None, **kwargs)
