"""``relgrad-report``: aggregate run folders into tables and plots, from the files every run writes.

Each subcommand takes run folders or sweep folders (searched recursively) and writes its files into the first folder
given, or ``--out``:

- ``relgrad-report sweep DIR...`` (:mod:`.sweep`): a multirun over the keys it sweeps → ``sweep.md``, ``sweep.csv``,
  ``sweep.png`` (a metric against the first numeric swept key); failed and unfinished jobs are listed, a failed one
  with the reason from its ``error.txt``, and counted, so the report works on a partial sweep.
- ``relgrad-report table DIR...`` (:mod:`.table`): every run's test log-likelihood beside the published numbers
  shipped in ``relgrad_cli/published.yaml`` → ``table.md``, ``table.csv``, ``published.csv``; with ICA runs also
  the FastICA comparison (``ica.csv``); ``--wandb`` logs the tables to an offline W&B run.
- ``relgrad-report curves DIR...`` (:mod:`.curves`): exact validation log-likelihood against training seconds, one
  line per run by gradient mode → ``curves.png``, ``curves.md``, ``curves.csv``.
- ``relgrad-report ica DIR...`` (:mod:`.ica`): synthetic-ICA runs beside scikit-learn's FastICA on the same
  (regenerated) data → ``ica.md``, ``ica.csv``.
- ``relgrad-report compare DIR...`` (:mod:`.compare`): every method of a comparison sweep, held-out likelihood per
  unit of compute → ``compare.png``, ``compare.md``, ``compare.csv``.

Every report finds and reads runs the same way (:mod:`.runs`): a run is a folder with ``.hydra/``, ``summary.json``
or ``metrics.jsonl``. A damaged ``summary.json`` is named in a warning and read as missing, in every command. No W&B
account is involved. :mod:`.common` holds what the reports share (the error, number formatting, the CSV and W&B
writers) and :mod:`.cli` the argument parser and :func:`main`.
"""

from __future__ import annotations

from .cli import main, parser
from .common import ReportError
from .compare import compare_markdown, compare_rows
from .curves import curve_summary, load_curves
from .ica import fastica_baseline, ica_markdown, ica_table, prior_variance
from .runs import Run, find_runs, read_config, read_overrides, read_summary
from .sweep import find_jobs, sweep_table, swept_keys
from .table import check_published, load_published, published_rows, results_table, table_markdown

__all__ = [
    "ReportError",
    "Run",
    "check_published",
    "compare_markdown",
    "compare_rows",
    "curve_summary",
    "fastica_baseline",
    "find_jobs",
    "find_runs",
    "ica_markdown",
    "ica_table",
    "load_curves",
    "load_published",
    "main",
    "parser",
    "prior_variance",
    "published_rows",
    "read_config",
    "read_overrides",
    "read_summary",
    "results_table",
    "sweep_table",
    "swept_keys",
    "table_markdown",
]
