"""Runs worth having: the Gaussian baseline in every run, the start at the Gaussian, schedules, time budgets,
the resume contract, duplicate rows, the models beside the dense flow, and the comparison report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import make_cfg

from relgrad_cli.config import ConfigError
from relgrad_cli.train import run

QUIET = ["logger=none", "trainer.progress=false", "trainer.samples=0"]
TINY_ICA = ["data.n_train=400", "data.n_val=200", "data.n_test=200", "trainer.batch_size=50", "data.dim=4", *QUIET]


def records(folder: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


# -- the Gaussian baseline and the start at it ------------------------------------------------------------------


@pytest.mark.parametrize("data", ["digits", "patches"])
def test_default_run_starts_at_the_gaussian_and_ends_above_it(data, tmp_path):
    """The default recipe on real data: step 0 is exactly the fitted Gaussian (float64), and a short run ends above
    it on the test split (measured at these settings: digits −114.91 → −111.9, patches 54.70 → 95.6)."""
    extra = ["data.n_train=6000", "data.n_val=1000", "data.n_test=1000"] if data == "patches" else []
    cfg = make_cfg([f"data={data}", "trainer.max_epochs=12", "trainer.dtype=float64", *extra, *QUIET])
    s = run(cfg, run_dir=tmp_path)
    assert (s["depth"], s["init"], s["activation"], s["final_activation"], s["prior"]) == (
        6, "data", "spline", "spline", "gaussian")  # fmt: skip
    start = records(tmp_path, "val")[0]
    assert start["step"] == 0 and start["ll"] == pytest.approx(s["gaussian_val_ll"], abs=1e-8)
    assert s["test_ll"] > s["gaussian_test_ll"] + 1.0, s


def test_summary_and_printout_name_the_gaussian_baseline(tmp_path, capsys):
    from relgrad_cli.data import load_dataset
    from relgrad_cli.gaussian import fit_gaussian
    from relgrad_cli.train import print_summary

    s = run(make_cfg(["trainer.max_epochs=1", *TINY_ICA]), run_dir=tmp_path)
    ds = load_dataset("ica", None, dim=4, n_train=400, n_val=200, n_test=200)
    assert s["gaussian_test_ll"] == pytest.approx(float(np.mean(fit_gaussian(ds.train).log_prob(ds.test))))
    print_summary(s)
    out = capsys.readouterr().out
    assert f"Gaussian baseline    {s['gaussian_test_ll']:.4f} nats" in out
    assert ("above it" in out) == (s["test_ll"] >= s["gaussian_test_ll"])


def test_report_table_shows_the_gaussian_column(tmp_path):
    from relgrad_cli.report import main

    s = run(make_cfg(["trainer.max_epochs=1", *TINY_ICA]), run_dir=tmp_path / "run")
    assert main(["table", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--max-iter", "200"]) == 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Gaussian (same data)" in table and f"{s['gaussian_test_ll']:.3f}" in table
    csv = (tmp_path / "out" / "table.csv").read_text().splitlines()
    assert "gaussian_test_ll" in csv[0].split(",")


# -- learning-rate schedules --------------------------------------------------------------------------------------


def test_warmup_then_cosine_follows_its_formula():
    from relgrad_cli.optim import LRSchedule

    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = LRSchedule(opt, "cosine", warmup_steps=4, total_steps=14, min_lr=0.01)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(14):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    warm = [0.1 * (1 / 5 + (1 - 1 / 5) * t / 4) for t in range(5)]  # linear from lr/(w+1) to lr
    cos = [0.01 + 0.5 * (0.1 - 0.01) * (1 + math.cos(math.pi * t / 10)) for t in range(11)]
    assert seen == pytest.approx(warm + cos[1:], rel=1e-9)


def test_plateau_halves_the_rate_after_patience_evaluations_without_improvement():
    from relgrad_cli.optim import LRSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = LRSchedule(opt, "plateau", plateau_factor=0.5, plateau_patience=1, min_lr=0.03)
    lrs = []
    for val in [1.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.1]:
        sched.evaluated(val)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03])


def test_a_resumed_run_continues_the_schedule_exactly(tmp_path):
    common = ["optim.schedule=cosine", "optim.warmup_steps=10", "trainer.dtype=float64", *TINY_ICA]
    full = run(make_cfg(["trainer.max_epochs=4", *common]), run_dir=tmp_path / "full")
    part = tmp_path / "part"
    run(make_cfg(["trainer.max_epochs=4", "trainer.max_seconds=1e-9", *common]), run_dir=part)  # stops at once
    resumed = run(make_cfg(["trainer.max_epochs=4", "trainer.resume=auto", *common]), run_dir=part)
    assert resumed["steps"] == full["steps"] == 32
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert [r["lr"] for r in records(part, "train")][-1] == [r["lr"] for r in records(tmp_path / "full", "train")][-1]


# -- time budgets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_a_budgeted_run_stops_within_a_step_and_writes_its_summary(clock, tmp_path):
    cfg = make_cfg(["trainer.max_epochs=100000", "trainer.max_seconds=1.5", f"trainer.budget={clock}",
                    "data.n_train=2000", *TINY_ICA[1:]])  # fmt: skip
    s = run(cfg, run_dir=tmp_path)
    spent = s["train_cpu_seconds"] if clock == "cpu" else s["train_seconds"]
    assert s["stopped_by"] == "budget" and s["budget"] == {"max_seconds": 1.5, "clock": clock}
    steps = records(tmp_path, "train")
    assert 1.5 <= spent < 1.5 + 50 * max(s["median_step_ms"], s["median_step_cpu_ms"]) / 1e3  # the step past it
    assert records(tmp_path, "val")[-1]["step"] == s["steps"] and steps  # evaluated where it stopped
    assert (tmp_path / "summary.json").is_file() and math.isfinite(s["test_ll"])


def test_resuming_a_budgeted_run_counts_the_time_already_spent(tmp_path):
    common = ["trainer.max_epochs=100000", "data.n_train=2000", *TINY_ICA[1:]]
    first = run(make_cfg(["trainer.max_seconds=1", *common]), run_dir=tmp_path)
    again = run(make_cfg(["trainer.max_seconds=1", "trainer.resume=auto", *common]), run_dir=tmp_path)
    assert again["steps"] == first["steps"]  # the budget was spent already: nothing more to train
    more = run(make_cfg(["trainer.max_seconds=2", "trainer.resume=auto", *common]), run_dir=tmp_path)
    assert more["steps"] > first["steps"] and 2 <= more["train_seconds"] < 3


# -- the resume contract -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,named",
    [("model.depth=3", "model.depth: 2 → 3"), ("model.alpha=0.2", "model.alpha"), ("data.seed=5", "data.seed"),
     ("optim=autograd_logdet", "gradient"), ("trainer.batch_size=40", "batch_size"),
     ("trainer.dtype=float32", "dtype")],
)  # fmt: skip
def test_resume_refuses_what_cannot_match_and_names_it(change, named, tmp_path):
    base = [o for o in TINY_ICA if not o.startswith("trainer.batch_size")] + ["trainer.dtype=float64"]
    run(make_cfg(["trainer.max_epochs=1", "trainer.batch_size=50", *base]), run_dir=tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")) as err:
        run(make_cfg(["trainer.max_epochs=2", "trainer.batch_size=50", *base, change, "trainer.resume=auto"]),
            run_dir=tmp_path)  # fmt: skip
    assert "resume with the original values" in str(err.value)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_applies_a_new_learning_rate_and_a_larger_patience(tmp_path):
    common = ["trainer.dtype=float64", *TINY_ICA]
    first = run(make_cfg(["trainer.max_epochs=10", "trainer.patience=0", "trainer.min_delta=1e9", *common]),
                run_dir=tmp_path)  # fmt: skip
    assert first["stopped_by"] == "early_stopping" and first["epochs"] == 1
    more = run(make_cfg(["trainer.max_epochs=3", "trainer.patience=5", "trainer.min_delta=1e9", "optim.lr=1e-5",
                         "optim.betas=[0.5,0.9]", "trainer.resume=auto", *common]), run_dir=tmp_path)  # fmt: skip
    assert more["epochs"] == 3 and more["stopped_by"] == "max_epochs"  # the early-stopped run went on
    group = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-5) and tuple(group["betas"]) == (0.5, 0.9)


# -- duplicate rows -----------------------------------------------------------------------------------------------


def test_repeated_test_rows_count_once_and_are_reported(tmp_path, capsys):
    from test_data_mnist import idx_bytes, write

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    train = base[rng.integers(0, 20, size=60)]  # the validation split (last rows of train) copies training rows
    test = np.concatenate([base[20:30], base[20:30]])  # every test image twice
    root = tmp_path / "data"
    for name, arr in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        write(root / name, idx_bytes(arr), gz=False)
    for name, n in (("train-labels-idx1-ubyte", len(train)), ("t10k-labels-idx1-ubyte", len(test))):
        write(root / name, idx_bytes(np.zeros(n, dtype=np.uint8)), gz=False)
    cfg = make_cfg(["data=mnist", f"data.root={root}", "data.n_val=20", "trainer.max_epochs=1",
                    "trainer.batch_size=20", *QUIET])  # fmt: skip
    s = run(cfg, run_dir=tmp_path / "run")
    assert s["duplicates"]["test_repeated"] == 10 and s["duplicates"]["val_in_train"] == 20
    assert s["test_rows_used"] == 10 and s["gaussian_shrinkage"] > 0  # 40 training rows in 784 dimensions
    err = capsys.readouterr().err
    assert "relgrad-train: warning: mnist:" in err and "10 distinct test rows" in err


# -- the models beside the dense flow ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["lu_mlp", "maf", "realnvp", "nsf", "paper_mlp"])
def test_every_model_trains_through_the_runner_and_reloads(model, tmp_path):
    from relgrad_cli.data import load_dataset
    from relgrad_cli.models import load_model

    small = ["model.hidden_features=[16,16]", "model.transforms=2"] if model in ("maf", "realnvp", "nsf") else []
    s = run(make_cfg([f"model={model}", "data=digits", "trainer.max_epochs=2", *small, *QUIET]), run_dir=tmp_path)
    assert s["model"] == model and s["gradient"] == ("relative" if model == "paper_mlp" else "backprop")
    assert s["params"] > 0 and math.isfinite(s["test_ll"])
    flow = load_model(tmp_path / "checkpoints" / "best.pt")
    ds = load_dataset("digits", None)
    with torch.no_grad():
        ll = float(flow.log_prob(torch.as_tensor(ds.test)).double().mean())
    assert ll == pytest.approx(s["test_ll"], rel=1e-5)
    assert flow.sample(3).shape == (3, 64)


def test_compare_sweep_and_report_through_the_cli(tmp_path):
    bin_dir = Path(sys.executable).parent
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [str(bin_dir / "relgrad-train"), "experiment=compare", "trainer.max_seconds=1", "trainer.budget=wall",
         "model=paper_mlp,lu_mlp,maf", "model.hidden_features=[16,16]",
         f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rep = subprocess.run([str(bin_dir / "relgrad-report"), "compare", str(sweep), "--wandb"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (sweep / "compare.md").read_text()
    for method in (
        "paper_mlp (depth 2, relative)",
        "lu_mlp (depth 6)",
        "maf",
        "Gaussian (full covariance, closed form)",
    ):
        assert f"| digits | {method} |" in md
    rows = (sweep / "compare.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("dataset,method,seed,test_ll")
    assert (sweep / "compare.png").stat().st_size > 10_000
    assert list((sweep / "wandb").glob("offline-run-*/run-*.wandb"))


def test_threads_auto_takes_one_for_small_steps_and_shares_the_cores():
    from relgrad_cli.optim import SMALL_STEP_MACS, available_cores, choose_threads

    assert choose_threads("auto", 100 * 64**2) == 1
    assert choose_threads("auto", SMALL_STEP_MACS * 10) == available_cores()
    assert choose_threads("auto", SMALL_STEP_MACS * 10, jobs=available_cores() * 2) == 1
    assert choose_threads("3", 1.0) == 3 and choose_threads(0, 1.0) == torch.get_num_threads()


def test_summary_lines_of_a_model_without_latent_sources(capsys):
    """zuko's flows on synthetic ICA have no MCC (their latents are not the sources): the lines leave it out."""
    from relgrad_cli.train import print_summary

    s = {"dataset": "ica", "dim": 4, "model": "maf", "gradient": "backprop", "step_rule": "adam", "test_ll": -5.0,
         "test_ll_2se": 0.1, "best_val_ll": -5.1, "best_epoch": 3, "epochs": 3, "epochs_done": 3.0,
         "true_test_ll": -4.9, "nll_gap_per_dim": 0.025, "mcc": None, "amari": None, "gaussian_test_ll": -6.0,
         "train_seconds": 1.0, "train_cpu_seconds": 1.0, "median_step_ms": 1.0, "steps": 30,
         "stopped_by": "max_epochs", "run_dir": "x"}  # fmt: skip
    print_summary(s)
    out = capsys.readouterr().out
    assert "gap 0.0250 nats/dim\n" in out and "MCC" not in out


def test_a_full_disk_is_one_line_naming_the_file_and_the_bytes(tmp_path):
    """A run folder on a 256 KB tmpfs: last.pt (weights, Adam state) does not fit. Needs root to mount."""
    import shutil

    mount = tmp_path / "small"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        bin_dir = Path(sys.executable).parent
        res = subprocess.run(
            [str(bin_dir / "relgrad-train"), "data.dim=128", "data.n_train=400", "data.n_val=100", "data.n_test=100",
             "trainer.max_epochs=2", "logger=none", "trainer.progress=false", f"hydra.run.dir={mount / 'run'}"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("relgrad-train:")]
    assert "no space left on the device to write" in line and "last.pt: it needs about" in line
    assert "KB free" in line or "bytes free" in line


def test_disk_full_is_recognised_from_torch_writer_errors(tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from relgrad_cli.files import DiskFullError, raise_if_disk_full

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(DiskFullError, match=r"needs about 1\.0 KB and .* has 100 bytes free"):
        raise_if_disk_full(
            RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos"), tmp_path / "x", 1024
        )
    with pytest.raises(DiskFullError):
        raise_if_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "x", 10)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    raise_if_disk_full(RuntimeError("something else"), tmp_path / "x", 1024)  # not a full disk: no DiskFullError


def test_a_continuation_keeps_the_original_configuration_and_records_its_overrides(tmp_path):
    bin_dir = Path(sys.executable).parent
    run_dir = tmp_path / "run"
    common = ["data.n_train=400", "data.n_val=100", "data.n_test=100", "logger=none", "trainer.progress=false",
              f"hydra.run.dir={run_dir}"]  # fmt: skip

    def cli(*args: str) -> None:
        res = subprocess.run([str(bin_dir / "relgrad-train"), *common, *args], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]

    cli("trainer.max_epochs=1", "optim.lr=0.002")
    cli("trainer.max_epochs=2", "optim.lr=0.0005", "trainer.resume=auto")
    original = (run_dir / ".hydra" / "original" / "overrides.yaml").read_text()
    assert "optim.lr=0.002" in original and "trainer.resume" not in original
    assert "lr: 0.002" in (run_dir / ".hydra" / "original" / "config.yaml").read_text()
    (continued,) = sorted((run_dir / ".hydra" / "continued").glob("step-*-overrides.yaml"))
    assert continued.name == "step-4-overrides.yaml"  # 400 rows in batches of 100: 4 steps in the first epoch
    assert "optim.lr=0.0005" in continued.read_text() and "trainer.resume=auto" in continued.read_text()
