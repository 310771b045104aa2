"""Scale-out and robustness through the real command: launchers, torchrun, preemption, crashes, divergence."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from relgrad_cli.tracking import NullTracker

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


def wandb_pid(job_dir: Path) -> int:
    """The process that ran a job: W&B's own log of the run (``Configure stats pid to N``) names it."""
    (log,) = job_dir.glob("wandb/offline-run-*/logs/debug.log")
    return int(re.search(r"Configure stats pid to (\d+)", log.read_text()).group(1))


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_launchers_run_one_process_and_one_wandb_run_per_job(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra/launcher={launcher}", "optim=relative,autograd_logdet", "data.n_train=200",
            "trainer.max_epochs=1", "logger=wandb", *TINY[:-2], "trainer.progress=false",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen([str(BIN / "relgrad-train"), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["steps"] == 2
        assert len(list((sweep / job).glob("wandb/offline-run-*/run-*.wandb"))) == 1
    pids = [wandb_pid(sweep / job) for job in ("0", "1")]
    assert proc.pid not in pids  # the jobs ran in worker processes, not in the launching one
    if launcher == "submitit_local":  # one process per job (joblib may reuse one worker for both)
        assert pids[0] != pids[1]
        assert len(list(sweep.glob(".submitit/*/*_0_result.pkl"))) == 2  # two submitit jobs, one result each


def test_torchrun_two_processes_match_one_process(tmp_path):
    common = ["data.n_train=401", "trainer.batch_size=50", "trainer.max_epochs=3", *TINY]  # a last batch of 1 row
    two = cli(["--nproc_per_node=2", "--standalone", "-m", "relgrad_cli.train", *common,
               f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path, exe="torchrun")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = cli([*common, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = last(tmp_path / "one"), last(tmp_path / "two")
    assert a["state"]["step"] == b["state"]["step"] == 27
    # the work was split: of each global batch of 50 (1 of the last), process 0 took 25 (1) rows, process 1 25 (0:
    # it back-propagates a zero-weighted loss, so its gradient all-reduces match process 0's)
    shares = dict(re.findall(r"process (\d) of 2: back-propagated (\d+) training rows", two.stdout))
    assert shares == {"0": str(3 * 201), "1": str(3 * 200)}, two.stdout[-2000:]
    assert max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"]) <= 1e-10
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    # only the main process wrote: one metrics file with one set of validation rows
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [0, 1, 2, 3]
    # validation split across the processes (rows and layers' log-dets) gives the one-process numbers
    ones = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    val = {"one": [r["ll"] for r in ones if r["split"] == "val"], "two": [r["ll"] for r in rows if r["split"] == "val"]}
    assert val["two"] == pytest.approx(val["one"], abs=1e-9)


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


def test_sigusr1_writes_a_checkpoint_at_the_step_it_stops(tmp_path):
    run = tmp_path / "stopped"
    proc = _start(run, tmp_path)
    _wait_for_mid_epoch_checkpoint(proc, run)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert "stopped by signal SIGUSR1 at step" in err and "trainer.resume=auto" in err and "Traceback" not in err
    step = int(err.split("at step ")[1].split(";")[0])
    saved = last(run)["state"]
    assert saved["step"] == step  # written at the step it stopped
    assert not (run / "summary.json").exists()


# -- in-process fit: divergence at the step it happens, the before-timeout signal handed over ---------------------


def _fit(tmp_path: Path, train: torch.Tensor | None = None, prepare=None, fused: bool = False, **kw):
    """fit() on a small float64 problem: 2000 rows, batches of 10 (200 steps per epoch), log every 50 steps;
    ``prepare(flow)`` runs first; ``fused``: torch's fused Adam (it skips a bad step on the device)."""
    from relgrad_cli.fit import fit
    from relgrad_cli.flow import InvertibleMLP

    torch.manual_seed(0)
    flow = InvertibleMLP(4, 2, prior="laplace", dtype=torch.float64)
    flow.check_inputs = False  # as in the runner, which checks the data once
    if prepare is not None:
        prepare(flow)
    data = torch.randn(2100, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    train = data[:2000] if train is None else train
    args = dict(max_epochs=1, batch_size=10, patience=5, eval_every=1, eval_batch_size=1000,
                log_every=50, tracker=NullTracker(), checkpoint_dir=tmp_path / "checkpoints",
                generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    args.update(kw)
    return flow, fit(flow, torch.optim.Adam(flow.parameters(), lr=1e-3, fused=fused), train, data[2000:], **args)


def _row_of_step(step: int, n: int = 2000, batch: int = 10, seed: int = 0) -> int:
    """A training row that fit() draws in ``step`` of the first epoch (its shuffle is randperm from the seed)."""
    return int(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[(step - 1) * batch + 1])


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("checkpoint_every", [0, 20])
def test_divergence_is_reported_at_its_step_between_log_points(value, checkpoint_every, tmp_path):
    from relgrad_cli.fit import DivergenceError

    train = torch.randn(2000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    train[_row_of_step(124), 1] = value  # only step 124's batch holds it: its loss is the first non-finite one
    with pytest.raises(DivergenceError) as err:
        _fit(tmp_path, train, checkpoint_every=checkpoint_every)  # log points at 50, 100, 150
    assert "the training loss became non-finite at step 124 (epoch 1)" in str(err.value)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    if checkpoint_every:  # written at 20, ..., 120; the one due at step 140 (NaN weights) is not written
        assert f"the last good checkpoint is kept ({ckpt})" in str(err.value)
        kept = torch.load(ckpt, weights_only=True)
        assert kept["state"]["step"] == 120
        assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values())
    else:  # only the start's checkpoint (the evaluation at step 0)
        assert f"the last good checkpoint is kept ({ckpt})" in str(err.value)
        assert torch.load(ckpt, weights_only=True)["state"]["step"] == 0


def test_divergence_step_in_a_long_log_window(tmp_path):
    """log_every=1000 with batches of 2 (1000 steps per epoch): a long window still names its first bad step."""
    from relgrad_cli.fit import DivergenceError

    train = torch.randn(2000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    train[_row_of_step(700, batch=2), 0] = math.nan
    with pytest.raises(DivergenceError, match=r"training loss became non-finite at step 700 \(epoch 1\)"):
        _fit(tmp_path, train, batch_size=2, log_every=1000)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("grad_clip", [0.0, 1e6])
def test_a_non_finite_gradient_is_reported_at_its_step_and_never_applied(grad_clip, fused, tmp_path):
    """A gradient made non-finite at step 77 (finite loss) is found at step 77, with or without clipping, and no
    update is applied from then on (fused Adam skips on the device, the others by a read), so the weights stay the
    ones of step 76 although the loop runs on to its next read point (step 100)."""
    from relgrad_cli.fit import DivergenceError

    calls, weights = [0], {}
    flows = []

    def poison(grad):
        calls[0] += 1
        if calls[0] == 77:
            weights[76] = [p.detach().clone() for p in flows[0].parameters()]
            return grad * math.nan
        return grad

    def prepare(flow):
        flows.append(flow)
        flow.layers[0].weight.register_hook(poison)

    with pytest.raises(DivergenceError) as err:
        _fit(tmp_path, prepare=prepare, grad_clip=grad_clip, fused=fused)
    assert "the gradient became non-finite at step 77 (epoch 1)" in str(err.value)
    assert calls[0] == 100  # the loop went on to the read point at step 100
    assert all(torch.equal(a, b) for a, b in zip(weights[76], flows[0].parameters(), strict=True))


class _SignalAt(NullTracker):
    """A tracker that sends this process ``signum`` when the step ``step`` is logged, unless its default action
    (terminate) is in place (a failing test must not kill pytest), and records the handler installed for ``watch``
    then."""

    def __init__(self, step: int, signum: int | None, watch: int = signal.SIGUSR2):
        self.step, self.signum, self.watch, self.handler_seen = step, signum, watch, None

    def log(self, record):
        if record["split"] == "train" and record["step"] == self.step:
            self.handler_seen = signal.getsignal(self.watch)
            if self.signum is not None and signal.getsignal(self.signum) != signal.SIG_DFL:
                os.kill(os.getpid(), self.signum)


@pytest.fixture
def usr2_handler():
    """Restores SIGUSR2's handler after the test."""
    old = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, old)


class _Requeued(Exception):
    pass


@pytest.mark.parametrize("handler_returns", [False, True])
def test_before_timeout_signal_writes_last_then_goes_to_the_previous_handler(handler_returns, usr2_handler,
                                                                            monkeypatch, tmp_path):  # fmt: skip
    """As in a submitit job: a Python handler for SIGUSR2 is installed before fit(); it is called after last.pt is
    written at the step the signal arrived, then (if it returns) fit() stops as for SIGUSR1."""
    from relgrad_cli.fit import Preempted

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)

    ckpt = tmp_path / "checkpoints" / "last.pt"
    calls = []

    def previous(signum, frame):
        calls.append(signum)
        saved = torch.load(ckpt, weights_only=True)["state"]  # the checkpoint is already there, at this step
        assert (saved["step"], saved["epoch_step"]) == (70, 70)
        if not handler_returns:
            raise _Requeued  # submitit requeues and exits (sys.exit) here

    signal.signal(signal.SIGUSR2, previous)
    expected = Preempted if handler_returns else _Requeued
    with pytest.raises(expected) as err:
        _fit(tmp_path, log_every=10, tracker=_SignalAt(70, signal.SIGUSR2))
    assert calls == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is previous  # restored
    if handler_returns:
        assert (err.value.signum, err.value.step) == (signal.SIGUSR2, 70)


def test_before_timeout_signal_without_a_handler(usr2_handler, monkeypatch, tmp_path):
    """Outside a submitit job SIGUSR2 is left alone, whatever handler it has; inside one (SUBMITIT_EXECUTOR set,
    SUBMITIT_PREEMPT_SIGNAL naming the signal) it stops the run like SIGUSR1, also with no handler before."""
    from relgrad_cli.fit import Preempted

    def own(signum, frame):  # a program's own use of SIGUSR2 (status dumps, log rotation)
        pass

    signal.signal(signal.SIGUSR2, own)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    untouched = _SignalAt(30, None)
    _fit(tmp_path / "a", tracker=untouched, log_every=10)
    assert untouched.handler_seen is own
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    with pytest.raises(Preempted) as err:
        _fit(tmp_path / "b", tracker=_SignalAt(30, signal.SIGUSR2), log_every=10)
    assert (err.value.signum, err.value.step) == (signal.SIGUSR2, 30)
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] == 30
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL

    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "XCPU")  # submitit's signal is another one: USR2 left alone
    other = _SignalAt(30, signal.SIGXCPU, watch=signal.SIGUSR2)
    with pytest.raises(Preempted) as err:
        _fit(tmp_path / "c", tracker=other, log_every=10)
    assert err.value.signum == signal.SIGXCPU and other.handler_seen == signal.SIG_DFL


def test_submitit_before_timeout_signal_checkpoints_then_submitit_requeues_and_the_job_resumes(tmp_path):
    """A real submitit job (the process submitit's local executor and SLURM start: ``python -m
    submitit.core._submit``, with submitit's signal handlers) gets USR2 mid-epoch: relgrad writes last.pt at that
    step, then submitit's handler requeues the job (checkpointable, as hydra's launcher is) and exits; the requeued
    job resumes from last.pt (trainer.resume=auto) and finishes."""
    import submitit
    from hydra import compose, initialize_config_dir
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

    from relgrad_cli.config import register_configs

    class Train(submitit.helpers.Checkpointable):  # defined here: cloudpickle ships it by value
        def __call__(self, cfg, run_dir):
            from relgrad_cli.train import run

            return run(cfg, run_dir)["steps"]

    register_configs()
    overrides = ["data.n_train=20000", "trainer.batch_size=10", "trainer.max_epochs=2", "trainer.resume=auto", *TINY]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run_dir, folder = tmp_path / "run", tmp_path / "submitit"
    paths = JobPaths(folder, job_id="4242")
    folder.mkdir()
    delayed = DelayedSubmission(Train(), cfg, run_dir)
    delayed.set_timeout(timeout_min=60, max_num_timeout=2)
    delayed.dump(paths.submitted_pickle)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="4242", SUBMITIT_LOCAL_NTASKS="1",
               SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_GLOBALID="0",
               SUBMITIT_LOCAL_LOCALID="0")  # fmt: skip

    def job() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "submitit.core._submit", str(folder)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    proc = job()
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"

    def in_epoch_2() -> bool:  # a train record of epoch 2 (step 2050 of 4000): last.pt of epoch 1 is written
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        return any('"split": "train"' in ln and '"epoch": 2' in ln for ln in lines)

    while not in_epoch_2():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == LOCAL_REQUEUE_RETURN_CODE, err[-3000:]  # submitit's handler ran and requeued
    assert "Caught signal SIGUSR2" in err and "Requeued job 4242" in out + err
    saved = last(run_dir)["state"]
    assert saved["epoch"] == 1 and saved["epoch_step"] > 0  # written at the signal, mid-epoch 2
    assert not (run_dir / "summary.json").exists()

    requeued = job()  # what submitit does with the re-dumped job
    out, err = requeued.communicate(timeout=120)
    assert requeued.returncode == 0, err[-3000:]
    assert f"resuming from {ckpt} at epoch 1, step {saved['step']}" in out
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4000


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


def test_divergence_between_log_points_names_its_step_in_every_process(tmp_path):
    """With the default log_every (50) the reported step is the one trainer.log_every=1 finds; a checkpoint due
    after it is not written; both processes of a data-parallel run stop with the same message."""
    base = ["optim=sgd", "optim.lr=1e6", "optim.momentum=0", "data.n_train=500", "trainer.batch_size=10", *TINY]
    ref = cli([*base, "trainer.log_every=1", f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert ref.returncode == 2, ref.stderr[-2000:]
    step = int(re.search(r"training loss became non-finite at step (\d+) ", ref.stderr).group(1))
    assert 2 < step < 50  # between the first log points of the default log_every
    run = tmp_path / "run"
    res = cli([*base, "trainer.checkpoint_every=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert f"the training loss became non-finite at step {step} (epoch 1)" in line
    assert f"the last good checkpoint is kept ({run / 'checkpoints' / 'last.pt'})" in line
    kept = last(run)
    assert kept["state"]["step"] == 2 * ((step - 1) // 2)  # the last one before the bad step
    assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values())
    two = cli(["--nproc_per_node=2", "--standalone", "-m", "relgrad_cli.train", *base,
               f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path, exe="torchrun")  # fmt: skip
    assert two.returncode != 0
    assert two.stderr.count(f"error: the training loss became non-finite at step {step} (epoch 1)") == 2, two.stderr


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
