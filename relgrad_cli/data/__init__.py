"""Datasets: one module per family, all returning a :class:`Dataset`.

``load_dataset(name, root=None, **options)`` looks the loader up in ``LOADERS`` (imported lazily, so a missing
optional dependency of one family does not break the others) and passes ``options`` through as keyword arguments.
``root=None`` means the default data folder, $RELGRAD_DATA if set, else ./data; data sets generated or shipped
with scikit-learn (ica, toy2d, digits, patches) never read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Dataset, DatasetError, IcaTruth, as_root, default_data_root

LOADERS: dict[str, str] = {
    "ica": "relgrad_cli.data.ica:load_ica",
    "mnist": "relgrad_cli.data.mnist:load_mnist",
    "digits": "relgrad_cli.data.images:load_digits",
    "patches": "relgrad_cli.data.patches:load_patches",
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


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` from the data folder ``root`` (data sets without files ignore it).

    ``root=None`` is passed on as is: loaders that read files resolve it to the default data folder ($RELGRAD_DATA
    if set, else ./data, see :func:`as_root`), and the others never look at it, so they work whatever
    $RELGRAD_DATA holds. A given ``root`` is made absolute and checked (it must not be a file) here.
    """
    loader = get_loader(name)
    return loader(root=None if root is None else as_root(root), **options)


__all__ = [
    "LOADERS",
    "Dataset",
    "DatasetError",
    "IcaTruth",
    "as_root",
    "dataset_names",
    "default_data_root",
    "get_loader",
    "load_dataset",
]
