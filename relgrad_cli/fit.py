"""The fit loop: an ordinary torch training loop, readable top to bottom.

The gradient mode lives inside the layers' backward (see :mod:`relgrad_cli.relative`), so this loop does not know
whether it trains with relative or Euclidean gradients, or another model altogether (:mod:`relgrad_cli.models`):
it calls ``model.training_loss(x).backward()`` and ``optimizer.step()``. Validation always evaluates the exact
log-likelihood (log-det terms included).

Resuming is exact: a checkpoint holds the model, the optimizer, the shuffling generator's state at the start of the
current epoch and the number of steps already taken in it, so a run continued from any checkpoint (after a crash,
SIGKILL or preemption) replays the same batches and ends bit-identical on the CPU.

Data parallel (torchrun): every process holds the data and draws the same permutation; process r of W takes rows
r, r+W, … of each global batch (n_r of N rows), back-propagates (n_r/N)·L_r, and the gradients are summed across
processes, each one's all-reduce launched as soon as autograd has it (:class:`GradientReducer`), overlapping the
rest of the backward. The sum is the gradient of the global batch's mean loss, and since every L_r contains
−log|det W| once with weight n_r/N, the log-det term is counted exactly once (also for the relative gradient, whose
log-det coefficient comes from autograd). Validation is sharded the same way (:func:`log_likelihoods`).

No host–device synchronisation in the step: the step's loss is added to a device accumulator, a non-finite loss or
gradient is recorded on the device and stops the updates there (:class:`DivergenceGuard`), and step times come
from CUDA events on a GPU (:class:`StepTimer`). The host reads the device once per read point: every ``log_every``
steps, at the end of an epoch, at a checkpoint, and when a signal or the budget asks to stop. A divergence raises
:class:`DivergenceError` there, naming the exact step it happened at, with the weights of the step before. In
data-parallel runs the processes agree on stopping (a signal, the budget, divergence) at the read points, inside
the one collective that also sums the logged losses.

Budgets: ``max_seconds`` bounds the training time (wall clock or process CPU time, evaluation excluded, counted
across resumes); the loop stops at the first step boundary past it, evaluates the model there, and the run ends as
any finished run (``stopped_by: budget``). Every run starts with a validation of the untrained model, so the curve
begins at step 0 and the best checkpoint is never worse on validation than the start.

Stopping on signals: SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) — and, inside a submitit job (hydra's submitit launchers), the
signal submitit gets before the time limit (``JobEnvironment.USR_SIG``, SIGUSR2 by default) — make the loop write
``last.pt`` at the next step boundary (data parallel: the next read point); then the signal goes on to the handler it
displaced (submitit's requeues the job and exits), or, without one, :class:`Preempted` is raised. A second SIGINT while
the first is being handled raises KeyboardInterrupt at once (no checkpoint is written then).
"""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from .choices import COMPILE_MODES
from .files import atomic_temp, raise_if_disk_full
from .metrics import mean_and_2se
from .optim import LRSchedule
from .tracking import Tracker

STEP_TIMES_KEPT = 10_000  # step times kept for the median (the most recent ones)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or validation log-likelihood."""


@dataclass
class FitState:
    """Everything needed to continue a run: saved in every checkpoint (tensors and plain types only)."""

    epoch: int = 0  # completed epochs
    step: int = 0
    best_val_ll: float = -math.inf
    best_epoch: int = 0
    bad_evals: int = 0
    train_seconds: float = 0.0  # wall-clock training time, evaluation excluded
    train_cpu_seconds: float = 0.0  # process CPU time (all threads) of the same
    step_ms: list[float] = field(default_factory=list)  # the most recent STEP_TIMES_KEPT (to 2×) step times
    step_cpu_ms: list[float] = field(default_factory=list)  # their process CPU times
    stopped_early: bool = False
    stopped_by: str = ""  # max_epochs, early_stopping or budget, once the run has ended
    epoch_step: int = 0  # steps already taken in the current (unfinished) epoch
    epoch_rng: torch.Tensor | None = None  # shuffling generator state at the start of the current epoch


class Preempted(Exception):
    """Training stopped on a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by signal {signal.Signals(signum).name} at step {step}; state saved in {path}")
        self.signum, self.step, self.path = signum, step, path


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> Dist:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def _submitit_signal() -> int | None:
    """Inside a submitit job (SUBMITIT_EXECUTOR is set): the signal submitit gets before the time limit
    (``JobEnvironment.USR_SIG``: SUBMITIT_PREEMPT_SIGNAL, default USR2), whose handler requeues the job. Else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return None if sig in _StopSignals.SIGNALS else sig


class _StopSignals:
    """Record SIGTERM/SIGUSR1/SIGINT (and submitit's before-timeout signal, see :func:`_submitit_signal`) while
    active (main thread only) instead of dying; restores the old handlers, and :meth:`stop` hands the signal over to
    the handler it displaced (never Python's default SIGINT handler, which would only raise KeyboardInterrupt). A
    SIGINT that arrives while a stop is already pending raises KeyboardInterrupt: a second Ctrl-C quits at once."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None), signal.SIGINT) if s)

    def __init__(self) -> None:
        self.received: int | None = None  # the signal to stop on: this process's, or (data parallel) another's
        self.own: int | None = None  # the signal this process received itself
        self._frame: Any = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            extra = _submitit_signal()
            for sig in (*self.SIGNALS, *([extra] if extra is not None else [])):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received is not None:  # the second request to stop: now
            raise KeyboardInterrupt
        self.received = self.own = signum
        self._frame = frame

    def agree(self, dist: Dist, device: torch.device | None = None) -> bool:
        """Whether to stop on a signal: this process got one or, data parallel, any process did. Every process
        calls this at the same points (one all-reduce), so they all take the same decision at the same step."""
        if dist.world == 1:
            return self.received is not None
        flags = torch.tensor([self.received or 0], dtype=torch.int64, device=device)
        _all_reduce(flags, op="max")
        signum = int(flags)
        if signum and self.received is None:
            self.received = signum
        return bool(signum)

    @property
    def signum(self) -> int:
        return int(self.received or 0)

    def stop(self, step: int, path: Path) -> NoReturn:
        """After ``last.pt`` is written: give the signal this process received to the Python handler it displaced
        (submitit's requeues the job and exits), with the old handlers back in place; raise :class:`Preempted`
        when there was no such handler, when it returns, or when the signal came from another process."""
        previous = self._old.get(self.own) if self.own is not None else None
        frame, self._frame = self._frame, None
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.own, frame)
        raise Preempted(self.signum, step, path)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


TIMES = ("step_ms", "step_cpu_ms")  # kept as tensors in a checkpoint: pickling 20 000 floats made a save 10× slower


def state_entry(state: FitState) -> dict[str, Any]:
    """The checkpoint's ``state`` entry: the fields of ``state``, the step-time lists as float64 tensors."""
    return {k: (torch.tensor(v, dtype=torch.float64) if k in TIMES else v) for k, v in vars(state).items()}


def state_from_entry(entry: dict[str, Any]) -> FitState:
    """The :class:`FitState` of a checkpoint's ``state`` entry (step times as tensors, or as lists in older files)."""
    return FitState(**{k: (v.tolist() if k in TIMES and torch.is_tensor(v) else v) for k, v in entry.items()})


def save_checkpoint(
    path: Path,
    flow: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: FitState,
    generator: torch.Generator | None = None,
    extra: dict[str, Any] | None = None,
    schedule: LRSchedule | None = None,
) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename). Loadable with
    ``torch.load(path, weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "model": flow.state_dict(),
        "flow": flow.config(),  # the architecture: relgrad_cli.models.load_model rebuilds the model from the file
        "state": state_entry(state),
        "extra": extra or {},
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if generator is not None:
        payload["generator"] = generator.get_state()
    if schedule is not None:
        payload["schedule"] = schedule.state_dict()
    tmp = atomic_temp(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(err, path, _tensor_bytes(payload) + 65536)
        raise


def _tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nested payload: about the size of its checkpoint file."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not one written by relgrad-train; the message names the file, what
    is wrong and what to do, on one line."""


RELGRAD_CHECKPOINT = "a checkpoints/last.pt or best.pt written by relgrad-train"
DAMAGED = f"use an intact copy, or another checkpoint ({RELGRAD_CHECKPOINT[2:]})"
FOREIGN = f"use {RELGRAD_CHECKPOINT}"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The one reader of checkpoints: ``torch.load(path, weights_only=True)`` (nothing in the file is executed),
    and a check of what it holds — a dict with the ``model`` weights (name → tensor) and, where present, a ``flow``
    (architecture), ``state`` (:class:`FitState` fields), ``generator`` (a generator state), ``optimizer`` and
    ``schedule`` (state dicts) and ``extra`` (a dict) of the right kinds. Raises :class:`CheckpointError` (a
    ValueError) with one line naming the file, what is wrong and what to do."""
    path = Path(path)

    def bad(problem: str, advice: str = FOREIGN) -> CheckpointError:
        return CheckpointError(f"{path} {problem}; {advice}")

    if not path.exists():
        kind = "is a link to a missing file" if path.is_symlink() else "does not exist"
        raise bad(kind, f"give the path of {RELGRAD_CHECKPOINT}")
    if path.is_dir():
        raise bad("is a folder, not a checkpoint file", f"give the path of {RELGRAD_CHECKPOINT}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        raise bad(f"cannot be read ({err.strerror or err})", "check its permissions") from None
    if size == 0:
        raise bad("is empty (0 bytes): its writing was cut short, or it was truncated", DAMAGED)
    try:
        with warnings.catch_warnings():  # e.g. about a pickle protocol: the error below says it all
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports a bad file in many ways: EOFError, UnpicklingError, RuntimeError, ...
        text = " ".join(str(err).split())
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsafe:
            raise bad(
                f"holds Python objects ({unsafe.group(1)}) that torch loads only with weights_only=False, which can "
                "run code from the file, so relgrad-train does not load it",
                f"{FOREIGN} (or, if you trust the file, load it yourself and save {{'model': state_dict}})",
            ) from None
        if head.startswith(b"PK\x03\x04"):  # a zip archive, as torch.save writes: damaged inside
            reason = text.split(". ")[0][:150] or type(err).__name__
            raise bad(f"is a damaged PyTorch file ({reason})", DAMAGED) from None
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            what = "unknown binary content"
        raise bad(f"is not a PyTorch checkpoint ({what}, not a torch.save file): it is damaged or not a checkpoint",
                  FOREIGN) from None  # fmt: skip
    _check_payload(ck, bad)
    return ck


def _check_payload(ck: Any, bad: Any) -> None:
    """Raise ``bad(problem, advice)`` unless ``ck`` has the shape :func:`save_checkpoint` writes."""
    if not isinstance(ck, dict):
        raise bad(f"holds a {type(ck).__name__}, not a relgrad-train checkpoint (a dict with a 'model' entry)")
    model = ck.get("model")
    if not isinstance(model, dict) or not model:
        raise bad("has no 'model' entry (the weights)" if "model" not in ck else
                  "has a 'model' entry that holds no weights")  # fmt: skip
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise bad("has a 'model' entry that is not a state dict (parameter names → tensors)")
    for key in ("flow", "extra", "schedule", "optimizer", "state"):
        if key in ck and not isinstance(ck[key], dict):
            raise bad(f"has a '{key}' entry that is a {type(ck[key]).__name__}, not a dict", DAMAGED)
    optimizer = ck.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer.get("state"), dict) and
                                      isinstance(optimizer.get("param_groups"), list) and
                                      all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                          for g in optimizer["param_groups"])):  # fmt: skip
        raise bad("has an 'optimizer' entry that is not an optimizer state dict (state, param_groups)", DAMAGED)
    if "generator" in ck:
        g = ck["generator"]
        try:
            if not isinstance(g, torch.Tensor) or g.dtype != torch.uint8:
                raise TypeError
            torch.Generator().set_state(g)
        except (TypeError, RuntimeError, ValueError):
            raise bad("has a 'generator' entry that is not a random generator state", DAMAGED) from None
    if "state" in ck:
        problem = _state_problem(ck["state"])
        if problem:
            raise bad(f"has a damaged 'state' entry ({problem})", DAMAGED)


_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,), "step": (int,), "best_epoch": (int,), "bad_evals": (int,), "epoch_step": (int,),
    "best_val_ll": (float, int), "train_seconds": (float, int), "train_cpu_seconds": (float, int),
    "step_ms": (list, torch.Tensor), "step_cpu_ms": (list, torch.Tensor), "stopped_early": (bool,),
    "stopped_by": (str,),
    "epoch_rng": (torch.Tensor, type(None)),
}  # fmt: skip


def _state_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's ``state`` entry (the :class:`FitState` fields), or None."""
    unknown = sorted(str(k) for k in state if k not in FitState.__dataclass_fields__)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for key, value in state.items():
        types = _STATE_TYPES.get(key)
        if types is None:  # a field this table does not know: no check
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{key} is a {type(value).__name__}"
        if isinstance(value, int) and not isinstance(value, bool) and key != "best_val_ll" and value < 0:
            return f"{key} is {value}"
    return None


@contextmanager
def full_precision() -> Iterator[None]:
    """float32 matmuls at full precision inside (``torch.set_float32_matmul_precision("highest")``: no TF32),
    whatever ``trainer.matmul_precision`` the training runs with; the previous setting is restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@torch.no_grad()
def log_likelihoods(
    flow: torch.nn.Module, x: torch.Tensor, batch_size: int = 10000, dist: Dist | None = None
) -> np.ndarray:
    """Exact per-row log-likelihood (nats) of every row of x, in float64 numpy, with full-precision matmuls.

    A dense flow (one with ``log_prob_rows`` and ``logabsdet``) splits log p(x) into per-row terms (the prior and
    the element-wise maps, in the working dtype, then float64) and the constant Σ_k log|det W_k|, computed once per
    call in float64 (O(L·D³): once, not once per chunk of ``batch_size`` rows). Other models use ``log_prob``.

    Data parallel (``dist`` of W processes): process r evaluates rows r, r+W, … and the log-dets of layers
    r, r+W, …; the log-dets are summed and the rows gathered (two collectives), so every process returns the whole
    array and no process repeats another's work."""
    dist = dist or Dist()
    mine = x[dist.rank :: dist.world]
    with full_precision():
        split = hasattr(flow, "log_prob_rows") and hasattr(flow, "logabsdet")
        if split:
            depth = len(flow.layers)
            ld = flow.logabsdet(torch.float64, layers=range(dist.rank, depth, dist.world)).to(x.device)
            if dist.world > 1:
                _all_reduce(ld)
            rows = [flow.log_prob_rows(chunk).double() + ld for chunk in mine.split(batch_size)]
        else:
            rows = [flow.log_prob(chunk).double() for chunk in mine.split(batch_size)]
    out = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.float64, device=x.device)
    if dist.world > 1:
        out = _gather_strided(out, x.shape[0], dist)
    return out.cpu().numpy()


def _gather_strided(mine: torch.Tensor, n: int, dist: Dist) -> torch.Tensor:
    """The whole (n,) array from every process's rows r, r+W, … (one all-gather of equal-length padded pieces)."""
    import torch.distributed as torch_dist

    size = -(-n // dist.world)
    padded = torch.zeros(size, dtype=mine.dtype, device=mine.device)
    padded[: mine.shape[0]] = mine
    pieces = [torch.empty_like(padded) for _ in range(dist.world)]
    torch_dist.all_gather(pieces, padded)
    out = torch.empty(n, dtype=mine.dtype, device=mine.device)
    for r, piece in enumerate(pieces):
        out[r :: dist.world] = piece[: len(range(r, n, dist.world))]
    return out


class DivergenceGuard:
    """Non-finite losses and gradients caught on the device, without a host read per step.

    Per step, on the device, in five small operations: one fused pass over the (reduced) gradients sets a sticky
    flag at the first non-finite entry (``torch._amp_foreach_non_finite_check_and_unscale_`` with scale 1, the check
    of AMP's GradScaler), and counters record how many steps ran with that flag set and how many ran before the
    first non-finite loss. From the first non-finite gradient on the optimizer skips its updates: a fused
    optimizer takes the flag as its ``found_inf`` tensor and skips on the device; any other optimizer is skipped by
    reading the flag before its step (one host read per step, the price of an unfused optimizer). At a read point
    :meth:`tensors` turns the counters into the first bad step and which of the two it was: the weights are still
    those of the step before it. The gradient flag is the same in every process of a data-parallel run (it is
    taken after the reduction), so all of them skip alike; a loss is per process and only reported."""

    LOSS, GRADIENT = 1.0, 2.0

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grad_clip: float,
                 device: torch.device, start: int):  # fmt: skip
        self.optimizer, self.params, self.grad_clip, self.start = optimizer, params, grad_clip, start
        self.on_device = bool(optimizer.defaults.get("fused")) and getattr(optimizer, "_step_supports_amp_scaling",
                                                                           False)  # fmt: skip
        f32, f64 = dict(dtype=torch.float32, device=device), dict(dtype=torch.float64, device=device)
        self.skip = torch.zeros((), **f32)  # 1 from the first non-finite gradient on
        self.one = torch.ones((), **f32)
        self.skipped = torch.zeros((), **f64)  # steps run with skip set
        self.loss_ok = torch.ones((), **f32)  # 1 until the first non-finite loss
        self.loss_ok_steps = torch.zeros((), **f64)  # steps run before it

    def check(self, loss: torch.Tensor) -> None:
        """After the (reduced) backward, before the optimizer: test, count, clip, arm the skip."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.skip, self.one)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.skipped.add_(self.skip)
        self.loss_ok.mul_(torch.isfinite(loss))
        self.loss_ok_steps.add_(self.loss_ok)
        if self.on_device:
            self.optimizer.found_inf = self.skip

    def optimizer_step(self) -> None:
        """The optimizer's step, skipped from the first non-finite gradient on (on the device when fused)."""
        if self.on_device or not bool(self.skip):
            self.optimizer.step()

    def tensors(self, step: int) -> list[torch.Tensor]:
        """[first bad step (0: none), LOSS or GRADIENT] as float64 device scalars, after ``step`` steps in all."""
        never = torch.full((), math.inf, dtype=torch.float64, device=self.skip.device)
        grad_first = torch.where(self.skipped > 0, step - self.skipped + 1, never)
        loss_first = torch.where(self.loss_ok == 0, self.start + self.loss_ok_steps + 1, never)
        first = torch.minimum(grad_first, loss_first)
        what = torch.where(loss_first <= grad_first, self.LOSS, self.GRADIENT)
        return [torch.where(first.isinf(), 0.0, first), what.double()]

    @classmethod
    def described(cls, step: float, what: float) -> tuple[int, str] | None:
        """(step, "training loss" or "gradient") of the first non-finite one, or None, from :meth:`tensors`' values."""
        if not step:
            return None
        return int(step), "training loss" if what == cls.LOSS else "gradient"

    def close(self) -> None:
        if hasattr(self.optimizer, "found_inf"):
            del self.optimizer.found_inf


class StepTimer:
    """Step durations without a per-step synchronisation. On the CPU a step has finished when its Python calls
    return, so the host clocks (wall and process CPU) time it exactly; on a GPU each step records two CUDA events,
    and :meth:`collect` (at a read, where the loop synchronises anyway) turns them into milliseconds."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[Any, Any, float]] = []  # (start, end, CPU ms) per step since the last collect
        self.t0 = self.c0 = 0.0

    def start(self) -> None:
        self.c0 = time.process_time()
        if self.cuda:
            self.t0 = torch.cuda.Event(enable_timing=True)
            self.t0.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        cpu_ms = 1e3 * (time.process_time() - self.c0)
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
        else:
            end = time.perf_counter()
        self.pending.append((self.t0, end, cpu_ms))

    def collect(self) -> tuple[list[float], list[float]]:
        """(wall ms, process CPU ms) of every step since the last call."""
        if self.cuda and self.pending:
            self.pending[-1][1].synchronize()
            wall = [a.elapsed_time(b) for a, b, _ in self.pending]
        else:
            wall = [1e3 * (b - a) for a, b, _ in self.pending]
        cpu = [c for _, _, c in self.pending]
        self.pending = []
        return wall, cpu


class GradientReducer:
    """Data parallel: each gradient's all-reduce (a sum) starts as soon as autograd has accumulated it — a
    post-accumulate-grad hook launches it asynchronously — so the communication overlaps the rest of the backward;
    :meth:`wait` ends them all before clipping and the optimizer step. Every process runs the same graph (a process
    without rows back-propagates a zero-weighted loss, see :func:`fit`), so the hooks fire, and the collectives
    are issued, in the same order everywhere. A parameter that got no gradient gets zeros (in every process)."""

    def __init__(self, params: list[torch.Tensor], dist: Dist):
        self.params, self.works, self.handles = params, [], []
        if dist.world > 1:
            import torch.distributed as torch_dist

            def launch(p: torch.Tensor) -> None:
                self.works.append(torch_dist.all_reduce(p.grad, async_op=True))

            self.handles = [p.register_post_accumulate_grad_hook(launch) for p in params if p.requires_grad]

    def wait(self) -> None:
        for work in self.works:
            work.wait()
        self.works = []
        if self.handles:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class CompiledLoss:
    """``flow.training_loss``, compiled by ``torch.compile`` (``mode``: ``default``: Inductor fuses the element-wise
    work of forward and backward; ``reduce-overhead``: also captures the step in a CUDA graph on a GPU, the same as
    ``default`` on the CPU). The loop calls it on full batches only, so its shapes never change (a last partial batch
    runs eagerly: :attr:`eager`). Compilation happens at the first call; if it fails (no C++ compiler for the CPU
    backend, no Triton for the GPU one, an operation the compiler does not support), one line on stderr says why
    and training goes on uncompiled."""

    def __init__(self, flow: torch.nn.Module, mode: str):
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
        self.eager: Callable[[torch.Tensor], torch.Tensor] = flow.training_loss
        self.mode = mode
        self.compiled = None if mode == "none" else torch.compile(
            flow.training_loss, mode=None if mode == "default" else mode, dynamic=False
        )  # fmt: skip
        self.ready = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.eager(x)
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the graph's previous outputs may be overwritten
        if self.ready:
            return self.compiled(x)
        try:
            loss = self.compiled(x)
        except Exception as err:  # the compiler's failure (an error of the model itself recurs just below)
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            print(f"warning: trainer.compile={self.mode} failed ({type(err).__name__}: {reason}); training "
                  "without compilation", file=sys.stderr, flush=True)  # fmt: skip
            self.compiled = None
            return self.eager(x)
        self.ready = True
        return loss


def fit(
    flow: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train: torch.Tensor,
    val: torch.Tensor,
    *,
    max_epochs: int,
    batch_size: int,
    patience: int,
    min_delta: float = 0.0,
    eval_every: int,
    eval_batch_size: int,
    log_every: int,
    tracker: Tracker,
    checkpoint_dir: Path,
    generator: torch.Generator,
    state: FitState | None = None,
    progress: bool = True,
    checkpoint_every: int = 0,
    grad_clip: float = 0.0,
    dist: Dist | None = None,
    schedule: LRSchedule | None = None,
    max_seconds: float = 0.0,
    budget: str = "wall",
    checkpoint_extra: dict[str, Any] | None = None,
    compile: str = "none",
    matmul_precision: str = "highest",
) -> FitState:
    """Train until ``max_epochs``, until the validation log-likelihood has not improved by more than ``min_delta``
    nats for more than ``patience`` consecutive evaluations, or until ``max_seconds`` > 0 of training time
    (``budget``: ``wall`` clock or process ``cpu`` time, evaluation excluded) are spent.

    Validates the untrained model first (a fresh run), then every ``eval_every`` epochs and when the budget ends.
    ``schedule`` steps after every optimizer step and sees every validation. Writes ``checkpoint_dir/best.pt``
    (best validation) and ``last.pt`` (after every evaluation, every ``checkpoint_every`` steps when > 0, and on
    SIGTERM/SIGUSR1/SIGINT or submitit's before-timeout signal, after which it hands the signal to the handler it
    displaced or raises :class:`Preempted`) atomically, ``checkpoint_extra`` included; only the main process
    writes, and never non-finite weights. A non-finite training loss or gradient raises :class:`DivergenceError`
    naming the step it happened at (see :class:`DivergenceGuard`); ``grad_clip`` > 0 clips the global gradient
    norm. ``compile`` (:data:`COMPILE_MODES`) compiles the training loss (:class:`CompiledLoss`);
    ``matmul_precision`` (``highest`` or ``high``: TF32 on GPUs that have it) applies to training only, evaluation
    always runs full precision. Returns the final state (``stopped_by`` says why it ended); pass ``state`` (with
    ``generator`` restored) to continue a resumed run. In data-parallel runs each process prints how many training
    rows it back-propagated.

    The loop reads the device once per read point: every ``log_every`` steps, at the end of an epoch, at a
    checkpoint, and (one process) when a signal arrived or the budget ran out. Data parallel, the processes agree on
    stopping (a signal, the budget, divergence) at the read points, inside the one collective that also sums the
    logged losses: a signal or the budget takes effect within ``log_every`` steps."""
    from tqdm.auto import tqdm

    state = state or FitState()
    dist = dist or Dist()
    device = train.device
    n = train.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    best_path, last_path = checkpoint_dir / "best.pt", checkpoint_dir / "last.pt"
    params = [p for p in flow.parameters() if p.requires_grad]
    show = progress and dist.main
    loss_of_batch = CompiledLoss(flow, compile)
    full_share = len(range(dist.rank, batch_size, dist.world))  # this process's rows of a full batch
    precision_before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(matmul_precision)
    guard = DivergenceGuard(optimizer, params, grad_clip, device, start=state.step)
    timer = StepTimer(device)
    reducer = GradientReducer(params, dist)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # logged losses since the last train record
    loss_count = 0

    def save_last() -> None:
        if dist.main:
            save_checkpoint(last_path, flow, optimizer, state, generator, checkpoint_extra, schedule)

    def spent() -> float:
        return state.train_cpu_seconds if budget == "cpu" else state.train_seconds

    def validate(epoch: int) -> None:
        """Exact validation log-likelihood: best checkpoint, early stopping, schedule, record, last.pt."""
        flow.eval()
        t0 = time.perf_counter()
        val_ll, val_2se = mean_and_2se(log_likelihoods(flow, val, eval_batch_size, dist))
        if not math.isfinite(val_ll):
            raise DivergenceError(
                f"the validation log-likelihood is non-finite after epoch {epoch} (step {state.step}); "
                f"the best checkpoint is kept at {best_path}; lower optim.lr or set trainer.grad_clip"
            )
        improved = val_ll > state.best_val_ll + min_delta
        if improved:
            state.best_val_ll, state.best_epoch, state.bad_evals = val_ll, epoch, 0
            if dist.main:
                save_checkpoint(best_path, flow, None, state)
        elif state.step > 0:
            state.bad_evals += 1
            state.stopped_early = state.bad_evals > patience
        if schedule is not None and state.step > 0:
            schedule.evaluated(val_ll)
        save_last()
        if dist.main:
            tracker.log({"split": "val", "step": state.step, "epoch": epoch, "ll": val_ll, "ll_2se": val_2se,
                         "best_ll": state.best_val_ll, "lr": optimizer.param_groups[0]["lr"],
                         "train_seconds": state.train_seconds, "train_cpu_seconds": state.train_cpu_seconds,
                         "eval_seconds": time.perf_counter() - t0})  # fmt: skip
        if show:
            median = f", median step {statistics.median(state.step_ms):.2f} ms" if state.step_ms else ""
            tqdm.write(f"epoch {epoch}: val log-likelihood {val_ll:.4f} ± {val_2se:.4f} nats"
                       f"{' (best)' if improved else ''}{median}")  # fmt: skip
        flow.train()

    def backward(rows: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """Forward and backward of this process's share of a global batch: (n_r/N)·L_r, the gradient reductions
        launched as the gradients appear. Returns the weighted loss (a device scalar)."""
        if local.numel() == 0:  # a last batch smaller than the number of processes: the same graph, weight 0
            loss = flow.training_loss(train[rows[:1]]) * 0.0
        else:
            batch = train[local]
            loss = loss_of_batch(batch) if local.numel() == full_share else loss_of_batch.eager(batch)
            if dist.world > 1:
                loss = loss * (local.numel() / rows.numel())
        loss.backward()
        return loss.detach()

    def read(log: bool, epoch: int, stopping: bool, late: bool) -> tuple[bool, bool]:
        """A read point: the one host read (data parallel: one all-gather that also agrees on stopping), step
        times, divergence, the train record. Returns (stop on a signal, out of time) as agreed."""
        nonlocal loss_sum, loss_count
        wall, cpu = timer.collect()
        state.step_ms += wall
        state.step_cpu_ms += cpu
        if len(state.step_ms) > 2 * STEP_TIMES_KEPT:
            del state.step_ms[:-STEP_TIMES_KEPT], state.step_cpu_ms[:-STEP_TIMES_KEPT]
        flags = loss_sum.new_tensor([float(stop.signum if stopping else 0), float(late)])
        values = _agree(torch.cat([loss_sum[None], *(t[None] for t in guard.tensors(state.step)), flags]), dist)
        total, bad_step, bad_what, signum, late_flag = values
        bad = guard.described(bad_step, bad_what)
        if bad is not None:
            raise DivergenceError(_diverged(bad[1], bad[0], epoch, last_path))
        if signum and stop.received is None:  # another process's signal
            stop.received = int(signum)
        if log and loss_count:
            mean_loss = total / loss_count
            window_ms = statistics.median(state.step_ms[-loss_count:])  # the logged steps' median
            bar.set_postfix(loss=f"{mean_loss:.4f}", step_ms=f"{window_ms:.2f}")
            if dist.main:
                tracker.log({"split": "train", "step": state.step, "epoch": epoch, "loss": mean_loss,
                             "step_time_ms": window_ms, "lr": optimizer.param_groups[0]["lr"],
                             "train_seconds": state.train_seconds,
                             "train_cpu_seconds": state.train_cpu_seconds})  # fmt: skip
            loss_sum, loss_count = torch.zeros_like(loss_sum), 0
        return bool(signum), bool(late_flag)

    rows_here = 0  # training rows this process back-propagated
    out_of_time = bool(max_seconds) and spent() >= max_seconds
    bar: Any = None
    try:
        with _StopSignals() as stop:
            if state.step == 0 and state.best_val_ll == -math.inf:
                validate(0)  # the start: with a data-dependent init, the fitted Gaussian
            while state.epoch < max_epochs and not state.stopped_early and not out_of_time:
                epoch = state.epoch + 1
                order = _epoch_order(state, generator, n, device)
                flow.train()
                bar = tqdm(total=steps_per_epoch, initial=state.epoch_step, desc=f"epoch {epoch}/{max_epochs}",
                           disable=None if show else True, leave=False, mininterval=0.5,
                           dynamic_ncols=True)  # fmt: skip
                last_time, last_cpu = time.perf_counter(), time.process_time()
                for i in range(state.epoch_step, steps_per_epoch):
                    rows = order[i * batch_size : (i + 1) * batch_size]
                    local = rows[dist.rank :: dist.world]
                    timer.start()
                    optimizer.zero_grad(set_to_none=True)
                    loss = backward(rows, local)  # forward, backward; the reduction overlaps it
                    reducer.wait()
                    guard.check(loss)  # on the device: non-finite?, clip, skip from then on
                    guard.optimizer_step()
                    if schedule is not None:
                        schedule.step()
                    timer.stop()
                    loss_sum += loss
                    loss_count += 1
                    rows_here += local.numel()
                    state.step, state.epoch_step = state.step + 1, i + 1
                    now, cpu_now = time.perf_counter(), time.process_time()
                    state.train_seconds += now - last_time
                    state.train_cpu_seconds += cpu_now - last_cpu
                    last_time, last_cpu = now, cpu_now
                    bar.update(1)
                    # -- read points: log, checkpoint, stop -------------------------------------------------
                    log = state.step % log_every == 0 or i == steps_per_epoch - 1
                    checkpoint = bool(checkpoint_every) and state.step % checkpoint_every == 0
                    late = bool(max_seconds) and spent() >= max_seconds
                    urgent = dist.world == 1 and (stop.received is not None or late)  # one process: act now
                    if not (log or checkpoint or urgent):
                        continue
                    stopping, out_of_time = read(log, epoch, stop.received is not None, late)
                    stopping = stopping or (dist.world == 1 and stop.received is not None)  # one during the read
                    if stopping or checkpoint:
                        if not all(bool(torch.isfinite(p).all()) for p in params):  # e.g. an overflowing update
                            raise DivergenceError(_diverged("parameters", state.step, epoch, last_path))
                        save_last()
                        if stopping:
                            bar.close()
                            stop.stop(state.step, last_path)
                    if out_of_time:
                        break
                bar.close()
                if state.epoch_step == steps_per_epoch:
                    state.epoch, state.epoch_step = epoch, 0
                    if epoch % eval_every == 0 or epoch == max_epochs or out_of_time:
                        validate(epoch)
                elif out_of_time:  # mid-epoch: validate here; last.pt continues this epoch exactly
                    validate(epoch)
                if stop.agree(dist, device):  # a signal that arrived during the evaluation
                    save_last()
                    stop.stop(state.step, last_path)
    finally:
        if bar is not None:
            bar.close()
        reducer.close()
        guard.close()
        torch.set_float32_matmul_precision(precision_before)
    state.stopped_by = "budget" if out_of_time else "early_stopping" if state.stopped_early else "max_epochs"
    if dist.world > 1:
        print(f"process {dist.rank} of {dist.world}: back-propagated {rows_here} training rows", flush=True)
    return state


def _epoch_order(state: FitState, generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    """The epoch's permutation of the training rows: the generator's state is kept at the start of an epoch, so
    a run resumed mid-epoch draws the same permutation again."""
    if state.epoch_step == 0:
        state.epoch_rng = generator.get_state()
    else:
        generator.set_state(state.epoch_rng)
    return torch.randperm(n, generator=generator).to(device)


def _agree(values: torch.Tensor, dist: Dist) -> list[float]:
    """The read point's values — [logged loss sum, first bad step, what went bad, signal, out of time] — as
    Python numbers (the one host read). Data parallel: one all-gather, combined the same way in every process:
    losses summed, the earliest bad step over processes, any signal, any process out of time."""
    if dist.world == 1:
        return values.tolist()
    import torch.distributed as torch_dist

    pieces = [torch.empty_like(values) for _ in range(dist.world)]
    torch_dist.all_gather(pieces, values)
    rows = torch.stack(pieces).tolist()
    bad = [r for r in rows if r[1] > 0]
    first = min(bad, key=lambda r: r[1]) if bad else [0.0, 0.0, 0.0]
    return [sum(r[0] for r in rows), first[1], first[2], max(r[3] for r in rows), max(r[4] for r in rows)]


def _all_reduce(t: torch.Tensor, op: str = "sum") -> None:
    import torch.distributed as torch_dist

    ops = {"sum": torch_dist.ReduceOp.SUM, "max": torch_dist.ReduceOp.MAX}
    torch_dist.all_reduce(t, op=ops[op])


def _diverged(what: str, step: int, epoch: int, last_path: Path) -> str:
    kept = last_path if last_path.exists() else "none written yet"
    return (f"the {what} became non-finite at step {step} (epoch {epoch}); the last good checkpoint is kept "
            f"({kept}); lower optim.lr or set trainer.grad_clip")  # fmt: skip
