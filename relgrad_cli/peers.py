"""Peer flows from zuko (MAF, Real NVP, NSF), wrapped to run through the same runner, records and reports.

zuko (probabilists/zuko) builds the flows; this wrapper only adds what the runner's other models have:

- a fixed per-coordinate standardisation in front, u = (x − μ) / s, set from the training split by
  :meth:`ZukoFlow.init_from_data` (the flows then start on data of unit scale, as the MAF paper's preprocessing
  gives them), so log p(x) = log q(u) − Σ_i log s_i, exact;
- ``training_loss(x)`` = −mean log p(x) (ordinary backprop: a gradient mode does not apply), ``log_prob``,
  ``sample``, ``config`` (the constructor arguments, saved in every checkpoint) and ``check_inputs``.

Sizes (``transforms``, ``hidden_features``) follow the model configs: MAF(5) and Real NVP(10) as in the MAF
paper's table, NSF with 5 transforms of 8 bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

ZUKO_FLOWS = {"maf": "MAF", "realnvp": "RealNVP", "nsf": "NSF"}


class ZukoFlow(nn.Module):
    """A zuko flow over D features with a fixed standardisation in front (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        dim: int,
        *,
        transforms: int = 5,
        hidden_features: tuple[int, ...] | list[int] = (256, 256),
        bins: int = 8,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        try:
            import zuko
        except ImportError:
            raise ValueError(f"model {kind} needs zuko: pip install zuko (make installs it)") from None
        if kind not in ZUKO_FLOWS:
            raise ValueError(f"unknown zuko flow {kind!r}; choose one of: {', '.join(ZUKO_FLOWS)}")
        self.kind, self.dim = kind, dim
        self.transforms, self.hidden_features, self.bins = transforms, tuple(int(h) for h in hidden_features), bins
        extra = {"bins": bins} if kind == "nsf" else {}
        self.flow = getattr(zuko.flows, ZUKO_FLOWS[kind])(
            dim, transforms=transforms, hidden_features=self.hidden_features, **extra
        ).to(dtype=dtype, device=device)
        self.register_buffer("shift", torch.zeros(dim, dtype=dtype, device=device))
        self.register_buffer("log_scale", torch.zeros(dim, dtype=dtype, device=device))
        self.check_inputs = True

    @property
    def dtype(self) -> torch.dtype:
        return self.shift.dtype

    @property
    def device(self) -> torch.device:
        return self.shift.device

    @torch.no_grad()
    def init_from_data(self, x: Any) -> Any:
        """Set the standardisation from a :class:`~relgrad_cli.gaussian.GaussianFit` or from data rows."""
        from .gaussian import GaussianFit, fit_gaussian

        fit = x if isinstance(x, GaussianFit) else fit_gaussian(x.detach().cpu().numpy() if torch.is_tensor(x) else x)
        self.shift.copy_(torch.as_tensor(fit.mean))
        self.log_scale.copy_(torch.as_tensor(0.5 * np.log(np.diag(fit.cov))))
        return fit

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"data must have shape (batch, {self.dim}) for this flow, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("the batch is empty")
        if self.check_inputs and not bool(torch.isfinite(x).all()):
            raise ValueError("data contains NaN or infinite values; clean or drop those rows")
        return x.to(self.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of every row of x, in nats: shape (B,)."""
        x = self._check(x)
        u = (x - self.shift) * torch.exp(-self.log_scale)
        return self.flow().log_prob(u) - self.log_scale.sum()

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x).mean()

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The exact mean negative log-likelihood (ordinary backprop)."""
        return self.nll(x)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples. zuko draws from torch's global generator; with ``generator``, the draw runs on a fork of the
        global state seeded from it, so the same generator gives the same samples and the global state is left as
        it was."""
        if generator is None:
            u = self.flow().sample((n,))
        else:
            seed = int(torch.randint(2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                u = self.flow().sample((n,))
        return u * torch.exp(self.log_scale) + self.shift

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "transforms": self.transforms,
                "hidden_features": list(self.hidden_features), "bins": self.bins}  # fmt: skip

    def extra_repr(self) -> str:
        return f"kind={self.kind}, dim={self.dim}, transforms={self.transforms}, hidden={self.hidden_features}"
