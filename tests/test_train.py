"""The Hydra runner: every config composes, each optimizer trains, files are complete, sweeps and W&B work."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from wandb_log import history_and_summary, run_identity

from relgrad_cli.config import ConfigError, register_configs
from relgrad_cli.train import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CLI = Path(sys.executable).parent / "relgrad-train"
SUMMARY_KEYS = {
    "dataset", "dim", "depth", "gradient", "step_rule", "lr", "batch_size", "seed", "epochs", "steps",
    "train_seconds", "median_step_ms", "best_val_ll", "test_ll", "test_ll_2se",
}  # fmt: skip
ICA_KEYS = {"true_test_ll", "nll_gap_per_dim", "amari", "mcc"}
TINY = ["logger=none", "data.n_train=400", "data.n_val=200", "data.n_test=200", "trainer.batch_size=50",
        "trainer.progress=false", "data.dim=4"]  # fmt: skip


def make_cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in ("data", "model", "optim", "logger", "experiment") for o in options(g)]
)
def test_every_config_option_composes(group, option):
    cfg = make_cfg([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in ("data", "model", "optim", "logger"):
        assert cfg[group].name == option or (group == "data" and cfg.data.name == option)


def test_typo_and_wrong_type_fail_at_composition():
    from hydra.errors import ConfigCompositionException

    errors = ConfigCompositionException
    with pytest.raises(errors, match="dimm"):
        make_cfg(["data.dimm=3"])
    with pytest.raises(errors, match="lr"):
        make_cfg(["optim.lr=abc"])
    with pytest.raises(errors, match="natural"):
        make_cfg(["optim.gradient=natural"])


@pytest.mark.parametrize("optim", options("optim"))
def test_each_optimizer_trains_and_writes_the_run_folder(optim, tmp_path):
    cfg = make_cfg([f"optim={optim}", "trainer.max_epochs=3", *TINY])
    summary = run(cfg, run_dir=tmp_path)
    assert SUMMARY_KEYS | ICA_KEYS <= summary.keys()
    assert summary["gradient"] == cfg.optim.gradient.value and summary["epochs"] == 3 and summary["steps"] == 24
    assert json.loads((tmp_path / "summary.json").read_text())["test_ll"] == pytest.approx(summary["test_ll"])
    umask = os.umask(0)
    os.umask(umask)
    for f in ("summary.json", "checkpoints/best.pt", "checkpoints/last.pt"):  # written atomically, usual permissions
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~umask
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1, 2, 3]  # 0: the untrained start
    assert all("loss" in r and "step_time_ms" in r for r in records if r["split"] == "train")
    for name in ("best.pt", "last.pt"):
        ck = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert ck["model"]["layers.0.weight"].shape == (4, 4)
    assert summary["best_val_ll"] == max(r["ll"] for r in records if r["split"] == "val")
    # the test numbers were computed with the best checkpoint
    from relgrad_cli import InvertibleMLP
    from relgrad_cli.data import load_dataset

    flow = InvertibleMLP.from_checkpoint(tmp_path / "checkpoints" / "best.pt")  # the architecture is in the file
    assert flow.config() == {"dim": 4, "depth": 2, "alpha": 0.3, "bias": True, "prior": "laplace", "init": "orthogonal",
                             "activation": "slrelu", "final_activation": "none", "spline_bins": 8, "spline_bound": 5.0,
                             "dense": "full", "gradient": cfg.optim.gradient.value,
                             "recon_weight": 1.0}  # fmt: skip
    assert flow.dtype == torch.float32
    ds = load_dataset("ica", tmp_path, dim=4, n_train=400, n_val=200, n_test=200)
    with torch.no_grad():
        assert float(flow.log_prob(torch.as_tensor(ds.test, dtype=torch.float32)).mean()) == pytest.approx(
            summary["test_ll"], rel=1e-5
        )


def test_from_checkpoint_rebuilds_a_non_default_architecture(tmp_path):
    from relgrad_cli import InvertibleMLP

    cfg = make_cfg(["model.depth=3", "model.alpha=0.05", "model.bias=false", "model.prior=logistic",
                    "trainer.dtype=float64", "trainer.max_epochs=1", *TINY])  # fmt: skip
    run(cfg, run_dir=tmp_path)
    flow = InvertibleMLP.from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (flow.depth, flow.alpha, flow.layers[0].bias, flow.prior.name, flow.dtype) == (
        3, 0.05, None, "logistic", torch.float64)  # fmt: skip
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in flow.state_dict().items())
    torch.save({"model": saved}, tmp_path / "bare.pt")  # weights without the architecture
    with pytest.raises(ValueError, match="no 'flow' entry"):
        InvertibleMLP.from_checkpoint(tmp_path / "bare.pt")


def test_relative_and_euclidean_follow_the_same_path_in_float64(tmp_path):
    """The relative gradient is a different direction, but both descend: after training, both beat the start."""
    common = ["trainer.max_epochs=4", "trainer.dtype=float64", *TINY]
    rel = run(make_cfg(["optim=relative", *common]), run_dir=tmp_path / "rel")
    auto = run(make_cfg(["optim=autograd_logdet", *common]), run_dir=tmp_path / "auto")
    euc = run(make_cfg(["optim=adam", *common]), run_dir=tmp_path / "euc")
    assert euc["test_ll"] == pytest.approx(auto["test_ll"], abs=1e-8)  # same gradient, two ways
    untrained = run(make_cfg(["optim.lr=1e-12", *common]), run_dir=tmp_path / "untrained")
    for trained in (rel, euc):  # measured: untrained −15.10, relative after 4 epochs −13.92
        assert trained["test_ll"] > untrained["test_ll"] + 0.5


def test_early_stopping(tmp_path):
    cfg = make_cfg(["trainer.max_epochs=10", "trainer.patience=2", "trainer.min_delta=1e9", *TINY])
    summary = run(cfg, run_dir=tmp_path)
    # the start (epoch 0) is the best; three evaluations without improvement exceed a patience of 2
    assert summary["stopped_early"] and summary["epochs"] == 3 and summary["best_epoch"] == 0
    assert summary["stopped_by"] == "early_stopping"


def test_resume_from_last_checkpoint_matches_an_uninterrupted_run(tmp_path):
    full = run(make_cfg(["trainer.max_epochs=4", *TINY]), run_dir=tmp_path / "full")
    part = tmp_path / "part"
    run(make_cfg(["trainer.max_epochs=2", *TINY]), run_dir=part)
    resumed = run(make_cfg(["trainer.max_epochs=4", "trainer.resume=auto", *TINY]), run_dir=part)
    assert resumed["steps"] == full["steps"] and resumed["epochs"] == 4
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_ll"] == full["test_ll"]


def test_linear_ica_reports_amari(tmp_path):
    cfg = make_cfg(["model=linear", "data.mixing=linear", "trainer.max_epochs=40", "optim.lr=1e-2", *TINY])
    summary = run(cfg, run_dir=tmp_path)
    assert summary["prior"] == "laplace"  # model.prior=auto takes the sources' distribution
    # measured: untrained Amari 0.90 and MCC 0.71; trained 0.001 and 0.999
    assert summary["amari"] < 0.05 and summary["mcc"] > 0.98


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_multirun_with_wandb_offline_through_the_cli(tmp_path):
    sweep = tmp_path / "sweep"
    res = _cli(
        ["-m", "optim=relative,autograd_logdet", "data.dim=3,5", "trainer.max_epochs=2", "data.n_train=300",
         "data.n_val=100", "data.n_test=100", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        seen.add((summary["gradient"], summary["dim"]))
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "checkpoints" / "best.pt").is_file()
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        history, wsummary, exit_code = history_and_summary(run_file)
        assert exit_code == 0
        assert any("train/loss" in row for row in history) and any("val/ll" in row for row in history)
        assert float(wsummary["test_ll"]) == pytest.approx(summary["test_ll"])
        run_id, group = run_identity(run_file)
        assert group == sweep.name and (job / "wandb" / "run-id").read_text().strip() == run_id
        # each job's W&B service wrote its logs into that job's folder (not into the first job's)
        assert any(p.is_file() for p in (job / "wandb" / "cache").rglob("*")), job
    assert seen == {(g, d) for g in ("relative", "autograd_logdet") for d in (3, 5)}
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*wandb*"))


def test_cli_user_errors_are_one_line(tmp_path):
    res = _cli(["data=nope"], cwd=tmp_path, timeout=60)
    assert res.returncode != 0 and "data/nope" in res.stderr and "ica" in res.stderr
    for bad, words in (("optim.lr=-1", "optim.lr=-1.0"), ("trainer.batch_size=0", "trainer.batch_size=0"),
                       (f"data.root={CONF / 'config.yaml'}", "is a file, not a folder")):  # fmt: skip
        res = _cli(["logger=none", bad], cwd=tmp_path, timeout=60)
        assert res.returncode == 2, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("relgrad-train: error:") and words in lines[0]
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("summary.json"))


def test_a_bad_value_in_a_sweep_fails_that_job_with_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    res = _cli(["-m", "optim.lr=-1,0.01", "logger=none", "trainer.max_epochs=1", "data.n_train=200", "data.n_val=100",
                "data.n_test=100", "trainer.progress=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)  # fmt: skip
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "relgrad-train: error: optim.lr=-1.0 is not allowed: the learning rate must be positive" in res.stderr
    assert not (sweep / "0" / "summary.json").exists() and (sweep / "1" / "summary.json").is_file()


def test_help_names_every_option(tmp_path):
    res = _cli(["--help"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0
    for group in ("data", "model", "optim", "logger"):
        line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith(f"{group}="))
        assert set(options(group)) <= {w.strip(",") for w in line.split()}, (group, line)


def test_console_script_works_from_an_installed_wheel_layout(tmp_path):
    """The package finds its configs as relgrad_cli/conf when installed as a wheel (not from the checkout)."""
    pkg = tmp_path / "site" / "relgrad_cli"
    shutil.copytree(ROOT / "relgrad_cli", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CONF, pkg / "conf")
    code = "from relgrad_cli.train import conf_path; print(conf_path())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}).stdout  # fmt: skip
    assert out.strip() == "pkg://relgrad_cli.conf"
    res = subprocess.run([sys.executable, "-c", "from relgrad_cli.train import main; main()", "--cfg", "job"],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})  # fmt: skip
    assert res.returncode == 0 and "name: ica" in res.stdout


def _write_dataset(name: str, root: Path) -> list[str]:
    """Small files in the real on-disk format of ``name`` under ``root``; returns extra overrides it needs."""
    import numpy as np
    import test_data_maf as maf
    import test_data_mnist as mnist

    if name == "mnist":
        mnist.make_mnist(root / "mnist")
        return [f"data.n_val={mnist.N_TRAIN // 5}"]
    if name == "power":
        maf.write_power(root)
    elif name == "gas":
        (root / "gas").mkdir(parents=True)
        maf.gas_frame().to_pickle(root / "gas" / "ethylene_CO.pickle")
    elif name == "hepmass":
        maf.write_hepmass(root)
    elif name == "miniboone":
        (root / "miniboone").mkdir(parents=True)
        np.save(root / "miniboone" / "data.npy", np.random.default_rng(3).normal(size=(500, 43)) + np.arange(43))
    elif name == "bsds300":
        maf.write_bsds(root)
    return []


@pytest.mark.parametrize("name", ["mnist", "power", "gas", "hepmass", "miniboone", "bsds300", "digits", "toy2d"])
def test_every_dataset_trains_through_the_runner(name, tmp_path):
    """relgrad-train data=NAME data.root=DIR, given files in the dataset's standard format."""
    root = tmp_path / "data"
    extra = _write_dataset(name, root)
    cfg = make_cfg([f"data={name}", f"data.root={root}", "logger=none", "trainer.max_epochs=1",
                    "trainer.batch_size=50", "trainer.progress=false", "trainer.samples=4", *extra])  # fmt: skip
    summary = run(cfg, run_dir=tmp_path / "run")
    assert summary["dataset"] == name and summary["steps"] >= 1
    assert math.isfinite(summary["test_ll"])
    if name in ("mnist", "digits"):
        assert summary["bits_per_dim"] > 0 and (tmp_path / "run" / "samples.png").is_file()
    if name == "toy2d":
        assert (tmp_path / "run" / "density.png").is_file()


def test_missing_dataset_is_one_line_through_the_cli(tmp_path):
    res = _cli(["data=power", f"data.root={tmp_path}", "logger=none"], cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "power/data.npy" in line and "relgrad-data download maf" in line


def test_a_run_folder_is_never_overwritten_and_a_continued_run_keeps_one_record_per_step(tmp_path):
    common = ["logger=wandb", *[o for o in TINY if not o.startswith("logger=")], "trainer.log_every=1"]
    run(make_cfg(["trainer.max_epochs=2", *common]), run_dir=tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    for resume in ("never", str(tmp_path / "elsewhere.pt")):  # a new run, or another folder's checkpoint
        if resume != "never":
            shutil.copyfile(tmp_path / "checkpoints" / "last.pt", resume)
        with pytest.raises(ConfigError, match=r"already holds a run \(metrics.jsonl, summary.json, checkpoints"):
            run(make_cfg(["trainer.max_epochs=2", f"trainer.resume={resume}", *common]), run_dir=tmp_path)
    best = tmp_path / "checkpoints" / "best.pt"  # weights only: a new run from it cannot share its folder
    with pytest.raises(ConfigError, match=r"best.pt holds weights only, so a run from it is a new run"):
        run(make_cfg(["trainer.max_epochs=2", f"trainer.resume={best}", *common]), run_dir=tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    # a kill after the last checkpoint (step 16) leaves records of later steps and a line cut short
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 17, "epoch": 3, "loss": 1.0}\n{"split": "train", "st')
    run(make_cfg(["trainer.max_epochs=3", "trainer.resume=auto", *common]), run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 25))
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1, 2, 3]
    first, second = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert run_identity(first)[0] == run_identity(second)[0]  # one W&B run, continued
    history, _, _ = history_and_summary(second)
    assert min(int(row["_step"]) for row in history if "_step" in row) > 16


def test_wandb_that_cannot_start_is_a_one_line_error_and_leaves_no_trace(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SERVICE", "inherited-from-a-parent")
    before = dict(os.environ)
    cfg = make_cfg(["logger=wandb", "logger.mode=online", *[o for o in TINY if not o.startswith("logger=")]])
    with pytest.raises(ConfigError, match=r"logger.mode=online: W&B could not start a run .*wandb login"):
        run(cfg, run_dir=tmp_path / "run")
    assert dict(os.environ) == before  # W&B's folders and the inherited service are as they were
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # so the same command can run again after a login


def test_resume_from_a_path(tmp_path):
    """trainer.resume=PATH: a full checkpoint continues that run in a new folder (its best.pt comes along);
    a weights-only best.pt starts a new run from those weights."""
    first = run(make_cfg(["trainer.max_epochs=2", *TINY]), run_dir=tmp_path / "a")
    cont = run(make_cfg(["trainer.max_epochs=3", f"trainer.resume={tmp_path / 'a' / 'checkpoints' / 'last.pt'}",
                         "trainer.min_delta=1e9", *TINY]), run_dir=tmp_path / "b")  # fmt: skip
    assert cont["steps"] == 24 and cont["best_epoch"] == first["best_epoch"]
    a_best = torch.load(tmp_path / "a" / "checkpoints" / "best.pt", weights_only=True)["model"]
    b_best = torch.load(tmp_path / "b" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a_best[k], b_best[k]) for k in a_best)  # the test used the best weights, not the last
    warm = run(make_cfg(["trainer.max_epochs=1", f"trainer.resume={tmp_path / 'a' / 'checkpoints' / 'best.pt'}",
                         *TINY]), run_dir=tmp_path / "c")  # fmt: skip
    assert warm["steps"] == 8 and warm["epochs"] == 1  # a new run: its own epoch count
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk.pt is not a PyTorch checkpoint \(a text file"):
        run(make_cfg([f"trainer.resume={tmp_path / 'junk.pt'}", *TINY]), run_dir=tmp_path / "d")
