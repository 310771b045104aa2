"""Runtime choices shared by the runner and the benchmark: the device, the optimizer, process memory settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterable
from typing import Any

import torch


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; otherwise the named device (cpu, cuda, cuda:N).
    Raises ValueError for a CUDA device on a machine without one."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was asked for but no CUDA device is available; use cpu or auto")
    return device


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    step: str,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam or SGD, with torch's fused implementation where this torch build offers it for these parameters.

    The fused step does Adam's element-wise update in one pass over each tensor instead of about ten; at large D
    that is most of the optimizer's time (measured at D=4096 on 2 CPU cores: 110 ms → 19 ms per step).
    """
    params = list(params)
    if step == "adam":
        kwargs: dict[str, Any] = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        cls = torch.optim.Adam
    elif step == "sgd":
        kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
        cls = torch.optim.SGD
    else:
        raise ValueError(f"unknown step rule {step!r}; choose adam or sgd")
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype/torch version
        return cls(params, **kwargs)


#: below this many multiply-adds per dense layer and step (B·D²), one thread: measured on a 2-core machine (README,
#: "Threads"), two threads gained nothing at B=100, D=128 when quiet and lost 1.3–3× at every D beside a busy process
SMALL_STEP_MACS = 8_000_000


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which cgroups and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(spec: str | int, macs_per_layer: float, jobs: int = 1) -> int:
    """The intra-op thread count for ``trainer.num_threads``: a positive count as given, 0 for torch's default,
    ``auto`` for one thread when a dense layer's step is small (B·D² below :data:`SMALL_STEP_MACS`: more threads
    only add synchronisation, and spin against other processes on a busy machine), else the available cores
    shared among ``jobs`` jobs running side by side (a multi-job launcher)."""
    spec = str(spec)
    if spec != "auto":
        return int(spec) or torch.get_num_threads()
    if macs_per_layer < SMALL_STEP_MACS:
        return 1
    return max(1, available_cores() // max(1, jobs))


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory for reuse (Linux/glibc only).

    By default glibc maps every block above 32 MiB freshly from the kernel and unmaps it when freed, so a training
    step that allocates a D×D gradient page-faults through all of it again each time (at D=4096, float32: 64 MiB,
    16 384 faults). With mmap disabled and trimming raised, the freed block is reused. The price: memory freed by
    the process is not returned to the system until it exits. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


class LRSchedule:
    """The learning-rate policy of a run, built from torch.optim.lr_scheduler:

    - ``warmup_steps`` > 0: the rate rises linearly from lr/(warmup_steps + 1) to lr over the first steps (LinearLR);
    - ``cosine``: then falls along a half cosine to ``min_lr`` at ``total_steps`` (CosineAnnealingLR; the fit loop
      passes max_epochs × steps per epoch);
    - ``plateau``: is multiplied by ``plateau_factor`` whenever the validation log-likelihood has not improved for
      more than ``plateau_patience`` evaluations, never below ``min_lr`` (ReduceLROnPlateau, mode max);
    - ``none``: stays at lr (after the warm-up).

    Call :meth:`step` after every optimizer step and :meth:`evaluated` after every validation; ``state_dict`` holds
    every scheduler's state, so a resumed run continues the same schedule exactly.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: str = "none",
        *,
        warmup_steps: int = 0,
        total_steps: int = 1,
        plateau_factor: float = 0.5,
        plateau_patience: int = 2,
        min_lr: float = 0.0,
    ):
        from torch.optim import lr_scheduler

        if schedule not in ("none", "cosine", "plateau"):
            raise ValueError(f"unknown schedule {schedule!r}; choose none, cosine or plateau")
        self.schedule = schedule
        per_step: list[Any] = []
        if warmup_steps > 0:
            per_step.append(lr_scheduler.LinearLR(optimizer, 1.0 / (warmup_steps + 1), 1.0, total_iters=warmup_steps))
        if schedule == "cosine":
            per_step.append(lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps - warmup_steps, 1), min_lr))
        if len(per_step) == 2:
            self.per_step = lr_scheduler.SequentialLR(optimizer, per_step, milestones=[warmup_steps])
        else:
            self.per_step = per_step[0] if per_step else None
        self.plateau = (
            lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=plateau_factor, patience=plateau_patience, threshold=0.0, min_lr=min_lr
            )  # fmt: skip
            if schedule == "plateau"
            else None
        )

    def step(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def evaluated(self, val_ll: float) -> None:
        if self.plateau is not None:
            self.plateau.step(val_ll)

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("per_step", "plateau"):
            sched, saved = getattr(self, name), state.get(name)
            if (sched is None) != (saved is None):
                raise ValueError(
                    f"the checkpoint's learning-rate schedule has {'no' if saved is None else 'a'} {name} part and "
                    f"this run's has {'none' if sched is None else 'one'}"
                )
            if sched is not None:
                sched.load_state_dict(saved)

    def rescale(self, optimizer: torch.optim.Optimizer, ratio: float) -> None:
        """Multiply the base rate by ``ratio`` mid-schedule (a resumed run given another optim.lr): the current
        rate and every scheduler's base rates follow, so the schedule goes on at the new scale."""
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        for sched in (self.per_step, *getattr(self.per_step, "_schedulers", ())):
            if sched is not None:
                sched.base_lrs = [lr * ratio for lr in sched.base_lrs]


# ------------------------------------------------------------------------------------------ memory before allocating

#: the gradient modes whose step builds a D×D temporary beside the weights (an inverse or a log-det's LU factors)
CUBIC_MODES = ("euclidean", "autograd_logdet")


def estimate_training_bytes(
    dim: int, depth: int, dtype_bytes: int, batch_size: int, extra_matrices_per_layer: float = 0.0
) -> int:
    """Approximate bytes a dense flow of ``depth`` D×D layers needs to train with Adam: weights and biases, their
    gradients and Adam's two moments (4 copies of the parameters), ``extra_matrices_per_layer`` D×D temporaries per
    layer (1 for the O(D³) gradient modes: an inverse or LU factors; 4 for self_normalizing's learned inverses
    with their gradients and Adam state), and the activations of one minibatch (a few B×D arrays per
    layer). An estimate for refusing hopeless sizes early, not an allocator's exact count: element-wise splines,
    allocator slack and the data set itself are not counted."""
    params = depth * (dim * dim + dim)
    matrices = 4 * params + extra_matrices_per_layer * depth * dim * dim
    activations = 4 * (depth + 1) * batch_size * dim
    return int((matrices + activations) * dtype_bytes)


def available_memory_bytes(device: Any = "cpu") -> int | None:
    """Bytes this process could still allocate on ``device``: CUDA's free memory (torch.cuda.mem_get_info), or on
    the CPU the kernel's MemAvailable (/proc/meminfo; else free pages × page size). None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


class InsufficientMemory(ValueError):
    """A model that cannot fit in the memory available for training (the message is one line)."""


def check_training_memory(
    dim: int,
    depth: int,
    dtype: str,
    batch_size: int,
    device: Any = "cpu",
    *,
    extra_matrices_per_layer: float = 0.0,
    advice: str = "lower data.dim or model.depth, or use a machine with more memory",
) -> int:
    """Raise :class:`InsufficientMemory` when :func:`estimate_training_bytes` exceeds the memory available on
    ``device`` (unknown availability passes); returns the estimate."""
    dtype_bytes = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}[str(dtype)]
    need = estimate_training_bytes(dim, depth, dtype_bytes, batch_size, extra_matrices_per_layer)
    have = available_memory_bytes(device)
    if have is not None and need > have:
        raise InsufficientMemory(
            f"D={dim}, depth {depth}, {dtype} needs about {_gb(need)} GB for training (weights, gradients, Adam "
            f"state), and this machine has {_gb(have)} GB available; {advice}"
        )
    return need


def _gb(n: float) -> str:
    g = n / 1e9
    return f"{g:.0f}" if g >= 10 else f"{g:.1f}" if g >= 1 else f"{g:.2g}"
