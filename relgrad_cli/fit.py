"""The fit loop: an ordinary torch training loop, readable top to bottom.

The gradient mode lives inside the layers' backward (see :mod:`relgrad_cli.relative`), so this loop does not know
whether it trains with relative or Euclidean gradients: it calls ``training_loss(...).backward()`` and
``optimizer.step()``. Validation always evaluates the exact log-likelihood (log-det terms included).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .flow import InvertibleMLP, training_loss
from .metrics import mean_and_2se
from .tracking import Tracker, atomic_temp


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
    train_seconds: float = 0.0
    step_ms: list[float] = field(default_factory=list)
    stopped_early: bool = False


def save_checkpoint(
    path: Path,
    flow: InvertibleMLP,
    optimizer: torch.optim.Optimizer | None,
    state: FitState,
    generator: torch.Generator | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename). Loadable with
    ``torch.load(path, weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "model": flow.state_dict(),
        "state": {k: v for k, v in vars(state).items()},
        "extra": extra or {},
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if generator is not None:
        payload["generator"] = generator.get_state()
    tmp = atomic_temp(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


@torch.no_grad()
def log_likelihoods(flow: InvertibleMLP, x: torch.Tensor, batch_size: int = 10000) -> np.ndarray:
    """Exact per-sample log-likelihood (nats) of every row of x, in float64 numpy."""
    out = [flow.log_prob(chunk).double().cpu() for chunk in x.split(batch_size)]
    return torch.cat(out).numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(
    flow: InvertibleMLP,
    optimizer: torch.optim.Optimizer,
    train: torch.Tensor,
    val: torch.Tensor,
    *,
    gradient: str,
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
) -> FitState:
    """Train until ``max_epochs``, or until the validation log-likelihood has not improved by more than
    ``min_delta`` nats for more than ``patience`` consecutive evaluations.

    Writes ``checkpoint_dir/best.pt`` (best validation) and ``last.pt`` (after every evaluation) atomically.
    Returns the final state; pass ``state`` to continue a resumed run."""
    from tqdm.auto import tqdm

    state = state or FitState()
    device = train.device
    n = train.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    best_path, last_path = checkpoint_dir / "best.pt", checkpoint_dir / "last.pt"

    while state.epoch < max_epochs and not state.stopped_early:
        epoch = state.epoch + 1
        flow.train()
        order = torch.randperm(n, generator=generator).to(device)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{max_epochs}",
            disable=None if progress else True,
            leave=False,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        loss_count = 0
        epoch_start = time.perf_counter()
        for i in range(steps_per_epoch):
            batch = train[order[i * batch_size : (i + 1) * batch_size]]
            _sync(device)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = training_loss(flow, batch, gradient=gradient)
            loss.backward()
            optimizer.step()
            _sync(device)
            step_ms = 1e3 * (time.perf_counter() - t0)
            state.step += 1
            state.step_ms.append(step_ms)
            loss_sum += loss.detach()
            loss_count += 1
            bar.update(1)
            if state.step % log_every == 0 or i == steps_per_epoch - 1:
                mean_loss = float(loss_sum) / loss_count
                if not math.isfinite(mean_loss):
                    raise DivergenceError(
                        f"the training loss became non-finite by step {state.step} (epoch {epoch}); "
                        f"the last good checkpoint is {last_path if last_path.exists() else 'not written yet'}; "
                        "lower optim.lr or check the data"
                    )
                bar.set_postfix(loss=f"{mean_loss:.4f}", step_ms=f"{step_ms:.2f}")
                tracker.log(
                    {
                        "split": "train",
                        "step": state.step,
                        "epoch": epoch,
                        "loss": mean_loss,
                        "step_time_ms": step_ms,
                        "train_seconds": state.train_seconds + time.perf_counter() - epoch_start,
                    }
                )
                loss_sum.zero_()
                loss_count = 0
        bar.close()
        state.train_seconds += time.perf_counter() - epoch_start
        state.epoch = epoch

        if epoch % eval_every == 0 or epoch == max_epochs:
            flow.eval()
            t0 = time.perf_counter()
            val_ll, val_2se = mean_and_2se(log_likelihoods(flow, val, eval_batch_size))
            if not math.isfinite(val_ll):
                raise DivergenceError(
                    f"the validation log-likelihood is non-finite after epoch {epoch} (step {state.step}); "
                    f"the best checkpoint is kept at {best_path}; lower optim.lr"
                )
            improved = val_ll > state.best_val_ll + min_delta
            if improved:
                state.best_val_ll, state.best_epoch, state.bad_evals = val_ll, epoch, 0
                save_checkpoint(best_path, flow, None, state)
            else:
                state.bad_evals += 1
                state.stopped_early = state.bad_evals > patience
            save_checkpoint(last_path, flow, optimizer, state, generator)
            tracker.log(
                {
                    "split": "val",
                    "step": state.step,
                    "epoch": epoch,
                    "ll": val_ll,
                    "ll_2se": val_2se,
                    "best_ll": state.best_val_ll,
                    "train_seconds": state.train_seconds,
                    "eval_seconds": time.perf_counter() - t0,
                }
            )
            if progress:
                tqdm.write(
                    f"epoch {epoch}: val log-likelihood {val_ll:.4f} ± {val_2se:.4f} nats"
                    f"{' (best)' if improved else ''}, median step {statistics.median(state.step_ms):.2f} ms"
                )
    return state
