"""Datasets: one module per family, all returning a :class:`Dataset`.

``load_dataset(name, root, **options)`` looks the loader up in ``LOADERS`` (imported lazily, so a missing
optional dependency of one family does not break the others) and passes ``options`` through as keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Dataset, DatasetError, IcaTruth, as_root

LOADERS: dict[str, str] = {
    "ica": "relgrad_cli.data.ica:load_ica",
    "mnist": "relgrad_cli.data.mnist:load_mnist",
    "digits": "relgrad_cli.data.images:load_digits",
    "toy2d": "relgrad_cli.data.toy:load_toy2d",
    "bsds300": "relgrad_cli.data.maf:load_bsds300",
    "power": "relgrad_cli.data.maf:load_power",
    "gas": "relgrad_cli.data.maf:load_gas",
    "hepmass": "relgrad_cli.data.maf:load_hepmass",
    "miniboone": "relgrad_cli.data.maf:load_miniboone",
}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def get_loader(name: str) -> Callable[..., Dataset]:
    try:
        target = LOADERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def load_dataset(name: str, root: str | Path = "./data", **options: Any) -> Dataset:
    """Load dataset ``name`` from the data folder ``root`` (synthetic ones ignore it)."""
    return get_loader(name)(root=as_root(root), **options)


__all__ = ["LOADERS", "Dataset", "DatasetError", "IcaTruth", "dataset_names", "get_loader", "load_dataset"]
