"""``relgrad-report sweep DIR...``: a multirun (or any run folders) over the keys it sweeps.

Finds every job under the given folders (a folder with ``.hydra/``), reads its ``summary.json`` and
``.hydra/overrides.yaml``, works out which override keys vary across jobs (the swept keys), and writes ``sweep.md``,
``sweep.csv`` and ``sweep.png`` (a metric against the first numeric swept key, one line per combination of the
others). Jobs without a summary (failed or still running) are listed as such, a failed one with the reason from its
``error.txt``, and counted at the end; the report works on a partial sweep. A damaged ``summary.json`` is named in a
warning and read as missing. No W&B account is involved.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import ReportError, number, sort_key, to_csv, to_markdown
from .runs import ERROR_FILE, Run, find_runs

DEFAULT_COLUMNS = ("test_ll", "test_ll_2se", "best_val_ll", "median_step_ms", "train_seconds", "epochs")


def find_jobs(dirs: Iterable[Path]) -> list[Run]:
    """The runs under ``dirs`` that went through relgrad-train's runner (a folder with ``.hydra/``): a sweep's jobs,
    finished or not, in the order of the folders given."""
    return [run for run in find_runs(dirs, given_order=True) if run.hydra]


def swept_keys(jobs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every job (all override keys for a single job)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    if len(jobs) <= 1:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def status(job: Run) -> str:
    """A job's status column: ok, failed: <the reason from error.txt>, or no summary (failed?)."""
    if job.finished:
        return "ok"
    if job.error:
        return f"failed: {job.error}"
    return "no summary (failed?)"


def sweep_table(jobs: list[Run], columns: list[str]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): the swept keys, the status, the summary ``columns`` and the folder of every job, ordered by
    the swept values."""
    keys = swept_keys(jobs)
    header = [*keys, "status", *columns, "folder"]
    rows = []
    for job in sorted(jobs, key=lambda j: tuple(sort_key(j.overrides.get(k)) for k in keys)):
        s = job.summary or {}
        rows.append([*(job.overrides.get(k, "") for k in keys), status(job), *(s.get(c) for c in columns),
                     str(job.path)])  # fmt: skip
    return header, rows


def numeric_summary_keys(jobs: list[Run]) -> list[str]:
    """The summary keys that hold a number in at least one job (what ``--metric`` can plot)."""
    keys = {k for j in jobs if j.summary for k, v in j.summary.items()
            if not isinstance(v, bool) and number(v) is not None}  # fmt: skip
    return sorted(keys)


def sweep_plot(jobs: list[Run], metric: str, path: Path) -> bool:
    """Plot ``metric`` against the first numeric swept key; False when there is none to plot against."""
    keys = swept_keys(jobs)
    done = [j for j in jobs if j.summary and number(j.summary.get(metric)) is not None]
    xkey = next((k for k in keys if all(number(j.overrides.get(k)) is not None for j in done)), None)
    if xkey is None or not done:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in keys if k != xkey]
    lines: dict[str, list[tuple[float, float]]] = {}
    for j in done:
        label = ", ".join(f"{k}={j.overrides.get(k)}" for k in others) or metric
        lines.setdefault(label, []).append((float(j.overrides[xkey]), float(j.summary[metric])))
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [p[0] for pts in lines.values() for p in pts]
    ys = [p[1] for pts in lines.values() for p in pts]
    for label, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    if min(xs) > 0 and max(xs) / min(xs) >= 4:
        ax.set_xscale("log", base=2)
    if min(ys) > 0 and max(ys) / min(ys) >= 10:
        ax.set_yscale("log")
    ax.set_xlabel(xkey)
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def cmd_sweep(args: argparse.Namespace) -> int:
    """``relgrad-report sweep``: write sweep.md, sweep.csv and sweep.png, print the table and the job counts."""
    jobs = find_jobs(args.dirs)
    if not jobs:
        raise ReportError(f"no run folders (folders with .hydra/) under {', '.join(map(str, args.dirs))}")
    columns = args.columns or list(DEFAULT_COLUMNS)
    out = args.out or args.dirs[0]
    plot = out / "sweep.png"
    available = numeric_summary_keys(jobs)
    if available and args.metric not in available:
        plot.unlink(missing_ok=True)  # an old plot must not pass for this report's
        raise ReportError(f"--metric {args.metric}: no finished job has a numeric {args.metric!r} in summary.json; "
                          f"choose one of: {', '.join(available)}")  # fmt: skip
    header, rows = sweep_table(jobs, columns)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(header, rows)
    (out / "sweep.md").write_text(md)
    (out / "sweep.csv").write_text(to_csv(header, rows))
    plot.unlink(missing_ok=True)
    plotted = sweep_plot(jobs, args.metric, plot)
    print(md)
    failed = [j for j in jobs if not j.finished]
    explained = sum(1 for j in failed if j.error)
    print(f"{len(jobs)} jobs; wrote {out / 'sweep.md'}, sweep.csv" + (", sweep.png" if plotted else ""))
    print(f"{len(failed)} of {len(jobs)} jobs failed or unfinished (no summary.json)"
          + (f"; {explained} with a reason in {ERROR_FILE}" if failed else ""))  # fmt: skip
    return 0
