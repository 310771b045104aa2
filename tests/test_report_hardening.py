"""relgrad-report on awkward folders: configurations that must not be averaged, damaged summaries, an unknown metric,
failed sweep jobs; and the memory check that refuses a model too large to train, before it is built."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_report import markdown_rows
from test_train import make_cfg

from relgrad_cli.config import ConfigError
from relgrad_cli.report import main

WARNING = "relgrad-report: warning: "


def _job(folder: Path, overrides: list[str], summary: dict | str | None = None, curve: bool = False) -> Path:
    """A run folder as relgrad-train leaves it: .hydra/overrides.yaml, summary.json (a dict, raw text, or none)
    and, with ``curve``, metrics.jsonl with validation rows."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        (folder / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    if curve:
        rows = [{"split": "val", "epoch": e, "train_seconds": 0.5 * e, "ll": -5.0 + e} for e in (1, 2, 3)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _summary(dim: int, seed: int, test_ll: float) -> dict:
    return {"dataset": "power", "dim": dim, "model": "deep_mlp", "depth": 2, "optim": "relative",
            "gradient": "relative", "step_rule": "adam", "seed": seed, "test_ll": test_ll, "test_ll_2se": 0.01,
            "median_step_ms": 1.5 * dim, "train_seconds": 3.0, "epochs": 2, "best_val_ll": test_ll}  # fmt: skip


# --------------------------------------------------------------------------------------- one group per configuration


def test_table_averages_seeds_only_never_different_swept_values(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for i, (dim, seed, ll) in enumerate([(16, 0, 1.0), (16, 1, 2.0), (32, 0, 10.0)]):
        _job(sweep / str(i), ["data=power", f"data.dim={dim}", "optim=relative", f"seed={seed}"],
             _summary(dim, seed, ll))  # fmt: skip
    assert main(["table", str(sweep)]) == 0
    md = (sweep / "table.md").read_text()
    assert "| **ours: relative** (relative, data.dim=16) | 1.500 (mean of 2 seeds) |" in md
    assert "| **ours: relative** (relative, data.dim=32) | 10.000 ± 0.010 |" in md
    assert "mean of 3" not in md
    assert "| dataset | optim | gradient | data.dim | seed | ours |" in md
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert [(r["data.dim"], r["seed"]) for r in rows] == [("16", "0"), ("16", "1"), ("32", "0")]
    capsys.readouterr()


def test_table_without_overrides_still_tells_dimensions_apart(tmp_path):
    # folders without .hydra/overrides.yaml (trained in-process): the summaries' configuration fields decide
    for i, (dim, ll) in enumerate([(16, 1.0), (32, 2.0)]):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(_summary(dim, 0, ll)))
    assert main(["table", str(tmp_path)]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "mean of" not in md
    assert "(relative, dim=16) | 1.000 ± 0.010 |" in md and "(relative, dim=32) | 2.000 ± 0.010 |" in md


# ---------------------------------------------------------------------------------------------- damaged summaries


@pytest.mark.parametrize("command", ["sweep", "table", "curves", "compare"])
@pytest.mark.parametrize("damage", ["{", '{"test_ll": 1.0, "data', "\x00\xff", "[1, 2]"])
def test_a_damaged_summary_is_named_and_skipped(tmp_path, capsys, command, damage):
    _job(tmp_path / "0", ["data.dim=16"], _summary(16, 0, 1.0), curve=True)
    bad = _job(tmp_path / "1", ["data.dim=32"], damage, curve=True) / "summary.json"
    assert main([command, str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"{WARNING}{bad} is not readable JSON (" in err and err.rstrip().endswith("; skipped")
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_metric_is_an_error_and_leaves_no_stale_plot(tmp_path, capsys):
    for i, dim in enumerate((16, 32)):
        _job(tmp_path / str(i), [f"data.dim={dim}"], _summary(dim, 0, 1.0))
    assert main(["sweep", str(tmp_path)]) == 0
    assert (tmp_path / "sweep.png").is_file()
    capsys.readouterr()
    assert main(["sweep", str(tmp_path), "--metric", "test_lll"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--metric test_lll" in err
    assert "median_step_ms" in err and "test_ll" in err and "dataset" not in err
    assert not (tmp_path / "sweep.png").exists()


# ------------------------------------------------------------------------------------------------------ failed jobs


def test_sweep_lists_failed_jobs_with_their_reason(tmp_path, capsys):
    _job(tmp_path / "0", ["data.dim=16"], _summary(16, 0, 1.0))
    failed = _job(tmp_path / "1", ["data.dim=32"])
    (failed / "error.txt").write_text("data: data.dim=32 is larger than the file's 16 columns\n")
    _job(tmp_path / "2", ["data.dim=64"])  # no summary, no reason: still running or killed
    assert main(["sweep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = markdown_rows(out)
    assert [r[:2] for r in table] == [["data.dim", "status"], ["16", "ok"],
                                      ["32", "failed: data: data.dim=32 is larger than the file's 16 columns"],
                                      ["64", "no summary (failed?)"]]  # fmt: skip
    assert "2 of 3 jobs failed or unfinished (no summary.json); 1 with a reason in error.txt" in out
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed: data: data.dim=32 is larger than the file's 16 columns",
                                           "no summary (failed?)"]  # fmt: skip


def test_a_reason_with_a_bar_stays_in_its_cell(tmp_path, capsys):
    _job(tmp_path / "0", ["data.dim=16"], _summary(16, 0, 1.0))
    failed = _job(tmp_path / "1", ["data.dim=32"])
    (failed / "error.txt").write_text("model.activation='a|b' is not allowed\n")
    assert main(["sweep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "failed:" in line and line.startswith("|"))
    assert "failed: model.activation='a\\|b' is not allowed" in row
    assert len(row.replace("\\|", "").split("|")) == len(
        next(ln for ln in out.splitlines() if ln.startswith("|")).split("|")
    )


def test_a_metrics_line_that_is_not_a_record_is_named(tmp_path, capsys):
    run = _job(tmp_path / "run", ["data.dim=16"], _summary(16, 0, 1.0), curve=True)
    with (run / "metrics.jsonl").open("a") as f:
        f.write("[1]\n")
    assert main(["curves", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}:4 is a JSON list, not a record (an object); the file is damaged" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- memory before model


def _refuse_building(monkeypatch, available: int) -> None:
    import relgrad_cli.models
    import relgrad_cli.optim

    monkeypatch.setattr(relgrad_cli.optim, "available_memory_bytes", lambda device="cpu": available)

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(relgrad_cli.models, "build_model", no_build)


def test_run_refuses_a_synthetic_model_that_does_not_fit_before_generating_the_data(tmp_path, monkeypatch):
    import relgrad_cli.data

    _refuse_building(monkeypatch, 10**6)

    def no_data(*args, **kwargs):  # generating ICA data builds a D×D mixing flow: refused before that too
        raise AssertionError("the data were generated")

    monkeypatch.setattr(relgrad_cli.data, "load_dataset", no_data)
    cfg = make_cfg(["experiment=ica_linear", "data.dim=300", "data.n_train=200", "data.n_val=50", "data.n_test=50",
                    "logger=none", "trainer.progress=false"])  # fmt: skip
    from relgrad_cli.train import run

    with pytest.raises(ConfigError) as info:
        run(cfg, run_dir=tmp_path / "run")
    message = str(info.value)
    assert message.startswith("model: D=300, depth 1, float32 needs about 0.0034 GB for training")
    assert (
        "GB for training (weights, gradients, Adam state), and this machine has 0.001 GB available; lower " in message
    )
    assert message.endswith("lower data.dim or model.depth, or use a machine with more memory")
    assert "\n" not in message


def test_run_refuses_a_model_too_large_for_a_data_file_before_building_it(tmp_path, monkeypatch):
    from test_train import _write_dataset

    from relgrad_cli.train import run

    root = tmp_path / "data"
    extra = _write_dataset("power", root)
    _refuse_building(monkeypatch, 1000)
    cfg = make_cfg(["experiment=paper_power", f"data.root={root}", *extra, "logger=none", "trainer.progress=false"])
    with pytest.raises(ConfigError, match=r"^model: D=\d+, depth \d+, float32 needs about .* GB available; lower "):
        run(cfg, run_dir=tmp_path / "run")
