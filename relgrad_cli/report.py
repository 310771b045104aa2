"""``relgrad-report``: aggregate run folders into tables and plots, from the files every run writes.

``relgrad-report sweep DIR...`` finds every job under the given folders (a folder with ``.hydra/``), reads its
``summary.json`` and ``.hydra/overrides.yaml``, works out which override keys vary across jobs (the swept keys),
and writes ``sweep.md``, ``sweep.csv`` and ``sweep.png`` (a metric against the first numeric swept key, one line per
combination of the others). Jobs without a summary (failed or still running) are listed as such; the report
works on a partial sweep. No W&B account is involved.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

DEFAULT_COLUMNS = ("test_ll", "test_ll_2se", "best_val_ll", "median_step_ms", "train_seconds", "epochs")


def find_jobs(dirs: list[Path]) -> list[dict[str, Any]]:
    """One record per job folder: its path, overrides (key → value string), summary (or None)."""
    import yaml

    jobs = []
    for root in dirs:
        for hydra_dir in sorted(Path(root).rglob(".hydra")):
            job = hydra_dir.parent
            overrides = {}
            ov_file = hydra_dir / "overrides.yaml"
            if ov_file.is_file():
                for item in yaml.safe_load(ov_file.read_text()) or []:
                    key, _, value = str(item).partition("=")
                    if not key.startswith("hydra."):
                        overrides[key.lstrip("+~")] = value
            summary_file = job / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
            jobs.append({"path": job, "overrides": overrides, "summary": summary})
    return jobs


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value is not the same in every job (all override keys for a single job)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job["overrides"] if k not in keys]
    if len(jobs) <= 1:
        return keys
    return [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _sort_key(value: Any) -> tuple:
    x = _number(value)
    return (0, x, "") if x is not None else (1, 0.0, str(value))


def sweep_table(jobs: list[dict[str, Any]], columns: list[str]) -> tuple[list[str], list[list[Any]]]:
    keys = swept_keys(jobs)
    header = [*keys, "status", *columns, "folder"]
    rows = []
    for job in sorted(jobs, key=lambda j: tuple(_sort_key(j["overrides"].get(k)) for k in keys)):
        s = job["summary"]
        rows.append([*(job["overrides"].get(k, "") for k in keys), "ok" if s else "no summary (failed?)",
                     *((s or {}).get(c) for c in columns), str(job["path"])])  # fmt: skip
    return header, rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def sweep_plot(jobs: list[dict[str, Any]], metric: str, path: Path) -> bool:
    """Plot ``metric`` against the first numeric swept key; False when there is none to plot against."""
    keys = swept_keys(jobs)
    done = [j for j in jobs if j["summary"] and _number(j["summary"].get(metric)) is not None]
    xkey = next((k for k in keys if all(_number(j["overrides"].get(k)) is not None for j in done)), None)
    if xkey is None or not done:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in keys if k != xkey]
    lines: dict[str, list[tuple[float, float]]] = {}
    for j in done:
        label = ", ".join(f"{k}={j['overrides'].get(k)}" for k in others) or metric
        lines.setdefault(label, []).append((float(j["overrides"][xkey]), float(j["summary"][metric])))
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
    jobs = find_jobs(args.dirs)
    if not jobs:
        raise ReportError(f"no run folders (folders with .hydra/) under {', '.join(map(str, args.dirs))}")
    columns = args.columns or list(DEFAULT_COLUMNS)
    header, rows = sweep_table(jobs, columns)
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(header, rows)
    (out / "sweep.md").write_text(md)
    (out / "sweep.csv").write_text(to_csv(header, rows))
    plotted = sweep_plot(jobs, args.metric, out / "sweep.png")
    print(md)
    failed = sum(1 for j in jobs if j["summary"] is None)
    print(f"{len(jobs)} jobs ({failed} without summary); wrote {out / 'sweep.md'}, sweep.csv"
          + (", sweep.png" if plotted else ""))  # fmt: skip
    return 0


class ReportError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relgrad-report", description="Tables and plots from relgrad run folders.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="aggregate a multirun (or any run folders) over the swept keys")
    s.add_argument("dirs", type=Path, nargs="+", help="sweep folders or run folders")
    s.add_argument("--metric", default="median_step_ms", help="summary key to plot (default: %(default)s)")
    s.add_argument("--columns", nargs="+", help=f"summary keys in the table (default: {' '.join(DEFAULT_COLUMNS)})")
    s.add_argument("--out", type=Path, help="where to write sweep.{md,csv,png} (default: the first folder)")
    s.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
