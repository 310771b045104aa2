"""``relgrad-report curves DIR...``: learning curves, one line per run.

Plots the exact validation log-likelihood (``metrics.jsonl`` rows with split "val") against training seconds, one
line per run labelled by its gradient mode (each mode its own colour and line style, so runs whose lines coincide
stay visible) → ``curves.png``, ``curves.md``, ``curves.csv`` (with the seconds each run needed to reach the level
every run of its group reached).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import ReportError, seconds_text, sort_key, to_csv
from .runs import find_runs

GRADIENT_STYLE = {"relative": "C0", "autograd_logdet": "C3", "euclidean": "C1", "no_logdet": "C7"}
# (line style, width) per gradient mode. autograd_logdet and euclidean compute the same gradient, so their lines can
# coincide exactly: euclidean, drawn after autograd_logdet (runs are drawn in gradient order), is dashed so that the
# wider dotted autograd_logdet line under it shows in its gaps.
GRADIENT_LINESTYLE = {"relative": ("-", 2.0), "autograd_logdet": ((0, (1, 1)), 3.2), "euclidean": ((0, (5, 3)), 2.0),
                      "no_logdet": ("-.", 2.0)}  # fmt: skip


def load_curves(dirs: list[Path]) -> list[dict[str, Any]]:
    """One record per run folder holding ``metrics.jsonl`` with validation rows: its label parts (from the summary,
    else from ``.hydra/config.yaml``), ``points`` (seconds, ll, epoch) in time order and the validation ``records``."""
    curves = []
    for run in find_runs(dirs):
        records = run.validation
        if not records:
            continue
        points = [(float(r["train_seconds"]), float(r["ll"]), int(r.get("epoch", n))) for n, r in enumerate(records, 1)]
        summary = run.summary or {}
        cfg = run.config or {}
        optim = cfg.get("optim", {})
        data = cfg.get("data", {})
        curves.append({
            "folder": run.folder,
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
        for c in sorted(members, key=lambda c: (c["gradient"], sort_key(c["seed"]))):
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
        for i, c in enumerate(sorted(members, key=lambda c: (c["gradient"], sort_key(c["seed"])))):
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
    """The rows of :func:`curve_summary` as a markdown table, then what the common level is."""
    lines = ["| data | gradient | step | seed | evaluations | best val LL | train s | common level | s to reach it |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for group, gradient, step, seed, n, best, train_s, level, reach, _ in rows:
        lines.append(f"| {group} | {gradient} | {step} | {seed} | {n} | {best:.4f} | {seconds_text(train_s)} "
                     f"| {level:.4f} | {seconds_text(reach)} |")  # fmt: skip
    lines += [
        "",
        "common level: the lowest best validation log-likelihood among the runs on the same data, a level every "
        "one of them reached; s to reach it: training seconds each run needed to first get there.",
    ]
    return "\n".join(lines) + "\n"


def cmd_curves(args: argparse.Namespace) -> int:
    """``relgrad-report curves``: write curves.png, curves.md and curves.csv, print the table."""
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
