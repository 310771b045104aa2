"""relgrad: dense invertible networks trained by exact maximum likelihood with the relative gradient.

The public API is imported lazily so that the command-line entry points answer ``--help`` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "InvertibleMLP": "relgrad_cli.flow",
    "InvertibleLinear": "relgrad_cli.flow",
    "training_loss": "relgrad_cli.flow",
    "GRADIENT_MODES": "relgrad_cli.relative",
    "get_prior": "relgrad_cli.priors",
    "prior_names": "relgrad_cli.priors",
    "register_prior": "relgrad_cli.priors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'relgrad_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
