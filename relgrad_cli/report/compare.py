"""``relgrad-report compare DIR...``: every method on one data set, judged by held-out likelihood per unit of compute.

Reads the run folders of a comparison sweep (``relgrad-train experiment=compare data=NAME``: one job per model, the
same time budget each) and writes

- ``compare.png``: exact validation log-likelihood against training time (the sweep's budget clock: process CPU
  seconds for ``trainer.budget=cpu``, else wall seconds; evaluation excluded), one line per method, with the
  full-covariance Gaussian fitted in closed form as a horizontal line;
- ``compare.md`` / ``compare.csv``: per method the best test log-likelihood ± 2 s.e. (the best-validation
  checkpoint), its gain over the Gaussian, the median step time (ms), the number of parameters, the training
  time used and the time it needed to reach the common level: the lowest of the methods' best validation values,
  a level every method reached — among the methods that got above the Gaussian at all (one that never did would
  make the level trivial; it gets no time to reach it).

A method is the model plus, for dense flows with a free W, its gradient mode (``deep_mlp (relative)``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .common import ReportError, log_to_wandb, to_csv
from .curves import load_curves

COLUMNS = ["dataset", "method", "seed", "test_ll", "test_ll_2se", "gain_over_gaussian", "gaussian_test_ll",
           "median_step_ms", "params", "seconds", "common_level", "seconds_to_common_level", "stopped_by",
           "folder"]  # fmt: skip


def method_label(c: dict[str, Any]) -> str:
    """The model, with a dense flow's depth and the gradient mode of a free W: ``deep_mlp (depth 6, relative)``,
    ``lu_mlp (depth 6)``, ``maf``."""
    s = c["summary"]
    gradient = s.get("gradient") or c["gradient"]
    details = [f"depth {s['depth']}"] if "depth" in s else []
    details += [] if gradient in ("backprop", "?", None) else [str(gradient)]
    return c["model"] + (f" ({', '.join(details)})" if details else "")


def clock_of(curves: list[dict[str, Any]]) -> str:
    """The metrics.jsonl key of the budget clock: train_cpu_seconds when the runs were budgeted in CPU time."""
    clocks = {(c["summary"].get("budget") or {}).get("clock") for c in curves}
    return "train_cpu_seconds" if clocks == {"cpu"} else "train_seconds"


def _series(c: dict[str, Any], clock: str) -> list[tuple[float, float]]:
    return [(float(r.get(clock, r["train_seconds"])), float(r["ll"])) for r in c["records"]]


def compare_rows(curves: list[dict[str, Any]], clock: str) -> list[list[Any]]:
    """One row per finished run (see :data:`COLUMNS`), grouped by data set, best test log-likelihood first."""
    rows = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in curves:
        if c["finished"]:
            groups.setdefault(str(c["dataset"]), []).append(c)
    for dataset, members in sorted(groups.items()):
        best = {id(c): max(ll for _, ll in _series(c, clock)) for c in members}
        floor = members[0]["summary"].get("gaussian_val_ll", -math.inf)
        above = [b for b in best.values() if b > floor] or list(best.values())
        level = min(above)
        for c in sorted(members, key=lambda c: -float(c["summary"]["test_ll"])):
            s, series = c["summary"], _series(c, clock)
            gauss = s.get("gaussian_test_ll")
            reach = next((t for t, ll in series if ll >= level), None)
            rows.append([
                dataset, method_label(c), s.get("seed"), s["test_ll"], s.get("test_ll_2se"),
                s["test_ll"] - gauss if gauss is not None else None, gauss, s.get("median_step_ms"), s.get("params"),
                series[-1][0], level, reach, s.get("stopped_by"), str(c["folder"]),
            ])  # fmt: skip
    return rows


def compare_markdown(rows: list[list[Any]], clock: str) -> str:
    """The rows of :func:`compare_rows` as a markdown table with a Gaussian row per data set, then a note on the
    columns."""
    unit = "CPU s" if clock == "train_cpu_seconds" else "s"
    lines = [f"| data | method | test LL ± 2 s.e. | over Gaussian | ms/step | params | {unit} trained "
             f"| {unit} to common level |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for data, method, _, ll, se, gain, _gauss, ms, params, secs, _level, reach, _, _ in rows:
        lines.append(f"| {data} | {method} | {ll:.2f} ± {se:.2f} | {f'{gain:+.2f}' if gain is not None else '–'} "
                     f"| {f'{ms:.2f}' if ms is not None else '–'} | {params if params is not None else '–'} "
                     f"| {secs:.0f} | {f'{reach:.1f}' if reach is not None else 'never'} |")  # fmt: skip
    by_data: dict[str, list[list[Any]]] = {}
    for row in rows:
        by_data.setdefault(row[0], []).append(row)
    for data, members in by_data.items():
        gauss = members[0][6]
        if gauss is not None:
            lines.append(f"| {data} | Gaussian (full covariance, closed form) | {gauss:.2f} | 0 | – "
                         f"| – | 0 | – |")  # fmt: skip
    lines += ["", f"Test log-likelihood in nats per example of the best-validation checkpoint; common level: the "
              f"lowest best validation log-likelihood among the methods that got above the Gaussian (per data set); "
              f"{unit} to reach it counts training time only (never: the method stayed below it)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def compare_plot(curves: list[dict[str, Any]], path: Path, clock: str) -> None:
    """Validation log-likelihood against training time, one panel per data set, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for c in curves:
        groups.setdefault(str(c["dataset"]), []).append(c)
    fig, axes = plt.subplots(1, len(groups), figsize=(7.5 * len(groups), 5.2), squeeze=False)
    for ax, (dataset, members) in zip(axes[0], sorted(groups.items()), strict=True):
        bests = [max(ll for _, ll in _series(c, clock)) for c in members]
        for i, c in enumerate(sorted(members, key=method_label)):
            series = _series(c, clock)
            xs, ys = [t for t, _ in series], [ll for _, ll in series]
            label = method_label(c) + ("" if c["finished"] else " (unfinished)")
            ax.plot(xs, ys, "-", color=f"C{i}", lw=2, label=label)
            best = max(range(len(ys)), key=ys.__getitem__)
            ax.plot(xs[best], ys[best], "*", color=f"C{i}", ms=12, mec="black", mew=0.6)
        gauss_val = [c["summary"].get("gaussian_val_ll") for c in members if c["summary"].get("gaussian_val_ll")]
        if gauss_val:
            ax.axhline(gauss_val[0], color="black", ls="--", lw=1.2, label="Gaussian (closed form)")
        # frame every method's best and the Gaussian line: the untrained starts of some flows sit far below
        hi, lo = max(bests), min(bests + gauss_val[:1])
        pad = 0.15 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + 0.5 * pad)
        ax.set_xlabel("training time (" + ("process CPU s" if clock == "train_cpu_seconds" else "s") +
                      ", evaluation excluded)")  # fmt: skip
        ax.set_ylabel("validation log-likelihood (nats, exact)")
        ax.set_title(dataset)
        ax.grid(True, alpha=0.3)
        ax.legend(title="method (★ best)", loc="lower right")
    fig.suptitle("Held-out likelihood against compute, every method in the same loop")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_compare(args: argparse.Namespace) -> int:
    """``relgrad-report compare``: write compare.png, compare.md and compare.csv (and with ``--wandb`` an offline W&B
    run), print the table."""
    curves = load_curves(args.dirs)
    if not curves:
        raise ReportError(f"no run folders with validation records under {', '.join(map(str, args.dirs))}")
    clock = clock_of(curves)
    rows = compare_rows(curves, clock)
    if not rows:
        raise ReportError("no finished runs (summary.json) to compare yet")
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    compare_plot(curves, out / "compare.png", clock)
    md = compare_markdown(rows, clock)
    (out / "compare.md").write_text(md)
    (out / "compare.csv").write_text(to_csv(COLUMNS, rows))
    if args.wandb:
        log_to_wandb(out, {"compare_table": (COLUMNS, rows)}, f"compare {out.name}", {"compare": out / "compare.png"})
    print(md)
    print(f"{len(rows)} runs; wrote {out / 'compare.png'}, compare.md, compare.csv")
    return 0
