"""``relgrad-report ica DIR...``: synthetic-ICA runs beside scikit-learn's FastICA on the same data.

FastICA is fitted by the report on the same training data (regenerated from each run's ``.hydra/config.yaml``):
Amari distance of W·A, mean correlation coefficient, NLL gap to the true density (nats/dim) and time → ``ica.md``,
``ica.csv``. ``relgrad-report table`` adds the same comparison as a section of its own for ``data=ica`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from .common import ReportError, number, sort_key, to_csv
from .runs import Run, find_runs

SYNTHETIC_DATASETS = ("ica",)  # no published numbers by nature; compared with FastICA instead (ica_table)
FASTICA_FUNS = ("logcosh", "exp", "cube")


def prior_variance(name: str) -> float:
    """Var(s) = ∫ s² p(s) ds of a registered univariate prior, by quadrature on its log-density (e.g. Laplace: 2)."""
    import numpy as np
    import torch

    from ..priors import get_prior

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

    from ..metrics import amari_distance, mean_corr_coef
    from ..priors import get_prior

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


def _gradient_then_seed(run: Run) -> tuple:
    return str(run.summary.get("gradient")), sort_key(run.summary.get("seed"))


def ica_table(
    dirs: list[Path], fun: str = "logcosh", max_iter: int = 10000, runs: list[Run] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Rows: every ICA run under ``dirs`` (or among ``runs``, when given) and, once per distinct dataset, FastICA on
    the same data."""
    from ..data import DatasetError, load_dataset

    header = ["data", "method", "seed", "amari", "mcc", "nll_gap_per_dim", "train_seconds", "fit_seconds", "steps",
              "folder"]  # fmt: skip
    groups: dict[str, dict[str, Any]] = {}
    for run in find_runs(dirs) if runs is None else runs:
        if not run.evaluated:
            continue
        cfg = run.config
        if cfg is None:
            if run.summary.get("dataset") not in SYNTHETIC_DATASETS:
                continue  # not an ICA run (e.g. a density run beside them in `relgrad-report table`)
            raise ReportError(
                f"{run.folder} has no .hydra/config.yaml, so its data cannot be regenerated for FastICA; run through "
                "relgrad-train (or save the composed config there)"
            )
        data = cfg.get("data") or {}
        if data.get("name") != "ica":
            continue
        options = {k: v for k, v in data.items() if k not in ("name", "root")}
        key = json.dumps(options, sort_keys=True)
        groups.setdefault(key, {"options": options, "runs": []})["runs"].append(run)
    if not groups:
        raise ReportError(f"no finished ICA runs (data=ica, with summary.json) under {', '.join(map(str, dirs))}")
    rows = []
    for _, group in sorted(groups.items()):
        options = group["options"]
        label = _ica_data_label(options)
        for run in sorted(group["runs"], key=_gradient_then_seed):
            s = run.summary
            rows.append([label, f"relgrad {s.get('gradient')} gradient + {s.get('step_rule')}", s.get("seed"),
                         s.get("amari"), s.get("mcc"), s.get("nll_gap_per_dim"), s.get("train_seconds"),
                         s.get("fit_seconds"), s.get("steps"), str(run.folder)])  # fmt: skip
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
    """One markdown table per data set (the rows of :func:`ica_table`), then what each column means."""
    lines = []
    for label in dict.fromkeys(r[0] for r in rows):
        lines += [f"### {label}", "",
                  "| method | seed | Amari | MCC | NLL gap (nats/dim) | train s | wall s | steps / iterations |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in (r for r in rows if r[0] == label):
            amari, mcc, gap, train_s, wall_s = (number(v) for v in r[3:8])
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
    """``relgrad-report ica``: write ica.md and ica.csv, print the tables."""
    header, rows = ica_table(args.dirs, fun=args.fun, max_iter=args.max_iter)
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    md = ica_markdown(header, rows)
    (out / "ica.md").write_text(md)
    (out / "ica.csv").write_text(to_csv(header, rows))
    print(md)
    print(f"{sum(1 for r in rows if r[-1] != '–')} runs; wrote {out / 'ica.md'}, ica.csv")
    return 0
