"""relgrad-report table / curves / ica on folders written by real tiny runs, and the shipped published numbers."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_train import _write_dataset, make_cfg
from wandb_log import history_and_summary

from relgrad_cli.report import (
    ReportError,
    check_published,
    fastica_baseline,
    load_curves,
    load_published,
    main,
    prior_variance,
)
from relgrad_cli.train import run

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["logger=none", "trainer.max_epochs=1", "trainer.progress=false", "trainer.samples=4"]
ICA_SMALL = ["experiment=ica_linear", "data.dim=4", "data.n_train=2000", "data.n_val=200", "data.n_test=500",
             "trainer.batch_size=2000", "trainer.max_epochs=150", "logger=none", "trainer.progress=false"]  # fmt: skip


def _run(overrides: list[str], folder: Path) -> dict:
    """Train in-process and leave the folder as relgrad-train would (summary, metrics, .hydra/config.yaml)."""
    cfg = make_cfg(overrides)
    summary = run(cfg, run_dir=folder)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return summary


# ------------------------------------------------------------------------------------------------ published numbers


def test_every_published_number_has_a_source_and_ships_in_the_package(tmp_path):
    data = load_published()
    count = 0
    for model in data["models"]:
        for dataset, entry in model["results"].items():
            assert dataset in {"power", "gas", "hepmass", "miniboone", "bsds300", "mnist"}
            source = data["sources"][entry["source"]]
            assert source["citation"].strip() and source["where"].strip()
            assert math.isfinite(entry["ll"]) and (entry.get("pm") is None or entry["pm"] > 0)
            count += 1
    assert count == 50
    reference = next(m for m in data["models"] if m["key"] == "reference")["results"]
    assert {k: (v["ll"], v["pm"]) for k, v in reference.items()} == {
        "power": (0.065, 0.013), "gas": (6.978, 0.020), "hepmass": (-21.958, 0.019),
        "miniboone": (-13.372, 0.450), "bsds300": (151.12, 0.28), "mnist": (-1375.2, 1.4),
    }  # fmt: skip
    assert {m["label"] for m in data["models"]} >= {"Gaussian", "MADE", "MADE MoG", "Real NVP (5)", "Real NVP (10)",
                                                     "MAF (5)", "MAF (10)", "MAF MoG (5)"}  # fmt: skip
    # found through importlib.resources from an installed-wheel layout, not from the checkout
    site = tmp_path / "site"
    shutil.copytree(ROOT / "relgrad_cli", site / "relgrad_cli", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from relgrad_cli.report import load_published as f; print(sum(len(m['results']) for m in f()['models']))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(site)}).stdout  # fmt: skip
    assert out.strip() == "50"


@pytest.mark.parametrize(
    "entry,words",
    [({"ll": 1.0}, "source None"), ({"ll": 1.0, "source": "nope"}, "source 'nope'"),
     ({"ll": "n/a", "source": "s"}, "ll='n/a'"), ({"ll": 1.0, "pm": "x", "source": "s"}, "pm='x'"),
     ({"ll": 1.0, "source": "s", "note": 3}, "only ll, pm and source")],
)  # fmt: skip
def test_a_number_without_a_valid_source_is_refused(entry, words):
    data = {
        "sources": {"s": {"citation": "c", "where": "w"}},
        "models": [{"key": "k", "label": "K", "results": {"power": entry}}],
    }
    with pytest.raises(ReportError, match="k/power") as err:
        check_published(data)
    assert words in str(err.value)
    with pytest.raises(ReportError, match="'citation' and a 'where'"):
        check_published({"sources": {"s": {"citation": "c"}}, "models": [{"key": "k", "label": "K"}]})


# ----------------------------------------------------------------------------------------------------------- table


def test_table_puts_each_run_beside_the_published_numbers_and_logs_to_wandb_offline(tmp_path, capsys):
    root, runs, out = tmp_path / "data", tmp_path / "runs", tmp_path / "report"
    extra = {name: _write_dataset(name, root) for name in ("power", "mnist")}
    s_rel = _run(["experiment=paper_power", f"data.root={root}", *SHORT], runs / "power-relative")
    s_auto = _run(["experiment=paper_power", "optim=autograd_logdet", f"data.root={root}", *SHORT], runs / "power-auto")
    s_mnist = _run(["experiment=paper_mnist", f"data.root={root}", *SHORT, *extra["mnist"]], runs / "mnist")
    (runs / "failed" / ".hydra").mkdir(parents=True)  # a job that left no summary is not a row

    assert main(["table", str(runs), "--out", str(out), "--wandb"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["dataset"], r["optim"], r["gradient"]) for r in rows] == [
        ("mnist", "relative", "relative"), ("power", "autograd_logdet", "autograd_logdet"),
        ("power", "relative", "relative"),
    ]  # fmt: skip
    for row, s in zip(rows, (s_mnist, s_auto, s_rel), strict=True):
        reference = {"mnist": -1375.2, "power": 0.065}[row["dataset"]]
        assert float(row["test_ll"]) == pytest.approx(s["test_ll"]) and float(row["test_ll_2se"]) == pytest.approx(
            s["test_ll_2se"]
        )
        assert float(row["reference_ll"]) == reference
        assert float(row["delta_vs_reference"]) == pytest.approx(s["test_ll"] - reference)
    assert float(rows[0]["bits_per_dim"]) == pytest.approx(s_mnist["bits_per_dim"]) and rows[2]["bits_per_dim"] == ""
    assert float(rows[2]["maf5_ll"]) == 0.14 and float(rows[0]["maf5_ll"]) == -1300.5 and rows[0]["maf10_ll"] == ""
    md = (out / "table.md").read_text()
    assert md in printed and "0.065 ± 0.013" in md and "-1375.2 ± 1.4" in md
    assert "| MAF MoG (5) | – | 0.300 ± 0.010 |" in md and "| Gaussian | -1366.9 | -7.740 ± 0.020 |" in md
    assert f"| **ours: relative** (relative) | {s_mnist['test_ll']:.1f} ± {s_mnist['test_ll_2se']:.1f} |" in md
    published = list(csv.DictReader((out / "published.csv").open()))
    assert len(published) == 50 and all(r["citation"] and r["where"] for r in published)

    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    history, _, exit_code = history_and_summary(run_file)
    assert exit_code == 0 and history[0]["results/nrows"] == "3" and history[0]["published/nrows"] == "50"
    (table_file,) = run_file.parent.glob("files/media/table/results_*.table.json")
    logged = json.loads(table_file.read_text())
    header = next(csv.reader((out / "table.csv").open()))
    assert logged["columns"] == header
    logged_ll = [row[header.index("test_ll")] for row in logged["data"]]
    assert logged_ll == pytest.approx([float(r["test_ll"]) for r in rows])
    assert os.environ.get("WANDB_DIR") is None  # restored after logging
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*wandb*"))


# ---------------------------------------------------------------------------------------------------------- curves


def test_curves_plot_one_line_per_gradient_mode_on_the_same_data(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "report"
    same = ["data=ica", "data.dim=6", "data.n_train=600", "data.n_val=200", "data.n_test=200", "seed=3",
            "trainer.batch_size=100", "trainer.max_epochs=4", "logger=none", "trainer.progress=false"]  # fmt: skip
    summaries = {o: _run([f"optim={o}", *same], runs / o) for o in ("relative", "adam", "autograd_logdet")}
    shutil.copytree(runs / "adam", runs / "adam-interrupted")  # still running / killed: no summary.json yet
    (runs / "adam-interrupted" / "summary.json").unlink()

    assert main(["curves", str(runs), "--out", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert sorted(r["gradient"] for r in rows) == ["autograd_logdet", "euclidean", "euclidean", "relative"]
    level = min(s["best_val_ll"] for s in summaries.values())
    for r in rows:
        assert r["group"] == "ica (D=6)" and r["evaluations"] == "5"  # the start and 4 epochs
        assert float(r["common_level"]) == pytest.approx(level)
        assert 0 < float(r["seconds_to_common_level"]) <= float(r["train_seconds"])
    by_folder = {Path(r["folder"]).name: r for r in rows}
    for optim, s in summaries.items():
        assert float(by_folder[optim]["best_val_ll"]) == pytest.approx(s["best_val_ll"])
        assert float(by_folder[optim]["train_seconds"]) == pytest.approx(s["train_seconds"])
    interrupted = next(c for c in load_curves([runs]) if c["folder"].name == "adam-interrupted")
    assert not interrupted["finished"] and interrupted["gradient"] == "euclidean"  # read from .hydra/config.yaml
    assert "| ica (D=6) | relative | adam | 3 | 5 |" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------- ica


@pytest.fixture(scope="module")
def ica_runs(tmp_path_factory):
    """The issue's `relgrad-train -m experiment=ica_linear optim=relative,adam`, shrunk: (folder, {optim: summary})."""
    tmp = tmp_path_factory.mktemp("ica")
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:  # as conftest's per-test isolation, for this module-wide fixture
        mp.setenv("RELGRAD_DATA", str(tmp / "data"))
        mp.setenv("HOME", str(tmp / "home"))
        return runs, {o: _run([*ICA_SMALL, f"optim={o}"], runs / {"relative": "relative", "adam": "euclidean"}[o])
                      for o in ("relative", "adam")}  # fmt: skip


def test_ica_report_compares_both_gradients_with_fastica_on_regenerated_data(ica_runs, tmp_path, capsys):
    from sklearn.decomposition import FastICA

    from relgrad_cli.data import load_dataset
    from relgrad_cli.metrics import amari_distance

    (runs, summaries), out = ica_runs, tmp_path / "report"
    s_rel, s_euc = summaries["relative"], summaries["adam"]
    assert main(["ica", str(runs), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "ica.csv").open()))
    assert [r["method"] for r in rows] == [
        "relgrad euclidean gradient + adam", "relgrad relative gradient + adam",
        "FastICA (logcosh, unit-variance whitening)",
    ]  # fmt: skip
    for row, s in zip(rows, (s_euc, s_rel), strict=False):
        for key in ("amari", "mcc", "nll_gap_per_dim", "train_seconds", "fit_seconds"):
            assert float(row[key]) == pytest.approx(s[key])
    ds = load_dataset("ica", tmp_path, dim=4, n_train=2000, n_val=200, n_test=500, mixing="linear", condition=5.0)
    ica = FastICA(4, whiten="unit-variance", fun="logcosh", max_iter=10000, random_state=0).fit(ds.train)
    assert float(rows[2]["amari"]) == pytest.approx(amari_distance(ica.components_ @ ds.truth.mixing), rel=1e-6)
    assert all(float(r["amari"]) < 0.05 and float(r["mcc"]) > 0.98 for r in rows)
    md = (out / "ica.md").read_text()
    assert md in capsys.readouterr().out
    assert "### D=4, laplace sources, linear mixing, cond 5.0, N=2000, data seed 0" in md


def test_table_on_ica_runs_includes_the_fastica_comparison(ica_runs, tmp_path, capsys):
    (runs, summaries), out = ica_runs, tmp_path / "report"
    assert main(["table", str(runs), "--out", str(out), "--wandb"]) == 0
    md = (out / "table.md").read_text()
    assert md in capsys.readouterr().out
    assert [r["dataset"] for r in csv.DictReader((out / "table.csv").open())] == ["ica", "ica"]
    assert "No published numbers" not in md and "ica: synthetic data, so no published numbers by nature" in md
    section = md[md.index("## Synthetic ICA: relgrad beside FastICA on the same data") :]
    assert "### D=4, laplace sources, linear mixing, cond 5.0, N=2000, data seed 0" in section
    for optim, gradient in (("relative", "relative"), ("adam", "euclidean")):
        s = summaries[optim]
        assert s["amari"] < 0.05
        row = f"| relgrad {gradient} gradient + adam | {s['seed']} | {s['amari']:.5f} | {s['mcc']:.4f} |"
        assert row in section
    fastica = [line for line in section.splitlines() if line.startswith("| FastICA (logcosh, unit-variance")]
    assert len(fastica) == 1 and float(fastica[0].split("|")[3]) < 0.05  # its Amari distance

    # ica.csv: the rows `relgrad-report ica` writes (FastICA's timings aside)
    assert main(["ica", str(runs), "--out", str(tmp_path / "ica")]) == 0
    rows, alone = ([r for r in csv.DictReader((d / "ica.csv").open())] for d in (out, tmp_path / "ica"))
    assert [r["method"] for r in rows] == [
        "relgrad euclidean gradient + adam", "relgrad relative gradient + adam",
        "FastICA (logcosh, unit-variance whitening)",
    ]  # fmt: skip
    timing = {"train_seconds", "fit_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == [
        {k: v for k, v in r.items() if k not in timing} for r in alone
    ]
    assert float(rows[1]["amari"]) == pytest.approx(summaries["relative"]["amari"])

    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    history, _, exit_code = history_and_summary(run_file)
    assert exit_code == 0 and history[0]["ica/nrows"] == "3" and history[0]["results/nrows"] == "2"


def test_fastica_density_is_the_exact_likelihood_of_its_rescaled_linear_model():
    from relgrad_cli import InvertibleMLP
    from relgrad_cli.data import load_dataset

    assert prior_variance("laplace") == pytest.approx(2.0, abs=1e-6)
    assert prior_variance("gaussian") == pytest.approx(1.0, abs=1e-6)
    assert prior_variance("logistic") == pytest.approx(math.pi**2 / 3, abs=1e-6)
    ds = load_dataset("ica", ".", dim=3, n_train=3000, n_val=10, n_test=400, mixing="linear")
    fi = fastica_baseline(ds)
    w, mu = fi["density_unmixing"], fi["mean"]
    np.testing.assert_allclose(((ds.train - mu) @ w.T).std(axis=0), math.sqrt(2.0), rtol=1e-7)  # Laplace variance
    flow = InvertibleMLP(3, 1, bias=True, prior="laplace", dtype=torch.float64)  # y = W̃ x − W̃ μ
    with torch.no_grad():
        flow.layers[0].weight.copy_(torch.from_numpy(w))
        flow.layers[0].bias.copy_(torch.from_numpy(-w @ mu))
        test_ll = float(flow.log_prob(torch.from_numpy(ds.test)).mean())
    assert fi["test_ll"] == pytest.approx(test_ll, rel=1e-10)
    assert fi["nll_gap_per_dim"] == pytest.approx((np.mean(ds.truth.test_log_prob) - test_ll) / 3, rel=1e-10)
    assert fi["converged"] and 0 <= fi["amari"] < 0.1


# ---------------------------------------------------------------------------------------------------------- errors


def test_report_errors_name_what_is_missing(tmp_path, capsys):
    for command in ("table", "curves", "ica"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("relgrad-report: error: no ") and str(tmp_path) in err
    bare = tmp_path / "bare"
    run(make_cfg([*ICA_SMALL, "trainer.max_epochs=1"]), run_dir=bare)  # no .hydra/config.yaml beside it
    assert main(["ica", str(bare)]) == 2
    err = capsys.readouterr().err
    assert f"{bare.resolve()} has no .hydra/config.yaml" in err and len(err.strip().splitlines()) == 1
    # the density table still works from summary.json alone and says why the FastICA section is missing
    assert main(["table", str(bare)]) == 0
    assert f"FastICA comparison not computed: {bare.resolve()} has no .hydra/config.yaml" in capsys.readouterr().err
    assert "FastICA comparison not computed" in (bare / "table.md").read_text() and not (bare / "ica.csv").exists()
