"""Every model the runner trains, built from its config and rebuilt from a checkpoint.

A model is an ``nn.Module`` with ``training_loss(x)`` (a scalar whose backward leaves the training gradient in
``.grad``), exact ``log_prob(x)``, ``sample(n)``, ``config()`` (the constructor arguments, saved in every
checkpoint), ``init_from_data(fit)`` and ``check_inputs``. The fit loop, the evaluation, the checkpoints and the
reports use nothing else, so the dense flow (relative gradient or any other mode), its LU-parametrized twin and the
zuko peers run through the same loop and records.

- ``deep_mlp``, ``paper_mlp`` (the paper's settings) and ``linear``: :class:`relgrad_cli.flow.InvertibleMLP` with
  dense W (the gradient mode applies);
- ``lu_mlp``: the same architecture with W = P L U (:mod:`relgrad_cli.lu`);
- ``maf``, ``realnvp``, ``nsf``: zuko's flows (:mod:`relgrad_cli.peers`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .peers import ZUKO_FLOWS

DENSE_MODELS = {"deep_mlp": "full", "paper_mlp": "full", "linear": "full", "lu_mlp": "lu"}
MODEL_NAMES: tuple[str, ...] = (*DENSE_MODELS, *ZUKO_FLOWS)


def build_model(
    kind: str, dim: int, *, dtype: torch.dtype | None = None, device: Any = None, **options: Any
) -> nn.Module:
    """The model ``kind`` (one of :data:`MODEL_NAMES`, or a checkpoint's recorded kind) for ``dim`` features."""
    if kind in ZUKO_FLOWS:
        from .peers import ZukoFlow

        return ZukoFlow(kind, dim, dtype=dtype, device=device, **options)
    from .flow import InvertibleMLP

    if kind in DENSE_MODELS:
        options.setdefault("dense", DENSE_MODELS[kind])
    elif kind != "invertible_mlp":
        raise ValueError(f"unknown model {kind!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return InvertibleMLP(dim, dtype=dtype, device=device, **options)


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild any model from a ``relgrad-train`` checkpoint (``best.pt`` or ``last.pt``): its recorded
    configuration (``flow`` entry) and weights, in the weights' dtype. Read by :func:`relgrad_cli.fit.load_checkpoint`
    (``weights_only=True``); any file it cannot rebuild a model from raises ValueError with one line naming the file,
    what is wrong and what to do."""
    from .fit import RELGRAD_CHECKPOINT, load_checkpoint

    ckpt = load_checkpoint(path, map_location=map_location)
    options = dict(ckpt.get("flow") or {})
    if "dim" not in options:
        raise ValueError(f"{path} holds weights without the architecture (no 'flow' entry naming the model and its "
                         f"dim), so the model cannot be rebuilt; use {RELGRAD_CHECKPOINT}")  # fmt: skip
    kind = options.pop("kind", "invertible_mlp")
    dim = options.pop("dim")
    dtype = next((v.dtype for v in ckpt["model"].values() if v.is_floating_point()), None)
    try:
        model = build_model(kind, dim, dtype=dtype, device=map_location, **options)
        model.load_state_dict(ckpt["model"])
    except (ValueError, TypeError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: its recorded architecture and weights do not make a model of this version "
                         f"({first}); use {RELGRAD_CHECKPOINT} by this version") from None  # fmt: skip
    return model
