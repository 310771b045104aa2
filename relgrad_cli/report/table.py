"""``relgrad-report table DIR...``: the test log-likelihood of every run beside the published numbers.

Puts the test log-likelihood of every run (``summary.json``: mean ± 2 s.e. in nats) beside the published numbers
shipped in ``relgrad_cli/published.yaml`` (the relative-gradient paper's reference implementation and the MAF paper's
baselines) → ``table.md``, ``table.csv``, ``published.csv``. Every swept override key (``.hydra/overrides.yaml``) gets
a column, and the per-model rows keep configurations apart: only runs that differ in nothing but the seed share a
cell (their mean, "mean of N seeds"). Synthetic ICA has no published numbers; when the folders hold ICA runs
(data=ica), the table also gets the ``ica`` comparison (relgrad beside FastICA on the same data, see
:mod:`relgrad_cli.report.ica`) as its own section of ``table.md``, and ``ica.csv``. ``--wandb`` also logs the tables
to an offline W&B run inside the output folder.

The published numbers are checked when read (:func:`check_published`): every number names a source with a citation
and a location.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    ReportError,
    ll_digits,
    log_to_wandb,
    mean,
    number,
    plus_minus,
    seconds_text,
    sort_key,
    to_csv,
    warn,
)
from .ica import SYNTHETIC_DATASETS, ica_markdown, ica_table
from .runs import Run, find_runs

# ------------------------------------------------------------------------------------------------ published numbers

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
            if number(entry.get("ll")) is None:
                raise ReportError(f"{where}: ll={entry.get('ll')!r} is not a number")
            if "pm" in entry and number(entry["pm"]) is None:
                raise ReportError(f"{where}: pm={entry['pm']!r} is not a number")
            if entry.get("source") not in sources:
                raise ReportError(f"{where}: source {entry.get('source')!r} is not one of {', '.join(sources)}")
    return data


def _published_models(published: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the reference implementation's entry, the baselines)."""
    models = list(published.get("models") or [])
    reference = next((m for m in models if m.get("key") == "reference"), None)
    return reference, [m for m in models if m is not reference]


# ----------------------------------------------------------------------------------------------------------- table

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


def table_swept_keys(runs: list[Run]) -> list[str]:
    """The keys of ``.hydra/overrides.yaml`` whose value differs between runs on the same data set, except those in
    :data:`SHOWN_KEYS` (a key that only follows the data set, such as paper_all's per-dataset experiment, says
    nothing the dataset column does not). Runs may be averaged only when identical in all of them."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys and k not in SHOWN_KEYS]
    by_dataset: dict[str, list[dict[str, str]]] = {}
    for run in runs:
        by_dataset.setdefault(str(run.summary.get("dataset")), []).append(run.overrides)
    return [k for k in keys if any(len({o.get(k) for o in group}) > 1 for group in by_dataset.values())]


def _ordered(runs: list[Run], swept: list[str]) -> list[Run]:
    """Runs by data set, optim, the swept values, seed, folder."""

    def order(run: Run) -> tuple:
        s = run.summary
        values = tuple(sort_key(run.overrides.get(k, "")) for k in swept)
        return (str(s.get("dataset")), str(s.get("optim")), values, sort_key(s.get("seed")), str(run.folder))

    return sorted(runs, key=order)


def results_table(runs: list[Run], published: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per run: our test log-likelihood ± 2 s.e., the reference implementation's, their difference, and
    one column per published baseline (``<key>_ll``)."""
    reference, baselines = _published_models(published)
    ref_results = (reference or {}).get("results", {})
    swept = table_swept_keys(runs)
    at = TABLE_COLUMNS.index("seed")
    header = TABLE_COLUMNS[:at] + swept + TABLE_COLUMNS[at:] + [f"{m['key']}_ll" for m in baselines]
    rows = []
    for run in _ordered(runs, swept):
        s = run.summary
        ref = ref_results.get(s.get("dataset"), {})
        ours, ref_ll = number(s.get("test_ll")), number(ref.get("ll"))
        delta = ours - ref_ll if ours is not None and ref_ll is not None else None
        rows.append([
            s.get("dataset"), s.get("optim"), s.get("gradient"), s.get("step_rule"),
            *(run.overrides.get(k, "") for k in swept), s.get("seed"), ours,
            number(s.get("test_ll_2se")), number(s.get("gaussian_test_ll")), number(s.get("bits_per_dim")),
            number(s.get("train_seconds")),
            s.get("epochs"), s.get("best_epoch"), ref_ll, number(ref.get("pm")), delta, str(run.folder),
            *(number(m.get("results", {}).get(s.get("dataset"), {}).get("ll")) for m in baselines),
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


def table_markdown(runs: list[Run], published: dict[str, Any], ica_section: str | None = None) -> str:
    """Two tables: every run beside the reference implementation, then models × datasets with the MAF baselines;
    then ``ica_section`` (the synthetic-ICA comparison with FastICA, see :func:`ica_markdown`) when given."""
    reference, baselines = _published_models(published)
    ref_results = (reference or {}).get("results", {})
    swept = table_swept_keys(runs)
    lines = [
        "## Test log-likelihood (nats per example, mean ± 2 s.e.)",
        "",
        "| dataset | optim | gradient | " + "".join(f"{k} | " for k in swept) + "seed | ours | Gaussian (same data) "
        "| reference impl. | ours − ref. | bits/dim | train s | epochs |",
        "|---|---|---|" + "---|" * len(swept) + "---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = _ordered(runs, swept)
    for run in ordered:
        s = run.summary
        ref = ref_results.get(s.get("dataset"), {})
        d = ll_digits(s.get("test_ll"), ref.get("ll"))
        ours, ref_ll = number(s.get("test_ll")), number(ref.get("ll"))
        delta = f"{ours - ref_ll:+.{d}f}" if ours is not None and ref_ll is not None else "–"
        bpd = number(s.get("bits_per_dim"))
        train_s = number(s.get("train_seconds"))
        lines.append(
            f"| {s.get('dataset')} | {s.get('optim')} | {s.get('gradient')} | "
            + "".join(f"{run.overrides.get(k, '–') or '–'} | " for k in swept)
            + f"{s.get('seed')} "
            f"| {plus_minus(ours, s.get('test_ll_2se'), d)} | {plus_minus(s.get('gaussian_test_ll'), None, d)} "
            f"| {plus_minus(ref_ll, ref.get('pm'), d)} | {delta} "
            f"| {f'{bpd:.3f}' if bpd is not None else '–'} | {seconds_text(train_s)} "
            f"| {s.get('epochs', '–')} |"
        )
    datasets = sorted({str(run.summary.get("dataset")) for run in runs})
    lines += ["", "## Beside the published models (nats per example; published ± as printed by the source)", "",
              "| model | " + " | ".join(datasets) + " |", "|---|" + "---:|" * len(datasets)]  # fmt: skip

    # One row per configuration: runs are averaged only when they differ in nothing but the seed (every swept
    # override key the same, and every configuration field of the summary that differs between runs on one data set:
    # what tells runs apart when they have no overrides.yaml; fields that differ only across data sets, like dim,
    # belong to the data set).
    def base_of(run: Run) -> tuple:
        s = run.summary
        return str(s.get("optim")), str(s.get("gradient")), tuple(run.overrides.get(k, "") for k in swept)

    within: dict[tuple, set[tuple]] = {}
    for run in ordered:
        s = run.summary
        within.setdefault((base_of(run), str(s.get("dataset"))), set()).add(tuple(str(s.get(f)) for f in CONFIG_FIELDS))
    varying: dict[tuple, set[str]] = {}
    for (base, _), configs in within.items():
        varying.setdefault(base, set()).update(
            f for i, f in enumerate(CONFIG_FIELDS) if len({c[i] for c in configs}) > 1
        )
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for run in ordered:
        s, base = run.summary, base_of(run)
        told = tuple((f, str(s.get(f))) for f in CONFIG_FIELDS if f in varying[base])
        groups.setdefault((*base, told), {}).setdefault(str(s.get("dataset")), []).append(s)
    for (optim, gradient, values, told), by_dataset in sorted(
        groups.items(),
        key=lambda g: (g[0][:2], tuple(sort_key(v) for v in g[0][2]), tuple(sort_key(v) for _, v in g[0][3])),
    ):
        details = [str(gradient)] + [f"{k}={v or 'default'}" for k, v in zip(swept, values, strict=True)]
        details += [f"{f}={v}" for f, v in told]
        cells = []
        for ds in datasets:
            got = by_dataset.get(ds, [])
            if not got:
                cells.append("–")
            elif len(got) == 1:
                one = got[0]
                cells.append(plus_minus(one.get("test_ll"), one.get("test_ll_2se"), ll_digits(one.get("test_ll"))))
            else:
                avg = mean([float(g["test_ll"]) for g in got])
                seeds = len({str(g.get("seed")) for g in got})
                what = f"{len(got)} seeds" if seeds == len(got) else f"{len(got)} runs, {seeds} seeds"
                cells.append(f"{avg:.{ll_digits(avg)}f} (mean of {what})")
        lines.append(f"| **ours: {optim}** ({', '.join(details)}) | " + " | ".join(cells) + " |")
    for m in ([reference] if reference else []) + baselines:
        res = m.get("results", {})
        if not any(ds in res for ds in datasets):
            continue
        cells = [plus_minus(res[ds]["ll"], res[ds].get("pm"), ll_digits(res[ds]["ll"])) if ds in res else "–"
                 for ds in datasets]  # fmt: skip
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


def cmd_table(args: argparse.Namespace) -> int:
    """``relgrad-report table``: write table.md, table.csv, published.csv (and ica.csv), print the tables."""
    found = find_runs(args.dirs)
    runs = [run for run in found if run.evaluated]
    if not runs:
        raise ReportError(f"no finished runs (folders with summary.json) under {', '.join(map(str, args.dirs))}")
    published = load_published()
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(runs, published)
    pub_header, pub_rows = published_rows(published)
    tables = {"results": (header, rows), "published": (pub_header, pub_rows)}
    ica_section = None
    if any(run.summary.get("dataset") in SYNTHETIC_DATASETS for run in runs):
        try:
            tables["ica"] = ica_table(args.dirs, fun=args.fun, max_iter=args.max_iter, runs=found)
            ica_section = ica_markdown(*tables["ica"])
        except ReportError as err:  # the density table stands on its own; say why the comparison is missing
            ica_section = f"FastICA comparison not computed: {err}\n"
            warn(ica_section.rstrip("\n"))
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
