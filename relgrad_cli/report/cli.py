"""The ``relgrad-report`` command line: the argument parser, one subcommand per report, and :func:`main`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import ReportError
from .compare import cmd_compare
from .curves import cmd_curves
from .ica import FASTICA_FUNS, cmd_ica
from .sweep import DEFAULT_COLUMNS, cmd_sweep
from .table import cmd_table


def parser() -> argparse.ArgumentParser:
    """The ``relgrad-report`` command line: one subcommand per report."""
    p = argparse.ArgumentParser(prog="relgrad-report", description="Tables and plots from relgrad run folders.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="aggregate a multirun (or any run folders) over the swept keys")
    s.add_argument("dirs", type=Path, nargs="+", help="sweep folders or run folders")
    s.add_argument("--metric", default="median_step_ms", help="summary key to plot (default: %(default)s)")
    s.add_argument("--columns", nargs="+", help=f"summary keys in the table (default: {' '.join(DEFAULT_COLUMNS)})")
    s.add_argument("--out", type=Path, help="where to write sweep.{md,csv,png} (default: the first folder)")
    s.set_defaults(func=cmd_sweep)

    t = sub.add_parser(
        "table",
        help="test log-likelihood of every run beside the published numbers; synthetic-ICA runs (data=ica) also "
        "beside FastICA on the same data, as in the ica command",
    )
    t.add_argument("dirs", type=Path, nargs="+", help="run folders or sweep folders (searched for summary.json)")
    t.add_argument("--out", type=Path, help="where to write table.{md,csv}, published.csv and, with ICA runs, ica.csv "
                   "(default: the first folder)")  # fmt: skip
    t.add_argument("--wandb", action="store_true", help="also log the tables to an offline W&B run under OUT/wandb")
    _fastica_options(t)
    t.set_defaults(func=cmd_table)

    c = sub.add_parser("curves", help="validation log-likelihood against training seconds, one line per run")
    c.add_argument("dirs", type=Path, nargs="+", help="run folders or sweep folders (searched for metrics.jsonl)")
    c.add_argument("--out", type=Path, help="where to write curves.{png,md,csv} (default: the first folder)")
    c.add_argument("--logx", action="store_true", help="logarithmic time axis")
    c.set_defaults(func=cmd_curves)

    m = sub.add_parser(
        "compare",
        help="methods side by side: validation log-likelihood against training time, "
        "best test log-likelihood, ms/step, parameters, time to a common level, the Gaussian line",
    )
    m.add_argument("dirs", type=Path, nargs="+", help="the sweep folder of experiment=compare (or run folders)")
    m.add_argument("--out", type=Path, help="where to write compare.{png,md,csv} (default: the first folder)")
    m.add_argument("--wandb", action="store_true", help="also log the plot and table to an offline W&B run")
    m.set_defaults(func=cmd_compare)

    i = sub.add_parser("ica", help="synthetic-ICA runs against FastICA on the same data (Amari, MCC, NLL gap, time)")
    i.add_argument("dirs", type=Path, nargs="+", help="run folders or sweep folders of data=ica runs")
    i.add_argument("--out", type=Path, help="where to write ica.{md,csv} (default: the first folder)")
    _fastica_options(i)
    i.set_defaults(func=cmd_ica)
    return p


def _fastica_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--fun", choices=FASTICA_FUNS, default="logcosh", help="FastICA contrast (default: %(default)s)")
    sub.add_argument("--max-iter", type=int, default=10000, help="FastICA iteration cap (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    """Run ``relgrad-report`` with ``argv`` (default: the command line); the exit status: 0, or 2 with a one-line
    error on stderr."""
    args = parser().parse_args(argv)
    for d in getattr(args, "dirs", []):
        if not d.is_dir():
            print(f"relgrad-report: error: {d} is not a folder", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except ReportError as err:
        print(f"relgrad-report: error: {err}", file=sys.stderr)
        return 2
