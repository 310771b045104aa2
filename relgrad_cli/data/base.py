"""The record every dataset loader returns, and the error they raise."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(Exception):
    """A dataset is missing, corrupt or misconfigured. The message says which file or value and what to do;
    command-line entry points print it on one line, without a traceback."""


@dataclass(frozen=True)
class IcaTruth:
    """Ground truth of a synthetic ICA dataset.

    test_log_prob: exact log-density (nats) of every test row under the true generative model;
    test_sources: the independent sources behind the test rows (N×D);
    mixing: the matrix A with x = A s (row form x = s Aᵀ) for linear mixing, None for nonlinear mixing;
    source: the registered prior the sources were drawn from (what ``model.prior=auto`` uses).
    """

    test_log_prob: np.ndarray
    test_sources: np.ndarray
    mixing: np.ndarray | None = None
    source: str = "laplace"


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays (N×D, float) plus what evaluation needs to know about them.

    image_shape: for image data, the shape of one image (rows are flattened images in logit space);
    logit_alpha: the λ of the logit transform x = logit(λ + (1−2λ)·u) applied to dequantized pixels u ∈ [0, 1),
        needed to report bits/dim in pixel space;
    levels: number of grey levels of the raw pixels (256 for MNIST, 17 for scikit-learn's digits);
    truth: ground truth for synthetic ICA data;
    info: free-form provenance (files read, preprocessing, seeds) recorded in the run's summary.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, ...] | None = None
    logit_alpha: float | None = None
    levels: int | None = None
    truth: IcaTruth | None = None
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def splits(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


#: the data folder used when none is given: $RELGRAD_DATA if set (and not empty), else this (relative to the
#: working directory), the same default as the runner's ``data.root`` (``${oc.env:RELGRAD_DATA,./data}``).
DEFAULT_DATA_ROOT = "./data"


def default_data_root() -> str:
    """$RELGRAD_DATA if set and not empty, else ``./data`` (unresolved; :func:`as_root` makes it absolute)."""
    return os.environ.get("RELGRAD_DATA") or DEFAULT_DATA_ROOT


def as_root(root: str | Path | None = None) -> Path:
    """The data root as an absolute path; ``None`` means the default data folder (:func:`default_data_root`).
    A root that exists but is not a folder is an error."""
    path = Path(default_data_root() if root is None else root).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DatasetError(f"data root {path} is a file, not a folder; set data.root (or $RELGRAD_DATA) to a folder")
    return path
