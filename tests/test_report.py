"""relgrad-report on folders produced by real runs (a multirun through the CLI, one failed job)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from relgrad_cli.report import find_jobs, main, swept_keys

CLI = Path(sys.executable).parent / "relgrad-train"


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in ``text`` (the alignment rows left out), spaces stripped."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows if not all(set(c.strip()) <= set(":-") for c in row)]


def test_sweep_report_on_a_real_partial_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [str(CLI), "-m", "experiment=scaling", "data.dim=4,8", "optim=relative,autograd_logdet",
         "data.n_train=300", "data.n_val=50", "data.n_test=50", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    # a job that failed leaves its .hydra folder and no summary
    failed = sweep / "9" / ".hydra"
    failed.mkdir(parents=True)
    real = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    (failed / "overrides.yaml").write_text(real.replace("data.dim=4", "data.dim=16"))
    jobs = find_jobs([sweep])
    assert len(jobs) == 5 and swept_keys(jobs) == ["data.dim", "optim"]
    assert main(["sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    table = markdown_rows(out)
    assert table[0][:3] == ["data.dim", "optim", "status"]
    assert ["16", "relative", "no summary (failed?)"] in [r[:3] for r in table]
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [(r["data.dim"], r["optim"]) for r in rows] == [
        ("4", "autograd_logdet"), ("4", "relative"), ("8", "autograd_logdet"), ("8", "relative"), ("16", "relative"),
    ]  # fmt: skip
    assert all(float(r["median_step_ms"]) > 0 for r in rows[:4]) and rows[4]["median_step_ms"] == ""
    assert (sweep / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err
