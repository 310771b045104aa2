"""Hardening of the runner: one writer per run folder, Ctrl-C, resume=auto that never starts a run over, damaged
or foreign checkpoints, orphaned temporary files, data options checked up front, and a sweep job's error file."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import make_cfg

from relgrad_cli.config import ConfigError
from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.tracking import NullTracker
from relgrad_cli.train import run

BIN = Path(sys.executable).parent
SMALL = ["data.dim=4", "data.n_train=200", "data.n_val=100", "data.n_test=100", "trainer.dtype=float64", "logger=none",
         "trainer.progress=false", "trainer.max_epochs=1"]  # fmt: skip
LONG = ["data.n_train=2000", "trainer.batch_size=10", "trainer.max_epochs=20", "trainer.checkpoint_every=37",
        "data.dim=4", "data.n_val=100", "data.n_test=100", "trainer.dtype=float64", "logger=none",
        "trainer.progress=false"]  # fmt: skip


def cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RANK")}
    return subprocess.run([str(BIN / "relgrad-train"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**env, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def start(run_dir: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "relgrad-train"), *LONG, *extra, f"hydra.run.dir={run_dir}"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def wait_for_mid_epoch_checkpoint(proc: subprocess.Popen, run_dir: Path) -> dict:
    """Until last.pt holds a step in the middle of an epoch after the first (the run is well under way)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        path = run_dir / "checkpoints" / "last.pt"
        if path.exists():
            try:
                st = torch.load(path, weights_only=True)["state"]
            except (RuntimeError, EOFError, OSError):  # replaced while read
                continue
            if st["epoch"] >= 1 and st["epoch_step"] > 0:
                return st
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. one writer per run folder ----------------------------------------------------------------------------------


def test_a_second_process_on_a_busy_run_folder_stops_at_once_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = start(run_dir, tmp_path)
    try:
        wait_for_mid_epoch_checkpoint(first, run_dir)
        assert (run_dir / ".lock").read_text().strip() == str(first.pid)
        hydra_before = snapshot(run_dir / ".hydra")
        log_before = (run_dir / "train.log").read_bytes()
        for resume in ("never", "auto"):
            began = time.time()
            res = cli([*LONG, "seed=1", f"trainer.resume={resume}", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
            assert res.returncode == 2, res.stderr
            assert lines(res.stderr) == [
                f"relgrad-train: error: the run folder {run_dir} is in use by another relgrad-train process "
                f"(PID {first.pid}); wait for it to end, or give this run its own folder (hydra.run.dir=...)"
            ]
            assert time.time() - began < 30  # at once: no data, no torch
            assert snapshot(run_dir / ".hydra") == hydra_before  # Hydra did not write its files for this run
            assert (run_dir / "train.log").read_bytes() == log_before
            assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    res = cli([*LONG, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]  # the lock went with the process
    assert (run_dir / ".lock").read_text().strip() != str(first.pid)


HOLD = """
import sys, time
from relgrad_cli.files import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_run_takes_the_lock_itself_and_a_crashed_holder_leaves_it_free(tmp_path):
    """run() refuses a folder whose lock another process holds (the check in main() only sees the command line),
    before writing anything; a holder killed with SIGKILL leaves the folder free."""
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        with pytest.raises(ConfigError) as err:
            run(make_cfg(SMALL), run_dir=run_dir)
        assert f"the run folder {run_dir} is in use by another relgrad-train process (PID {holder.pid})" in str(
            err.value
        )
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    summary = run(make_cfg(SMALL), run_dir=run_dir)
    assert summary["steps"] == 2
    assert (run_dir / ".lock").read_text().strip() == str(os.getpid())


def test_only_process_0_of_a_data_parallel_job_takes_the_lock(tmp_path, monkeypatch):
    from relgrad_cli.train import RunFolderInUse, _lock_run_folder, run_folder_in_use

    holder = _hold(tmp_path)
    try:
        monkeypatch.setenv("RANK", "1")
        assert _lock_run_folder(tmp_path) is None
        assert run_folder_in_use([f"hydra.run.dir={tmp_path}"]) is None  # process 0 holds it: not an error
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(RunFolderInUse, match=f"PID {holder.pid}"):
            _lock_run_folder(tmp_path)
        assert f"PID {holder.pid}" in run_folder_in_use([f"hydra.run.dir={tmp_path}"])
        for argv in (["-m", f"hydra.run.dir={tmp_path}"], ["--cfg", "job", f"hydra.run.dir={tmp_path}"],
                     [f"hydra.run.dir={tmp_path}/${{now:%H}}"], []):  # fmt: skip
            assert run_folder_in_use(argv) is None
    finally:
        holder.kill()
        holder.wait()
    lock = _lock_run_folder(tmp_path)
    assert lock is not None and run_folder_in_use([f"hydra.run.dir={tmp_path}"]) is not None  # held by this process
    lock.release()
    assert run_folder_in_use([f"hydra.run.dir={tmp_path}"]) is None


# -- 2. Ctrl-C -----------------------------------------------------------------------------------------------------


def test_sigint_writes_a_checkpoint_and_exits_130_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, tmp_path)
    wait_for_mid_epoch_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    (line,) = lines(err)
    step = int(line.split("at step ")[1].split(";")[0])
    assert line == (f"relgrad-train: stopped by signal SIGINT at step {step}; state saved in "
                    f"{run_dir / 'checkpoints' / 'last.pt'}; continue with trainer.resume=auto "
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert saved["step"] == step and saved["epoch_step"] > 0  # written at the step it stopped, mid-epoch
    assert not (run_dir / "summary.json").exists()


def test_two_quick_sigints_exit_130_with_one_line_and_no_traceback(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, tmp_path)
    wait_for_mid_epoch_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    (line,) = lines(err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "stopped by signal SIGINT" in line or "interrupted; stopped at once" in line
    torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)  # a whole checkpoint either way


class _Interrupt(NullTracker):
    """A tracker that sends this process SIGINT ``times`` times when step ``step`` is logged, if fit's handler is in
    place (Python's default one would raise KeyboardInterrupt at the first: a test could pass for the wrong reason,
    or stop pytest). A short sleep after each lets the handler run before the next one is sent."""

    def __init__(self, step: int, times: int):
        self.step, self.times, self.sent = step, times, 0

    def log(self, record):
        if record["split"] == "train" and record["step"] == self.step:
            for _ in range(self.times):
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    return
                self.sent += 1
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)


def test_a_second_sigint_while_the_first_is_handled_stops_at_once(tmp_path):
    """The first SIGINT is recorded (training would stop at this step boundary); the second raises
    KeyboardInterrupt at once, before any checkpoint of this step is written."""
    from test_scale import _fit

    tracker = _Interrupt(30, times=2)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, tracker=tracker, log_every=10)
    assert tracker.sent == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert saved["step"] == 0  # the start's checkpoint: nothing was written at the interrupted step


def test_one_sigint_in_process_stops_like_sigterm(tmp_path):
    from test_scale import _fit

    from relgrad_cli.fit import Preempted

    tracker = _Interrupt(40, times=1)
    with pytest.raises(Preempted) as err:
        _fit(tmp_path, tracker=tracker, log_every=10)
    assert tracker.sent == 1 and (err.value.signum, err.value.step) == (signal.SIGINT, 40)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] == 40
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_keyboard_interrupt_outside_training_is_one_line_and_130(monkeypatch, capsys):
    import relgrad_cli.train as train

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    with pytest.raises(SystemExit) as exit_:
        train.task(make_cfg(SMALL))
    assert exit_.value.code == 130
    assert lines(capsys.readouterr().err) == [
        "relgrad-train: interrupted; stopped at once, without writing a checkpoint"
    ]


# -- 3. resume=auto never starts a run over ------------------------------------------------------------------------


def _break_last(last: Path, how: str) -> None:
    last.unlink()
    if how == "dangling link":
        last.symlink_to(last.parent / "gone.pt")
    elif how == "folder":
        last.mkdir()
    elif how == "empty":
        last.write_bytes(b"")


@pytest.mark.parametrize("how, why", [
    ("deleted", "it is missing"), ("dangling link", "it is a link to"), ("folder", "it is a folder"),
    ("empty", "it is empty, 0 bytes"),
])  # fmt: skip
def test_resume_auto_refuses_a_run_without_a_readable_last_checkpoint(how, why, tmp_path):
    run(make_cfg(SMALL), run_dir=tmp_path)
    _break_last(tmp_path / "checkpoints" / "last.pt", how)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"]), run_dir=tmp_path)
    message = str(err.value)
    held = "metrics.jsonl, summary.json" + (", checkpoints/last.pt" if how != "deleted" else "")
    assert message.startswith(f"the run folder {tmp_path} holds a run ({held}, checkpoints/best.pt) but no readable "
                              f"checkpoints/last.pt to continue from ({why}")  # fmt: skip
    assert "trainer.resume=auto will not start it over" in message and "\n" not in message
    assert f"trainer.resume={tmp_path / 'checkpoints' / 'best.pt'}" in message
    assert snapshot(tmp_path) == before


def test_resume_auto_refuses_records_alone_and_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"split": "val", "step": 0, "epoch": 0, "ll": -5.0}\n')
    res = cli([*SMALL, "trainer.resume=auto", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert lines(res.stderr) == [
        f"relgrad-train: error: the run folder {run_dir} holds a run (metrics.jsonl) but no readable "
        "checkpoints/last.pt to continue from (it is missing); trainer.resume=auto will not start it over: restore "
        "checkpoints/last.pt, or start a new run in another folder (hydra.run.dir=...)"
    ]
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("leftover", [None, "empty metrics", "hydra files"])
def test_resume_auto_starts_a_new_run_in_a_folder_without_one(leftover, tmp_path):
    if leftover == "empty metrics":  # a run stopped before its first checkpoint
        (tmp_path / "metrics.jsonl").write_text("")
    elif leftover == "hydra files":
        (tmp_path / ".hydra").mkdir()
        (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    summary = run(make_cfg([*SMALL, "trainer.resume=auto"]), run_dir=tmp_path)
    assert summary["steps"] == 2


# -- 4. damaged and foreign checkpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("good")
    run(make_cfg(SMALL), run_dir=folder)
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)


def _with(ck: dict, **changes) -> dict:
    out = dict(ck)
    out.update(changes)
    return out


def _write(kind: str, path: Path, ck: dict) -> None:
    good = dict(ck)
    if kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text file":
        text = Path("/etc/passwd").read_bytes() if Path("/etc/passwd").is_file() else b"root:x:0:0:root:/root:/bin/sh\n"
        path.write_bytes(text)
    elif kind == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "a list":
        torch.save([1, 2, 3], path)
    elif kind == "no model":
        torch.save({k: v for k, v in good.items() if k != "model"}, path)
    elif kind == "bad state":
        torch.save(_with(good, state={**good["state"], "step": "seven"}), path)
    elif kind == "state not a dict":
        torch.save(_with(good, state=[1, 2]), path)
    elif kind == "bad generator":
        torch.save(_with(good, generator=torch.zeros(3)), path)
    elif kind == "bad optimizer":
        torch.save(_with(good, optimizer={"state": {}, "param_groups": "adam"}), path)
    elif kind == "needs weights_only=False":
        torch.save(_with(good, args=argparse.Namespace(lr=0.1)), path)
    else:
        raise AssertionError(kind)


DAMAGED = [
    ("zero bytes", "is empty (0 bytes)"),
    ("random bytes", "is not a PyTorch checkpoint (unknown binary content"),
    ("text file", "is not a PyTorch checkpoint (a text file"),
    ("truncated", "is a damaged PyTorch file ("),
    ("a list", "holds a list, not a relgrad-train checkpoint"),
    ("no model", "has no 'model' entry (the weights)"),
    ("bad state", "has a damaged 'state' entry (step is a str)"),
    ("state not a dict", "has a 'state' entry that is a list, not a dict"),
    ("bad generator", "has a 'generator' entry that is not a random generator state"),
    ("bad optimizer", "has an 'optimizer' entry that is not an optimizer state dict"),
    ("needs weights_only=False",
     "holds Python objects (argparse.Namespace) that torch loads only with weights_only=False"),
]  # fmt: skip


@pytest.mark.parametrize("kind, words", DAMAGED, ids=[k for k, _ in DAMAGED])
def test_a_damaged_or_foreign_checkpoint_is_one_line_for_resume_and_load_model(kind, words, good_checkpoint,
                                                                               tmp_path):  # fmt: skip
    from relgrad_cli.models import load_model

    path = tmp_path / "ckpt.pt"
    _write(kind, path, good_checkpoint)
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*SMALL, f"trainer.resume={path}"]), run_dir=tmp_path / "run")
    message = str(err.value)
    assert message.startswith(f"trainer.resume={path}: {path} {words}"), message
    assert "\n" not in message and "; use " in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path} {words}") and "\n" not in str(err.value)


def test_a_damaged_checkpoint_is_reported_before_the_data_are_read(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty.pt is empty \(0 bytes\)"):  # not: POWER needs power/data.npy
        run(make_cfg(["data=power", f"data.root={tmp_path / 'no-data'}", f"trainer.resume={path}", "logger=none"]),
            run_dir=tmp_path / "run")  # fmt: skip


def test_a_damaged_last_checkpoint_with_resume_auto_through_the_cli(good_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    res = cli([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.pt"
    _write("random bytes", last, good_checkpoint)
    res = cli([*SMALL, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert lines(res.stderr) == [
        f"relgrad-train: error: trainer.resume=auto: {last} is not a PyTorch checkpoint (unknown binary content, "
        "not a torch.save file): it is damaged or not a checkpoint; use a checkpoints/last.pt or best.pt written by "
        "relgrad-train"
    ]


def test_an_optimizer_state_of_another_shape_is_one_line(good_checkpoint, tmp_path):
    ck = dict(good_checkpoint)
    groups = [dict(g) for g in ck["optimizer"]["param_groups"]]
    groups[0]["params"] = groups[0]["params"][:1]
    ck["optimizer"] = {**ck["optimizer"], "param_groups": groups}
    path = tmp_path / "odd.pt"
    torch.save(ck, path)
    with pytest.raises(ConfigError, match=r"has optimizer or schedule state that does not fit this model's optim"):
        run(make_cfg([*SMALL, f"trainer.resume={path}"]), run_dir=tmp_path / "run")


def test_load_model_without_the_architecture_or_with_another_one(good_checkpoint, tmp_path):
    from relgrad_cli.models import load_model

    torch.save({"model": good_checkpoint["model"]}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare.pt holds weights without the architecture \(no 'flow' entry"):
        load_model(tmp_path / "bare.pt")
    torch.save(_with(good_checkpoint, flow={**good_checkpoint["flow"], "depth": 5}), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt: its recorded architecture and weights do not make a model"):
        load_model(tmp_path / "other.pt")
    model = load_model(_save(good_checkpoint, tmp_path / "good.pt"))  # the reader still reads a good one
    assert sum(p.numel() for p in model.parameters()) > 0


def _save(ck: dict, path: Path) -> Path:
    torch.save(ck, path)
    return path


# -- 5. orphaned temporary files -------------------------------------------------------------------------------------

ORPHANS = ["checkpoints/.last.pt.k2j4h_1a.tmp", "checkpoints/.best.pt.zz81qq0p.tmp", ".summary.json.a8d7f6g5.tmp",
           ".metrics.jsonl.0f9e8d7c.tmp"]  # fmt: skip


def _plant(folder: Path) -> None:
    for name in ORPHANS:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"half a checkpoint")
    (folder / "checkpoints" / "notes.tmp").write_text("mine")  # not a temporary file of ours: kept


@pytest.mark.parametrize("continued", [False, True])
def test_orphaned_temporary_files_are_removed_when_a_run_starts_or_continues(continued, tmp_path):
    if continued:
        run(make_cfg(SMALL), run_dir=tmp_path)
    _plant(tmp_path)
    overrides = [*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"] if continued else SMALL
    run(make_cfg(overrides), run_dir=tmp_path)
    assert not [name for name in ORPHANS if (tmp_path / name).exists()]
    assert (tmp_path / "checkpoints" / "notes.tmp").read_text() == "mine"


def test_orphans_stay_while_another_process_holds_the_folder(tmp_path):
    _plant(tmp_path)
    holder = _hold(tmp_path)
    try:
        with pytest.raises(ConfigError, match="is in use by another relgrad-train process"):
            run(make_cfg(SMALL), run_dir=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert all((tmp_path / name).exists() for name in ORPHANS)


# -- 6. data options checked before any work -------------------------------------------------------------------------


@pytest.mark.parametrize("name, opts, words", [
    ("ica", {"alpha": 5.0}, "data.alpha=5.0 is not allowed: the slope of the mixing network's smooth leaky-ReLU must "
                            "lie strictly between 0 and 1"),
    ("ica", {"alpha": 0.0}, "data.alpha=0.0 is not allowed"),
    ("ica", {"alpha": 1.0}, "data.alpha=1.0 is not allowed"),
    ("ica", {"n_test": 1}, "data.n_test=1 is not allowed: each split needs at least 2 rows"),
    ("ica", {"n_val": 1}, "data.n_val=1 is not allowed"),
    ("ica", {"n_train": 0}, "data.n_train=0 is not allowed"),
    ("toy2d", {"n_test": 1}, "data.n_test=1 is not allowed: each toy2d split needs at least 2 rows"),
    ("toy2d", {"n_val": 1}, "data.n_val=1 is not allowed"),
    ("toy2d", {"n_train": 1}, "data.n_train=1 is not allowed"),
])  # fmt: skip
def test_generated_data_options_are_checked(name, opts, words):
    with pytest.raises(DatasetError) as err:
        load_dataset(name, None, **opts)
    assert str(err.value).startswith(words) and "\n" not in str(err.value)


def test_two_rows_per_split_are_enough():
    ds = load_dataset("ica", None, dim=2, n_train=2, n_val=2, n_test=2)
    assert len(ds.test) == 2
    assert len(load_dataset("toy2d", None, n_train=2, n_val=2, n_test=2).val) == 2


def test_ica_alpha_through_the_cli_is_one_line(tmp_path):
    res = cli([*SMALL, "data.alpha=5", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert lines(res.stderr) == ["relgrad-train: error: data.alpha=5.0 is not allowed: the slope of the mixing "
                                 "network's smooth leaky-ReLU must lie strictly between 0 and 1"]  # fmt: skip


def _npy(root: Path, name: str, array: np.ndarray, allow_pickle: bool = False) -> None:
    (root / name).mkdir(parents=True)
    np.save(root / name / "data.npy", array, allow_pickle=allow_pickle)


@pytest.mark.parametrize("dtype, words", [("complex", "holds complex128 values"), ("object", "holds object values"),
                                          ("text", "holds <U")])  # fmt: skip
@pytest.mark.parametrize("name, cols", [("miniboone", 43), ("power", 8)])
def test_npy_data_of_other_kinds_are_refused(dtype, words, name, cols, tmp_path):
    real = np.random.default_rng(0).normal(size=(300, cols))
    array = {"complex": real + 1j, "object": real.astype(object), "text": real.astype(str)}[dtype]
    _npy(tmp_path, name, array, allow_pickle=dtype == "object")
    with pytest.raises(DatasetError) as err:
        load_dataset(name, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / name / 'data.npy'} {words}"), message
    assert "real numbers" in message and "relgrad-data download maf" in message


def test_complex_hdf5_and_gas_columns_are_refused(tmp_path):
    import h5py
    import pandas as pd
    import test_data_maf as maf

    arrays = maf.write_bsds(tmp_path)
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "r+") as f:
        del f["validation"]
        f["validation"] = arrays["validation"] + 0.5j
    with pytest.raises(DatasetError, match=r"BSDS300.hdf5: dataset 'validation' holds complex\d+ values"):
        load_dataset("bsds300", tmp_path)
    frame = maf.gas_frame()
    sensor = [c for c in frame.columns if c not in ("Time", "Meth", "Eth")][2]
    frame[sensor] = frame[sensor] + 1j
    (tmp_path / "gas").mkdir()
    pd.to_pickle(frame, tmp_path / "gas" / "ethylene_CO.pickle")
    with pytest.raises(DatasetError, match=rf"ethylene_CO.pickle: column\(s\) {sensor} hold complex values"):
        load_dataset("gas", tmp_path)


def test_complex_npy_through_the_cli_is_one_line(tmp_path):
    root = tmp_path / "data"
    _npy(root, "miniboone", np.random.default_rng(0).normal(size=(300, 43)) * (1 + 1j))
    res = cli(["data=miniboone", f"data.root={root}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
              cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = lines(res.stderr)
    assert f"{root / 'miniboone' / 'data.npy'} holds complex128 values" in line


# -- 7. a failed sweep job says why in its folder ------------------------------------------------------------------


def test_a_failed_sweep_job_writes_its_reason_into_error_txt(tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "optim.lr=-1,0.01", *SMALL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    reason = "optim.lr=-1.0 is not allowed: the learning rate must be positive"
    assert (sweep / "0" / "error.txt").read_text() == reason + "\n"
    assert f"relgrad-train: error: {reason}" in res.stderr
    assert not (sweep / "1" / "error.txt").exists() and (sweep / "1" / "summary.json").is_file()
    assert lines(res.stderr)[-1] == (
        f"relgrad-train: sweep of 2 jobs in {sweep}: 1 finished, 1 failed (job 0; the "
        f"reasons are in <job>/error.txt); relgrad-report sweep {sweep} lists every job"
    )


def test_a_sweep_that_succeeds_ends_with_its_count_and_a_run_prints_none(tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "seed=0,1", *SMALL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert lines(res.stderr)[-1] == f"relgrad-train: sweep of 2 jobs in {sweep}: 2 finished"
    res = cli([*SMALL, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    assert res.returncode == 0 and "sweep of" not in res.stderr + res.stdout


def test_a_run_that_starts_removes_an_earlier_error_txt(tmp_path):
    (tmp_path / "error.txt").write_text("data.alpha=5.0 is not allowed\n")
    run(make_cfg(SMALL), run_dir=tmp_path)
    assert not (tmp_path / "error.txt").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 2
