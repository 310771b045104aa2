"""Scale-out and robustness through the real command: launchers, torchrun, preemption, crashes, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
TINY = ["data.dim=4", "data.n_val=100", "data.n_test=100", "trainer.dtype=float64", "logger=none",
        "trainer.progress=false"]  # fmt: skip


def cli(args, cwd, timeout=300, exe="relgrad-train", **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(BIN / exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          **kw)  # fmt: skip


def last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_training(a: Path, b: Path) -> None:
    ca, cb = last(a), last(b)
    assert ca["state"]["step"] == cb["state"]["step"]
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert (
        json.loads((a / "summary.json").read_text())["test_ll"]
        == json.loads((b / "summary.json").read_text())["test_ll"]
    )


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_launchers_run_one_process_and_one_wandb_run_per_job(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(["-m", f"hydra/launcher={launcher}", "optim=relative,autograd_logdet", "data.n_train=200",
               "trainer.max_epochs=1", "logger=wandb", *TINY[:-2], "trainer.progress=false",
               f"hydra.sweep.dir={sweep}"], cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["steps"] == 2
        assert len(list((sweep / job).glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_torchrun_two_processes_match_one_process(tmp_path):
    common = ["data.n_train=403", "trainer.batch_size=50", "trainer.max_epochs=3", *TINY]  # uneven shards
    two = cli(["--nproc_per_node=2", "--master_port=29733", "-m", "relgrad_cli.train", *common,
               f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path, exe="torchrun")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = cli([*common, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = last(tmp_path / "one"), last(tmp_path / "two")
    assert a["state"]["step"] == b["state"]["step"] == 27
    assert max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"]) <= 1e-10
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    # only the main process wrote: one metrics file with one set of validation rows
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3]


LONG = ["data.n_train=2000", "trainer.batch_size=10", "trainer.max_epochs=20", "trainer.checkpoint_every=37",
        *TINY]  # fmt: skip


def _start(run_dir: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "relgrad-train"), *LONG, f"hydra.run.dir={run_dir}"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for_mid_epoch_checkpoint(proc: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        path = run_dir / "checkpoints" / "last.pt"
        if path.exists():
            st = torch.load(path, weights_only=True)["state"]
            if st["epoch"] >= 1 and st["epoch_step"] > 0:  # past an epoch boundary, in the middle of an epoch
                return
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ref = cli([*LONG, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = _start(run, tmp_path)
    _wait_for_mid_epoch_checkpoint(proc, run)
    proc.kill()
    proc.wait()
    saved = last(run)["state"]
    assert saved["step"] < last(tmp_path / "ref")["state"]["step"] and saved["epoch_step"] > 0
    res = cli([*LONG, "trainer.resume=auto", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {run / 'checkpoints' / 'last.pt'}" in res.stdout
    assert_same_training(tmp_path / "ref", run)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    ref = cli([*LONG, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    run = tmp_path / "stopped"
    proc = _start(run, tmp_path)
    _wait_for_mid_epoch_checkpoint(proc, run)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by signal SIGTERM at step" in err and "trainer.resume=auto" in err and "Traceback" not in err
    step = int(err.split("at step ")[1].split(";")[0])
    assert last(run)["state"]["step"] == step  # the checkpoint is exactly where it stopped
    assert not (run / "summary.json").exists()
    res = cli([*LONG, "trainer.resume=auto", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert res.returncode == 0 and ref.returncode == 0
    assert_same_training(tmp_path / "ref", run)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["optim=sgd", "optim.lr=1e6", "optim.momentum=0", "data.n_train=500", "trainer.batch_size=50",
            "trainer.log_every=1", "trainer.checkpoint_every=1", *TINY, f"hydra.run.dir={run}"]  # fmt: skip
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "became non-finite at step" in line and "lower optim.lr" in line
    kept = last(run)
    assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values())


def test_gradient_clipping_bounds_every_step(tmp_path):
    from relgrad_cli import InvertibleMLP

    run = tmp_path / "run"
    args = ["optim=sgd", "optim.lr=1", "optim.momentum=0", "trainer.grad_clip=1e-4", "data.n_train=500",
            "trainer.batch_size=50", "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run}"]  # fmt: skip
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    torch.manual_seed(0)  # the runner's seed: the same initial weights
    start = InvertibleMLP(4, 2, prior="laplace", dtype=torch.float64).state_dict()
    end = last(run)["model"]
    moved = torch.cat([(end[k] - start[k]).flatten() for k in start]).norm()
    assert 0 < float(moved) <= 10 * 1e-4 + 1e-12  # 10 SGD steps of lr 1 on gradients clipped to norm 1e-4
