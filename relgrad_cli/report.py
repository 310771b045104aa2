"""``relgrad-report``: aggregate run folders into tables and plots, from the files every run writes.

``relgrad-report sweep DIR...`` finds every job under the given folders (a folder with ``.hydra/``), reads its
``summary.json`` and ``.hydra/overrides.yaml``, works out which override keys vary across jobs (the swept keys),
and writes ``sweep.md``, ``sweep.csv`` and ``sweep.png`` (a metric against the first numeric swept key, one line per
combination of the others). Jobs without a summary (failed or still running) are listed as such, a failed one
with the reason from its ``error.txt``, and counted at the end; the report works on a partial sweep. A damaged
``summary.json`` is named in a warning and read as missing, here and in every other command. No W&B account is
involved.

``relgrad-report table DIR...`` puts the test log-likelihood of every run (``summary.json``: mean ± 2 s.e. in nats)
beside the published numbers shipped in ``relgrad_cli/published.yaml`` (the relative-gradient paper's reference
implementation and the MAF paper's baselines) → ``table.md``, ``table.csv``, ``published.csv``. Every swept
override key (``.hydra/overrides.yaml``) gets a column, and the per-model rows keep configurations apart: only runs
that differ in nothing but the seed share a cell (their mean, "mean of N seeds"). Synthetic ICA has
no published numbers; when the folders hold ICA runs (data=ica), the table also gets the ``ica`` comparison below
(relgrad beside FastICA on the same data) as its own section of ``table.md``, and ``ica.csv``. ``--wandb`` also
logs the tables to an offline W&B run inside the output folder.

``relgrad-report curves DIR...`` plots the exact validation log-likelihood (``metrics.jsonl`` rows with split
"val") against training seconds, one line per run labelled by its gradient mode (each mode its own colour and line
style, so runs whose lines coincide stay visible) → ``curves.png``, ``curves.md``,
``curves.csv`` (with the seconds each run needed to reach the level every run of its group reached).

``relgrad-report ica DIR...`` compares synthetic-ICA runs with scikit-learn's FastICA, fitted by the report on the
same training data (regenerated from each run's ``.hydra/config.yaml``): Amari distance of W·A, mean correlation
coefficient, NLL gap to the true density (nats/dim) and time → ``ica.md``, ``ica.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_COLUMNS = ("test_ll", "test_ll_2se", "best_val_ll", "median_step_ms", "train_seconds", "epochs")


def warn(message: str) -> None:
    print(f"relgrad-report: warning: {message}", file=sys.stderr)


def read_summary(file: Path) -> dict[str, Any] | None:
    """A run's ``summary.json`` as a mapping; None when there is none. A damaged one (not JSON, truncated, not a
    mapping) is named in a warning on stderr and read as missing, so one bad folder does not stop a report."""
    file = Path(file)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"{file} is not readable JSON ({err}); skipped")
        return None
    if not isinstance(data, dict):
        warn(f"{file} is not readable JSON (a {type(data).__name__}, expected an object); skipped")
        return None
    return data


def read_overrides(folder: Path) -> dict[str, str]:
    """The command-line overrides of a run (``.hydra/overrides.yaml``, ``hydra.*`` left out): key → value string;
    empty without the file (or with a damaged one, after a warning)."""
    import yaml

    file = Path(folder) / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    try:
        items = yaml.safe_load(file.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        warn(f"{file} is not readable YAML ({' '.join(str(err).split())}); its overrides are ignored")
        return {}
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, _, value = str(item).partition("=")
        if not key.startswith("hydra."):
            overrides[key.lstrip("+~")] = value
    return overrides


ERROR_FILE = "error.txt"  # a failed sweep job's one-line reason (written by relgrad_cli.train)


def _error_reason(folder: Path) -> str | None:
    try:
        text = (Path(folder) / ERROR_FILE).read_text(errors="replace")
    except OSError:
        return None
    return " ".join(text.split()) or None


def find_jobs(dirs: list[Path]) -> list[dict[str, Any]]:
    """One record per job folder: its path, overrides (key → value string), summary (or None) and, for a job that
    failed, the reason its ``error.txt`` gives (else None)."""
    jobs = []
    for root in dirs:
        for hydra_dir in sorted(Path(root).rglob(".hydra")):
            job = hydra_dir.parent
            summary = read_summary(job / "summary.json")
            error = _error_reason(job) if summary is None else None
            jobs.append({"path": job, "overrides": read_overrides(job), "summary": summary, "error": error})
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
        rows.append([*(job["overrides"].get(k, "") for k in keys), _status(job),
                     *((s or {}).get(c) for c in columns), str(job["path"])])  # fmt: skip
    return header, rows


def _status(job: dict[str, Any]) -> str:
    if job["summary"] is not None:
        return "ok"
    if job.get("error"):
        return f"failed: {job['error']}"
    return "no summary (failed?)"


def numeric_summary_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """The summary keys that hold a number in at least one job (what ``--metric`` can plot)."""
    keys = {k for j in jobs if j["summary"] for k, v in j["summary"].items()
            if not isinstance(v, bool) and _number(v) is not None}  # fmt: skip
    return sorted(keys)


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
    failed = [j for j in jobs if j["summary"] is None]
    explained = sum(1 for j in failed if j.get("error"))
    print(f"{len(jobs)} jobs; wrote {out / 'sweep.md'}, sweep.csv" + (", sweep.png" if plotted else ""))
    print(f"{len(failed)} of {len(jobs)} jobs failed or unfinished (no summary.json)"
          + (f"; {explained} with a reason in {ERROR_FILE}" if failed else ""))  # fmt: skip
    return 0


class ReportError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- published


PUBLISHED_FILE = "published.yaml"


def load_published() -> dict[str, Any]:
    """The published results shipped with the package (``relgrad_cli/published.yaml``), checked by
    :func:`check_published`."""
    from importlib.resources import files

    import yaml

    resource = files("relgrad_cli").joinpath(PUBLISHED_FILE)
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"cannot read the packaged {PUBLISHED_FILE} ({err}); reinstall relgrad") from None
    return check_published(data)


def check_published(data: Any, name: str = PUBLISHED_FILE) -> dict[str, Any]:
    """Check the published-results structure and return it.

    ``{"sources": {key: {"citation", "where", ...}}, "models": [{"key", "label", "paper", "results": {dataset:
    {"ll", "pm"?, "source"}}}]}``: every number is a finite number and names a source that has a citation and a
    location. Raises ReportError naming the first bad entry."""
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict) or not data.get("models"):
        raise ReportError(f"{name}: expected the mappings 'sources' and a list 'models'")
    sources = data["sources"]
    for key, src in sources.items():
        if not isinstance(src, dict) or not src.get("citation") or not src.get("where"):
            raise ReportError(f"{name}: source {key!r} needs a 'citation' and a 'where'")
    keys = set()
    for model in data["models"]:
        if not isinstance(model, dict) or not model.get("key") or not model.get("label") or model["key"] in keys:
            raise ReportError(f"{name}: every model needs a unique 'key' and a 'label' ({model!r})")
        keys.add(model["key"])
        for dataset, entry in (model.get("results") or {}).items():
            where = f"{name}: {model['key']}/{dataset}"
            if not isinstance(entry, dict) or set(entry) - {"ll", "pm", "source"}:
                raise ReportError(f"{where}: an entry holds only ll, pm and source, got {entry!r}")
            if _number(entry.get("ll")) is None:
                raise ReportError(f"{where}: ll={entry.get('ll')!r} is not a number")
            if "pm" in entry and _number(entry["pm"]) is None:
                raise ReportError(f"{where}: pm={entry['pm']!r} is not a number")
            if entry.get("source") not in sources:
                raise ReportError(f"{where}: source {entry.get('source')!r} is not one of {', '.join(sources)}")
    return data


def _published_models(published: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the reference implementation's entry, the baselines)."""
    models = list(published.get("models") or [])
    reference = next((m for m in models if m.get("key") == "reference"), None)
    return reference, [m for m in models if m is not reference]


# ----------------------------------------------------------------------------------------------------- run folders


def find_runs(dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, summary) of every run under ``dirs`` that wrote ``summary.json``, in path order."""
    found: dict[Path, dict[str, Any]] = {}
    for root in dirs:
        for file in sorted(Path(root).rglob("summary.json")):
            summary = read_summary(file)
            if summary is not None and "test_ll" in summary:
                found[file.parent.resolve()] = summary
    return sorted(found.items())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _pm(value: Any, err: Any, digits: int = 3) -> str:
    """The text "value ± err" with a fixed number of decimals; "–" when the value is missing."""
    x, e = _number(value), _number(err)
    if x is None:
        return "–"
    return f"{x:.{digits}f}" + (f" ± {e:.{digits}f}" if e is not None else "")


def _secs(value: Any) -> str:
    """Seconds for a table: three significant digits below 100 s, whole seconds above."""
    x = _number(value)
    return "–" if x is None else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _digits(*values: Any) -> int:
    """Decimals for log-likelihoods: 3 below 100 nats in magnitude, 2 below 1000, else 1 (as the papers print)."""
    m = max((abs(x) for x in map(_number, values) if x is not None), default=0.0)
    return 3 if m < 100 else 2 if m < 1000 else 1


# ----------------------------------------------------------------------------------------------------------- table

SYNTHETIC_DATASETS = ("ica",)  # no published numbers by nature; compared with FastICA instead (ica_table)
ICA_SECTION_TITLE = "## Synthetic ICA: relgrad beside FastICA on the same data"

TABLE_COLUMNS = [
    "dataset", "optim", "gradient", "step_rule", "seed", "test_ll", "test_ll_2se", "gaussian_test_ll", "bits_per_dim",
    "train_seconds",
    "epochs", "best_epoch", "reference_ll", "reference_2se", "delta_vs_reference", "folder",
]  # fmt: skip


# Override keys the tables already show otherwise: the data set is the table's columns, the optim preset labels the
# row, and seeds are what a group averages over.
SHOWN_KEYS = ("data", "optim", "seed")
# Summary fields that tell configurations apart even when the runs have no .hydra/overrides.yaml to say so.
CONFIG_FIELDS = ("dim", "model", "depth", "step_rule", "lr", "batch_size", "dtype", "prior", "activation")


def run_settings(runs: list[tuple[Path, dict[str, Any]]]) -> tuple[list[str], dict[Path, dict[str, str]]]:
    """(the swept override keys, each run's overrides): the keys of ``.hydra/overrides.yaml`` whose value differs
    between runs on the same data set, except those in :data:`SHOWN_KEYS` (a key that only follows the data set,
    such as paper_all's per-dataset experiment, says nothing the dataset column does not). Runs may be averaged
    only when identical in all of them."""
    settings = {folder: read_overrides(folder) for folder, _ in runs}
    keys: list[str] = []
    for overrides in settings.values():
        keys += [k for k in overrides if k not in keys and k not in SHOWN_KEYS]
    by_dataset: dict[str, list[dict[str, str]]] = {}
    for folder, summary in runs:
        by_dataset.setdefault(str(summary.get("dataset")), []).append(settings[folder])
    swept = [k for k in keys if any(len({o.get(k) for o in group}) > 1 for group in by_dataset.values())]
    return swept, settings


def _ordered(
    runs: list[tuple[Path, dict[str, Any]]], swept: list[str], settings: dict[Path, dict[str, str]]
) -> list[tuple[Path, dict[str, Any]]]:
    """Runs by data set, optim, the swept values, seed, folder."""

    def order(run: tuple[Path, dict[str, Any]]) -> tuple:
        folder, s = run
        values = tuple(_sort_key(settings[folder].get(k, "")) for k in swept)
        return (str(s.get("dataset")), str(s.get("optim")), values, _sort_key(s.get("seed")), str(folder))

    return sorted(runs, key=order)


def results_table(
    runs: list[tuple[Path, dict[str, Any]]], published: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """One row per run: our test log-likelihood ± 2 s.e., the reference implementation's, their difference, and
    one column per published baseline (``<key>_ll``)."""
    reference, baselines = _published_models(published)
    ref_results = (reference or {}).get("results", {})
    swept, settings = run_settings(runs)
    at = TABLE_COLUMNS.index("seed")
    header = TABLE_COLUMNS[:at] + swept + TABLE_COLUMNS[at:] + [f"{m['key']}_ll" for m in baselines]
    rows = []
    for folder, s in _ordered(runs, swept, settings):
        ref = ref_results.get(s.get("dataset"), {})
        ours, ref_ll = _number(s.get("test_ll")), _number(ref.get("ll"))
        delta = ours - ref_ll if ours is not None and ref_ll is not None else None
        rows.append([
            s.get("dataset"), s.get("optim"), s.get("gradient"), s.get("step_rule"),
            *(settings[folder].get(k, "") for k in swept), s.get("seed"), ours,
            _number(s.get("test_ll_2se")), _number(s.get("gaussian_test_ll")), _number(s.get("bits_per_dim")),
            _number(s.get("train_seconds")),
            s.get("epochs"), s.get("best_epoch"), ref_ll, _number(ref.get("pm")), delta, str(folder),
            *(_number(m.get("results", {}).get(s.get("dataset"), {}).get("ll")) for m in baselines),
        ])  # fmt: skip
    return header, rows


def published_rows(published: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Long format: one row per published number with its source."""
    sources = published.get("sources", {})
    header = ["model", "paper", "dataset", "test_ll", "pm", "source", "citation", "where"]
    rows = []
    for m in published.get("models", []):
        for dataset, e in m.get("results", {}).items():
            src = sources.get(e["source"], {})
            citation, where = (" ".join(str(src.get(k, "")).split()) for k in ("citation", "where"))
            rows.append([m["label"], m.get("paper"), dataset, e["ll"], e.get("pm"), e["source"], citation, where])
    return header, rows


def table_markdown(
    runs: list[tuple[Path, dict[str, Any]]], published: dict[str, Any], ica_section: str | None = None
) -> str:
    """Two tables: every run beside the reference implementation, then models × datasets with the MAF baselines;
    then ``ica_section`` (the synthetic-ICA comparison with FastICA, see :func:`ica_markdown`) when given."""
    reference, baselines = _published_models(published)
    ref_results = (reference or {}).get("results", {})
    swept, settings = run_settings(runs)
    lines = [
        "## Test log-likelihood (nats per example, mean ± 2 s.e.)",
        "",
        "| dataset | optim | gradient | " + "".join(f"{k} | " for k in swept) + "seed | ours | Gaussian (same data) "
        "| reference impl. | ours − ref. | bits/dim | train s | epochs |",
        "|---|---|---|" + "---|" * len(swept) + "---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = _ordered(runs, swept, settings)
    for folder, s in ordered:
        ref = ref_results.get(s.get("dataset"), {})
        d = _digits(s.get("test_ll"), ref.get("ll"))
        ours, ref_ll = _number(s.get("test_ll")), _number(ref.get("ll"))
        delta = f"{ours - ref_ll:+.{d}f}" if ours is not None and ref_ll is not None else "–"
        bpd = _number(s.get("bits_per_dim"))
        secs = _number(s.get("train_seconds"))
        lines.append(
            f"| {s.get('dataset')} | {s.get('optim')} | {s.get('gradient')} | "
            + "".join(f"{settings[folder].get(k, '–') or '–'} | " for k in swept)
            + f"{s.get('seed')} "
            f"| {_pm(ours, s.get('test_ll_2se'), d)} | {_pm(s.get('gaussian_test_ll'), None, d)} "
            f"| {_pm(ref_ll, ref.get('pm'), d)} | {delta} "
            f"| {f'{bpd:.3f}' if bpd is not None else '–'} | {_secs(secs)} "
            f"| {s.get('epochs', '–')} |"
        )
    datasets = sorted({str(s.get("dataset")) for _, s in runs})
    lines += ["", "## Beside the published models (nats per example; published ± as printed by the source)", "",
              "| model | " + " | ".join(datasets) + " |", "|---|" + "---:|" * len(datasets)]  # fmt: skip

    # One row per configuration: runs are averaged only when they differ in nothing but the seed (every swept
    # override key the same, and every configuration field of the summary that differs between runs on one data set:
    # what tells runs apart when they have no overrides.yaml; fields that differ only across data sets, like dim,
    # belong to the data set).
    def base_of(folder: Path, s: dict[str, Any]) -> tuple:
        return str(s.get("optim")), str(s.get("gradient")), tuple(settings[folder].get(k, "") for k in swept)

    within: dict[tuple, set[tuple]] = {}
    for folder, s in ordered:
        within.setdefault((base_of(folder, s), str(s.get("dataset"))), set()).add(
            tuple(str(s.get(f)) for f in CONFIG_FIELDS)
        )
    varying: dict[tuple, set[str]] = {}
    for (base, _), configs in within.items():
        varying.setdefault(base, set()).update(
            f for i, f in enumerate(CONFIG_FIELDS) if len({c[i] for c in configs}) > 1
        )
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for folder, s in ordered:
        base = base_of(folder, s)
        told = tuple((f, str(s.get(f))) for f in CONFIG_FIELDS if f in varying[base])
        groups.setdefault((*base, told), {}).setdefault(str(s.get("dataset")), []).append(s)
    for (optim, gradient, values, told), by_dataset in sorted(
        groups.items(),
        key=lambda g: (g[0][:2], tuple(_sort_key(v) for v in g[0][2]), tuple(_sort_key(v) for _, v in g[0][3])),
    ):
        details = [str(gradient)] + [f"{k}={v or 'default'}" for k, v in zip(swept, values, strict=True)]
        details += [f"{f}={v}" for f, v in told]
        cells = []
        for ds in datasets:
            got = by_dataset.get(ds, [])
            if not got:
                cells.append("–")
            elif len(got) == 1:
                cells.append(_pm(got[0].get("test_ll"), got[0].get("test_ll_2se"), _digits(got[0].get("test_ll"))))
            else:
                mean = _mean([float(g["test_ll"]) for g in got])
                seeds = len({str(g.get("seed")) for g in got})
                what = f"{len(got)} seeds" if seeds == len(got) else f"{len(got)} runs, {seeds} seeds"
                cells.append(f"{mean:.{_digits(mean)}f} (mean of {what})")
        lines.append(f"| **ours: {optim}** ({', '.join(details)}) | " + " | ".join(cells) + " |")
    for m in ([reference] if reference else []) + baselines:
        res = m.get("results", {})
        if not any(ds in res for ds in datasets):
            continue
        cells = [_pm(res[ds]["ll"], res[ds].get("pm"), _digits(res[ds]["ll"])) if ds in res else "–" for ds in datasets]
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    known = {ds for m in published.get("models", []) for ds in m.get("results", {})}
    missing = [ds for ds in datasets if ds not in known and ds not in SYNTHETIC_DATASETS]
    if missing:
        lines += ["", "No published numbers for: " + ", ".join(missing) + "."]
    if any(ds in SYNTHETIC_DATASETS for ds in datasets):
        where = "the section below" if ica_section else "relgrad-report ica"
        lines += ["", f"ica: synthetic data, so no published numbers by nature; its comparison is FastICA on the same "
                      f"data ({where})."]  # fmt: skip
    lines += ["", "Sources: " + "; ".join(f"{m['label']}: {m.get('paper')}" for m in [reference] if m)
              + "; baselines: Papamakarios et al. 2017 (MAF), Tables 1–2. Every number's source is in published.csv "
              "(relgrad_cli/published.yaml)."]  # fmt: skip
    if ica_section:
        lines += ["", ICA_SECTION_TITLE, "", ica_section.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _wandb_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int)):
        return v
    x = _number(v)
    return x if x is not None and isinstance(v, float) else (None if isinstance(v, float) else str(v))


def log_to_wandb(
    out: Path, tables: dict[str, tuple[list[str], list[list[Any]]]], name: str, images: dict[str, Path] | None = None
) -> Path:
    """Log ``tables`` (name → (header, rows)) and ``images`` (name → PNG file) to an offline W&B run whose files all
    stay under ``out/wandb``. Returns the offline run folder (``wandb sync`` uploads it later)."""
    from .tracking import finish_wandb, start_wandb

    run, saved = start_wandb(out, project="relgrad", mode="offline", job_type="report", name=name)
    try:
        import wandb

        run.log({**{key: wandb.Table(columns=header, data=[[_wandb_value(v) for v in row] for row in rows])
                    for key, (header, rows) in tables.items()},
                 **{key: wandb.Image(str(path)) for key, path in (images or {}).items()}})  # fmt: skip
        return Path(run.dir).parent
    finally:
        finish_wandb(run, saved)


def cmd_table(args: argparse.Namespace) -> int:
    runs = find_runs(args.dirs)
    if not runs:
        raise ReportError(f"no finished runs (folders with summary.json) under {', '.join(map(str, args.dirs))}")
    published = load_published()
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(runs, published)
    pub_header, pub_rows = published_rows(published)
    tables = {"results": (header, rows), "published": (pub_header, pub_rows)}
    ica_section = None
    if any(s.get("dataset") in SYNTHETIC_DATASETS for _, s in runs):
        try:
            tables["ica"] = ica_table(args.dirs, fun=args.fun, max_iter=args.max_iter)
            ica_section = ica_markdown(*tables["ica"])
        except ReportError as err:  # the density table stands on its own; say why the comparison is missing
            ica_section = f"FastICA comparison not computed: {err}\n"
            print(f"relgrad-report: warning: {ica_section}", end="", file=sys.stderr)
    md = table_markdown(runs, published, ica_section)
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(to_csv(header, rows))
    (out / "published.csv").write_text(to_csv(pub_header, pub_rows))
    if "ica" in tables:
        (out / "ica.csv").write_text(to_csv(*tables["ica"]))
    print(md)
    wrote = f"wrote {out / 'table.md'}, table.csv, published.csv" + (", ica.csv" if "ica" in tables else "")
    if args.wandb:
        run_dir = log_to_wandb(out, tables, "report-table")
        wrote += f"; W&B offline run {run_dir} (upload with: wandb sync {run_dir})"
    print(f"{len(runs)} runs; {wrote}")
    return 0


# ---------------------------------------------------------------------------------------------------------- curves

GRADIENT_STYLE = {"relative": "C0", "autograd_logdet": "C3", "euclidean": "C1", "no_logdet": "C7"}
# (line style, width) per gradient mode. autograd_logdet and euclidean compute the same gradient, so their lines can
# coincide exactly: euclidean, drawn after autograd_logdet (runs are drawn in gradient order), is dashed so that the
# wider dotted autograd_logdet line under it shows in its gaps.
GRADIENT_LINESTYLE = {"relative": ("-", 2.0), "autograd_logdet": ((0, (1, 1)), 3.2), "euclidean": ((0, (5, 3)), 2.0),
                      "no_logdet": ("-.", 2.0)}  # fmt: skip


def _read_config(folder: Path) -> dict[str, Any] | None:
    """The run's composed configuration (``.hydra/config.yaml``), interpolations resolved; None without one."""
    file = folder / ".hydra" / "config.yaml"
    if not file.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    except Exception as err:  # noqa: BLE001 (any OmegaConf parse or resolution error)
        raise ReportError(f"{file} cannot be read ({err}); is it a relgrad-train run folder?") from None


def load_curves(dirs: list[Path]) -> list[dict[str, Any]]:
    """One record per run folder holding ``metrics.jsonl`` with validation rows: its label parts and (seconds, ll)."""
    curves = []
    files = sorted({f.resolve() for root in dirs for f in Path(root).rglob("metrics.jsonl")})
    for file in files:
        folder = file.parent
        points, records = [], []
        for n, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ReportError(f"{file}:{n} is not a JSON line; the file is damaged") from None
            if rec.get("split") == "val" and _number(rec.get("ll")) is not None:
                points.append((float(rec["train_seconds"]), float(rec["ll"]), int(rec.get("epoch", len(points) + 1))))
                records.append(rec)
        if not points:
            continue
        summary = read_summary(folder / "summary.json") or {}
        cfg = _read_config(folder) or {}
        optim = cfg.get("optim", {})
        data = cfg.get("data", {})
        curves.append({
            "folder": folder,
            "gradient": summary.get("gradient") or optim.get("gradient") or "?",
            "step_rule": summary.get("step_rule") or optim.get("step") or "?",
            "dataset": summary.get("dataset") or data.get("name") or "?",
            "dim": summary.get("dim") or data.get("dim"),
            "seed": summary.get("seed", cfg.get("seed")),
            "model": summary.get("model") or cfg.get("model", {}).get("name") or "?",
            "finished": bool(summary),
            "summary": summary,
            "points": sorted(points),
            "records": records,
        })  # fmt: skip
    return curves


def _group_key(c: dict[str, Any]) -> str:
    return f"{c['dataset']} (D={c['dim']})" if c["dim"] is not None else str(c["dataset"])


def curve_summary(curves: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per run: best validation log-likelihood, training seconds, and the seconds it needed to reach the level
    every run of its group reached (the lowest of the groups' best values) — the speed comparison that matters."""
    header = ["group", "gradient", "step_rule", "seed", "evaluations", "best_val_ll", "train_seconds",
              "common_level", "seconds_to_common_level", "folder"]  # fmt: skip
    rows = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in curves:
        groups.setdefault(_group_key(c), []).append(c)
    for group, members in sorted(groups.items()):
        level = min(max(p[1] for p in c["points"]) for c in members)
        for c in sorted(members, key=lambda c: (c["gradient"], _sort_key(c["seed"]))):
            reach = next(p[0] for p in c["points"] if p[1] >= level)
            best = max(p[1] for p in c["points"])
            rows.append([group, c["gradient"], c["step_rule"], c["seed"], len(c["points"]), best, c["points"][-1][0],
                         level, reach, str(c["folder"])])  # fmt: skip
    return header, rows


def curves_plot(curves: list[dict[str, Any]], path: Path, logx: bool = False) -> None:
    """Validation log-likelihood against training seconds: one panel per dataset, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for c in curves:
        groups.setdefault(_group_key(c), []).append(c)
    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(7.5 * n, 5.2), squeeze=False)
    for ax, (group, members) in zip(axes[0], sorted(groups.items()), strict=True):
        gradients = {c["gradient"] for c in members}
        rules = {c["step_rule"] for c in members}
        seeds_per_gradient = {g: sum(c["gradient"] == g for c in members) for g in gradients}
        lls = sorted(p[1] for c in members for p in c["points"])
        for i, c in enumerate(sorted(members, key=lambda c: (c["gradient"], _sort_key(c["seed"])))):
            xs, ys = [p[0] for p in c["points"]], [p[1] for p in c["points"]]
            label = c["gradient"] + (f" + {c['step_rule']}" if len(rules) > 1 else "")
            if seeds_per_gradient[c["gradient"]] > 1:
                label += f", seed {c['seed']}"
            if not c["finished"]:
                label += " (unfinished)"
            color = GRADIENT_STYLE.get(c["gradient"], f"C{4 + i % 3}")
            style, width = GRADIENT_LINESTYLE.get(c["gradient"], ((0, (3, 1, 1, 1, 1, 1)), 2.0))
            ax.plot(xs, ys, linestyle=style, color=color, lw=width, alpha=0.9, label=label)
            ax.plot(xs[-1], ys[-1], "o", color=color, ms=6)
            best = max(range(len(ys)), key=ys.__getitem__)
            ax.plot(xs[best], ys[best], "*", color=color, ms=12, mec="black", mew=0.6)
        # The first evaluations of a fresh model sit far below the rest: frame the part where runs differ.
        hi, lo = lls[-1], lls[int(0.1 * (len(lls) - 1))]
        pad = 0.06 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
        if logx and min(p[0] for c in members for p in c["points"]) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("training time (s, evaluation excluded)")
        ax.set_ylabel("validation log-likelihood (nats, exact)")
        seeds = {c["seed"] for c in members}
        shared = [f"seed {min(seeds)}"] if len(seeds) == 1 else []
        shared += [f"{min(rules)} steps"] if len(rules) == 1 else []
        ax.set_title(group + (f", {', '.join(shared)} for every run" if shared else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(title="gradient (★ best, ● last)", loc="lower right")
    fig.suptitle("Exact maximum likelihood: one objective, different ways to compute its gradient")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_markdown(rows: list[list[Any]]) -> str:
    lines = ["| data | gradient | step | seed | evaluations | best val LL | train s | common level | s to reach it |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for group, gradient, step, seed, n, best, secs, level, reach, _ in rows:
        lines.append(f"| {group} | {gradient} | {step} | {seed} | {n} | {best:.4f} | {_secs(secs)} | {level:.4f} "
                     f"| {_secs(reach)} |")  # fmt: skip
    lines += [
        "",
        "common level: the lowest best validation log-likelihood among the runs on the same data, a level every "
        "one of them reached; s to reach it: training seconds each run needed to first get there.",
    ]
    return "\n".join(lines) + "\n"


def cmd_curves(args: argparse.Namespace) -> int:
    curves = load_curves(args.dirs)
    if not curves:
        raise ReportError(
            f"no run folders with validation records (metrics.jsonl rows with split 'val') under "
            f"{', '.join(map(str, args.dirs))}"
        )
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    curves_plot(curves, out / "curves.png", logx=args.logx)
    header, rows = curve_summary(curves)
    md = curves_markdown(rows)
    (out / "curves.md").write_text(md)
    (out / "curves.csv").write_text(to_csv(header, rows))
    print(md)
    print(f"{len(curves)} runs; wrote {out / 'curves.png'}, curves.md, curves.csv")
    return 0


# ------------------------------------------------------------------------------------------------------------- ica

FASTICA_FUNS = ("logcosh", "exp", "cube")


def prior_variance(name: str) -> float:
    """Var(s) = ∫ s² p(s) ds of a registered univariate prior, by quadrature on its log-density (e.g. Laplace: 2)."""
    import numpy as np
    import torch

    from .priors import get_prior

    s = torch.linspace(-80.0, 80.0, 320001, dtype=torch.float64)
    p = get_prior(name).log_prob(s).exp().numpy()
    s = s.numpy()
    return float(np.trapezoid(s * s * p, s) / np.trapezoid(p, s))


def fastica_baseline(ds: Any, fun: str = "logcosh", max_iter: int = 10000, random_state: int = 0) -> dict[str, Any]:
    """FastICA on ``ds.train`` (whitening to unit variance included), scored on ``ds.test`` against the truth.

    The unmixing matrix is W = ``components_`` (whitening included): s = W (x − μ). Metrics:
    Amari distance of W·A (linear mixing only), MCC of W(x_test − μ) against the true test sources, and the NLL gap
    of FastICA's linear model read as a density: rows of W rescaled so that each estimated training source has the
    prior's variance (Laplace: 2), W̃ = diag(σ_p / sd_i) W, then log p(x) = Σ_i log p_s((W̃ (x − μ))_i) + log|det W̃|,
    exact for that (affine) model; gap = (true test log-likelihood − its mean) / D in nats/dim.

    Returns amari, mcc, test_ll, nll_gap_per_dim, seconds (fit), unmixing (W), density_unmixing (W̃), mean (μ),
    iterations and converged."""
    import warnings

    import numpy as np
    import torch
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    from .metrics import amari_distance, mean_corr_coef
    from .priors import get_prior

    ica = FastICA(n_components=ds.dim, whiten="unit-variance", fun=fun, max_iter=max_iter, random_state=random_state)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(np.asarray(ds.train, dtype=np.float64))
    seconds = time.perf_counter() - started
    w = np.asarray(ica.components_, dtype=np.float64)
    mu = np.asarray(ica.mean_, dtype=np.float64)
    truth = ds.truth
    s_train = (np.asarray(ds.train, dtype=np.float64) - mu) @ w.T
    w_density = w * (math.sqrt(prior_variance(truth.source)) / s_train.std(axis=0))[:, None]
    s_test = (np.asarray(ds.test, dtype=np.float64) - mu) @ w_density.T
    log_prob = get_prior(truth.source).log_prob(torch.from_numpy(s_test)).sum(-1).numpy()
    test_ll = float(np.mean(log_prob) + np.linalg.slogdet(w_density)[1])
    true_ll = float(np.mean(truth.test_log_prob))
    return {
        "amari": amari_distance(w @ truth.mixing) if truth.mixing is not None else None,
        "mcc": mean_corr_coef(s_test, truth.test_sources),
        "test_ll": test_ll,
        "nll_gap_per_dim": (true_ll - test_ll) / ds.dim,
        "seconds": seconds,
        "unmixing": w,
        "density_unmixing": w_density,
        "mean": mu,
        "iterations": int(ica.n_iter_),
        "converged": int(ica.n_iter_) < max_iter,
    }


def _ica_data_label(data: dict[str, Any]) -> str:
    mixing = data.get("mixing")
    depth = f" depth {data.get('mixing_depth')}" if mixing == "mlp" else ""
    return (f"D={data.get('dim')}, {data.get('source')} sources, {mixing}{depth} mixing, cond {data.get('condition')},"
            f" N={data.get('n_train')}, data seed {data.get('seed')}")  # fmt: skip


def ica_table(dirs: list[Path], fun: str = "logcosh", max_iter: int = 10000) -> tuple[list[str], list[list[Any]]]:
    """Rows: every ICA run under ``dirs`` and, once per distinct dataset, FastICA on the same data."""
    from .data import DatasetError, load_dataset

    header = ["data", "method", "seed", "amari", "mcc", "nll_gap_per_dim", "train_seconds", "fit_seconds", "steps",
              "folder"]  # fmt: skip
    groups: dict[str, dict[str, Any]] = {}
    for folder, summary in find_runs(dirs):
        cfg = _read_config(folder)
        if cfg is None:
            if summary.get("dataset") not in SYNTHETIC_DATASETS:
                continue  # not an ICA run (e.g. a density run beside them in `relgrad-report table`)
            raise ReportError(
                f"{folder} has no .hydra/config.yaml, so its data cannot be regenerated for FastICA; run through "
                "relgrad-train (or save the composed config there)"
            )
        data = cfg.get("data") or {}
        if data.get("name") != "ica":
            continue
        options = {k: v for k, v in data.items() if k not in ("name", "root")}
        key = json.dumps(options, sort_keys=True)
        groups.setdefault(key, {"options": options, "runs": []})["runs"].append((folder, summary))
    if not groups:
        raise ReportError(f"no finished ICA runs (data=ica, with summary.json) under {', '.join(map(str, dirs))}")
    rows = []
    for _, group in sorted(groups.items()):
        options = group["options"]
        label = _ica_data_label(options)
        for folder, s in sorted(group["runs"], key=lambda r: (str(r[1].get("gradient")), _sort_key(r[1].get("seed")))):
            rows.append([label, f"relgrad {s.get('gradient')} gradient + {s.get('step_rule')}", s.get("seed"),
                         s.get("amari"), s.get("mcc"), s.get("nll_gap_per_dim"), s.get("train_seconds"),
                         s.get("fit_seconds"), s.get("steps"), str(folder)])  # fmt: skip
        try:
            ds = load_dataset("ica", ".", **options)
        except (DatasetError, TypeError) as err:
            raise ReportError(f"cannot regenerate the ICA data {options} for FastICA: {err}") from None
        fi = fastica_baseline(ds, fun=fun, max_iter=max_iter)
        note = "" if fi["converged"] else f", not converged in {max_iter} iterations"
        rows.append([label, f"FastICA ({fun}, unit-variance whitening{note})", 0, fi["amari"], fi["mcc"],
                     fi["nll_gap_per_dim"], fi["seconds"], fi["seconds"], fi["iterations"], "–"])  # fmt: skip
    return header, rows


def ica_markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = []
    for label in dict.fromkeys(r[0] for r in rows):
        lines += [f"### {label}", "",
                  "| method | seed | Amari | MCC | NLL gap (nats/dim) | train s | wall s | steps / iterations |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in (r for r in rows if r[0] == label):
            amari, mcc, gap, train_s, wall_s = (_number(v) for v in r[3:8])
            cells = [f"{amari:.5f}" if amari is not None else "–", f"{mcc:.4f}" if mcc is not None else "–",
                     f"{gap:.4f}" if gap is not None else "–", f"{train_s:.2f}" if train_s is not None else "–",
                     f"{wall_s:.2f}" if wall_s is not None else "–"]  # fmt: skip
            lines.append(f"| {r[1]} | {r[2]} | " + " | ".join(cells) + f" | {r[8]} |")
        lines.append("")
    lines.append(
        "Amari: squared-ratio Amari index of W·A (0 = perfect; linear model and mixing only). MCC: mean |corr| of "
        "estimated and true test sources after Hungarian matching. NLL gap: (true − model test log-likelihood)/D; "
        "for FastICA, of its linear model with rows rescaled to the prior's variance (Laplace: 2), which is an exact "
        "density. train s: relgrad's optimisation time (evaluation excluded); wall s: its fit loop with the per-epoch "
        "validation; FastICA: its fit time (whitening included) on the same training data."
    )
    return "\n".join(lines) + "\n"


def cmd_ica(args: argparse.Namespace) -> int:
    header, rows = ica_table(args.dirs, fun=args.fun, max_iter=args.max_iter)
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    md = ica_markdown(header, rows)
    (out / "ica.md").write_text(md)
    (out / "ica.csv").write_text(to_csv(header, rows))
    print(md)
    print(f"{sum(1 for r in rows if r[-1] != '–')} runs; wrote {out / 'ica.md'}, ica.csv")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import COLUMNS, clock_of, compare_markdown, compare_plot, compare_rows

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


def parser() -> argparse.ArgumentParser:
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
