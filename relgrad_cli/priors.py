"""Factorized priors p(z) = ∏_i p(z_i) for the latent space of a flow.

Each prior is a small stateless object with three methods, all element-wise on a tensor of any shape:

- ``log_prob(z)``: log p(z_i) for every element (sum over the last axis for the joint log-density);
- ``score(z)``: d log p(z_i) / d z_i, the score function used by classical ICA updates;
- ``sample(shape, ...)``: independent draws;

plus ``entropy`` (nats per dimension). New priors register with :func:`register_prior`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_PRIORS: dict[str, type[Prior]] = {}


def register_prior(name: str) -> Callable[[type[Prior]], type[Prior]]:
    """Class decorator adding a prior to the registry under ``name``."""

    def wrap(cls: type[Prior]) -> type[Prior]:
        _PRIORS[name] = cls
        cls.name = name
        return cls

    return wrap


class Prior:
    """Base class: a univariate density applied independently to every latent coordinate."""

    name: str = "prior"
    entropy: float = float("nan")

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        shape: tuple[int, ...],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register_prior("gaussian")
class Gaussian(Prior):
    """Standard normal: log p(z) = −z²/2 − log(2π)/2, score −z, entropy log(2πe)/2."""

    entropy = 0.5 * math.log(2 * math.pi * math.e)
    _c = 0.5 * math.log(2 * math.pi)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * z * z - self._c

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return -z

    def sample(self, shape, *, dtype=None, device=None, generator=None) -> torch.Tensor:
        return torch.randn(shape, dtype=dtype, device=device, generator=generator)


@register_prior("laplace")
class Laplace(Prior):
    """Unit-scale Laplace: log p(z) = −|z| − log 2, score −sign(z), entropy 1 + log 2 (variance 2)."""

    entropy = 1.0 + math.log(2.0)
    _c = math.log(2.0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -z.abs() - self._c

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return -torch.sign(z)

    def sample(self, shape, *, dtype=None, device=None, generator=None) -> torch.Tensor:
        # Inverse CDF on u ∈ (−1/2, 1/2): z = −sign(u) log(1 − 2|u|).
        r = torch.rand(shape, dtype=dtype, device=device, generator=generator)
        u = r.clamp_min(torch.finfo(r.dtype).eps) - 0.5  # r = 0 would give log(0) = −inf
        return -torch.sign(u) * torch.log1p(-2.0 * u.abs())


@register_prior("logistic")
class Logistic(Prior):
    """Standard logistic: log p(z) = −softplus(z) − softplus(−z), score −tanh(z/2), entropy 2.

    This is the density whose score gives the classical Infomax (Bell–Sejnowski) ICA update.
    """

    entropy = 2.0

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -F.softplus(z) - F.softplus(-z)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return -torch.tanh(0.5 * z)

    def sample(self, shape, *, dtype=None, device=None, generator=None) -> torch.Tensor:
        u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
        u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
        return torch.log(u) - torch.log1p(-u)


def prior_names() -> list[str]:
    """Names accepted by :func:`get_prior`, sorted."""
    return sorted(_PRIORS)


def get_prior(prior: str | Prior) -> Prior:
    """Return a prior instance from its registry name (or pass an instance through)."""
    if isinstance(prior, Prior):
        return prior
    try:
        return _PRIORS[prior]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown prior {prior!r}; choose one of: {', '.join(prior_names())}") from None
