"""``relgrad-train``: the Hydra experiment runner.

compose config → load data → build the flow → fit → evaluate the best checkpoint on test → write the run folder.

Every run folder holds ``metrics.jsonl``, ``summary.json``, ``checkpoints/{best,last}.pt``, Hydra's ``.hydra/``,
pictures (``samples.png`` for images, ``density.png`` for 2-D data) and, with the W&B logger, ``wandb/``.
torch and wandb are imported inside the task so ``--help`` and tab completion stay fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from .config import ConfigError, check_config, register_configs


def conf_path() -> str:
    """The installed package's ``relgrad_cli/conf`` when present (wheel), else the checkout's ``conf/``."""
    from importlib.resources import files

    if files("relgrad_cli").joinpath("conf", "config.yaml").is_file():
        return "pkg://relgrad_cli.conf"
    return str(Path(__file__).resolve().parent.parent / "conf")


def _user_error_types() -> tuple[type[BaseException], ...]:
    from .data.base import DatasetError
    from .files import DiskFullError

    return (ConfigError, DatasetError, DiskFullError)


class RunFolderInUse(ConfigError):
    """Another process holds the run folder's lock (it is training there)."""


def run(cfg: Any, run_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the summary (also written to ``summary.json``).

    The run folder is locked for the whole run (``<run_dir>/.lock``, by process 0 of a data-parallel job): a second
    process on the same folder stops at once with :class:`RunFolderInUse` and writes nothing."""
    check_config(cfg)
    group = None
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        if hc.mode == RunMode.MULTIRUN:
            group = Path(hc.sweep.dir).name
    run_dir = Path(run_dir)
    lock = _lock_run_folder(run_dir)
    try:
        return _run(cfg, run_dir, group)
    finally:
        if lock is not None:
            lock.release()


def _is_main_process() -> bool:
    """Process 0 of a data-parallel job (torchrun's RANK), or a job without one: the process that writes."""
    return os.environ.get("RANK", "0") == "0"


def _lock_run_folder(run_dir: Path) -> Any:
    """Take ``run_dir``'s lock (process 0 only; None in the others); :class:`RunFolderInUse` if it is held."""
    from .files import FolderInUse, FolderLock

    if not _is_main_process():
        return None
    try:
        return FolderLock(run_dir).acquire()
    except FolderInUse as err:
        raise RunFolderInUse(folder_in_use_message(err)) from None


def folder_in_use_message(err: Any) -> str:
    """The one line for a run folder whose lock another process holds (a :class:`relgrad_cli.files.FolderInUse`)."""
    pid = "unknown" if err.pid is None else err.pid
    return (f"the run folder {err.folder} is in use by another relgrad-train process (PID {pid}); wait for it to "
            "end, or give this run its own folder (hydra.run.dir=...)")  # fmt: skip


def _remove_leftovers(run_dir: Path) -> None:
    """Files a run stopped short may leave (the lock is held, so nobody writes there): the temporary files of
    interrupted checkpoint and record writes, and a sweep job's ``error.txt`` from an earlier try."""
    from .files import remove_orphan_temps

    ckpt_dir = run_dir / "checkpoints"
    for path in (ckpt_dir / "last.pt", ckpt_dir / "best.pt", run_dir / "summary.json", run_dir / "metrics.jsonl"):
        remove_orphan_temps(path)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)


ERROR_FILE = "error.txt"  # a failed sweep job's one-line reason, in its folder
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def _keep_configurations(run_dir: Path, continued_at: int | None) -> None:
    """Hydra rewrites ``.hydra/`` whenever a command starts in the folder. A new run copies it to
    ``.hydra/original/``; a continuation (``continued_at``: the checkpoint's step) copies the continuing command's
    files to ``.hydra/continued/step-<N>-*.yaml``, so the first run's configuration and every continuation's
    overrides are kept side by side."""
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        return  # not started through Hydra's command line (the Python API)
    if continued_at is None:
        target, prefix = hydra_dir / "original", ""
    else:
        target, prefix = hydra_dir / "continued", f"step-{continued_at}-"
    target.mkdir(exist_ok=True)
    for name in HYDRA_FILES:
        if (hydra_dir / name).is_file():
            shutil.copyfile(hydra_dir / name, target / f"{prefix}{name}")


def _run(cfg: Any, run_dir: Path, group: str | None) -> dict[str, Any]:
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from .data import DatasetError, load_dataset
    from .data.duplicates import DUPLICATE_KEYS, dataset_duplicates, distinct_test_mask, duplicates_warning
    from .fit import CheckpointError, FitState, fit, load_checkpoint, log_likelihoods, save_checkpoint, state_from_entry
    from .gaussian import fit_gaussian
    from .metrics import amari_distance, mean_and_2se_distinct, mean_corr_coef
    from .models import build_model
    from .optim import LRSchedule, choose_threads, make_optimizer, resolve_device, reuse_freed_memory
    from .priors import prior_names
    from .tracking import NullTracker, Tracker

    m = cfg.model
    if m.prior != "auto" and m.prior not in prior_names():
        raise ConfigError(f"model.prior={m.prior!r} is not allowed: choose auto, {', '.join(prior_names())}")
    t, o, m = cfg.trainer, cfg.optim, cfg.model
    gradient, step_rule = str(o.gradient.value), str(o.step.value)
    ckpt_dir = run_dir / "checkpoints"
    resume_from = _resume_source(t.resume, run_dir)
    ck: dict[str, Any] = {}
    if resume_from is not None:  # read (and checked) before any work
        try:
            ck = load_checkpoint(resume_from)
        except CheckpointError as err:
            raise ConfigError(f"trainer.resume={t.resume}: {err}") from None
    if _is_main_process():
        _remove_leftovers(run_dir)

    # -- data -----------------------------------------------------------------------------------------------
    options = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in ("name", "root")}
    if isinstance(options.get("dim"), int):  # synthetic data: the size is known before generating (D×D) anything
        source = options.get("source") if cfg.data.name == "ica" else None
        batch = min(t.batch_size, options.get("n_train") or t.batch_size)
        try:
            early_device = resolve_device(t.device)
        except (ValueError, RuntimeError):
            early_device = None  # reported below, where the device is chosen
        if early_device is not None:
            arch = model_options(m, source, gradient, o.recon_weight)
            _check_memory(m.name, arch, options["dim"], t.dtype.value, batch, early_device)
    ds = load_dataset(cfg.data.name, cfg.data.root, **options)
    for split, arr in ds.splits().items():
        if arr.ndim != 2 or arr.shape[1] != ds.dim or arr.shape[0] == 0:
            raise DatasetError(f"{ds.name}: the {split} split has shape {arr.shape}, expected (N>0, {ds.dim})")
        if arr.dtype.kind not in "iuf":
            raise DatasetError(f"{ds.name}: the {split} split holds {arr.dtype} values; expected real numbers "
                               "(integers or floats); check the files")  # fmt: skip
        if not np.isfinite(arr).all():
            raise DatasetError(f"{ds.name}: the {split} split contains NaN or infinite values; check the files")
    duplicates = dataset_duplicates(ds)
    warning = duplicates_warning(ds.name, duplicates)
    if warning is not None:
        print(f"relgrad-train: warning: {warning}", file=sys.stderr)

    # -- device, dtype, seeds ---------------------------------------------------------------------------------
    torch.set_num_threads(choose_threads(t.num_threads, t.batch_size * ds.dim**2, _parallel_jobs()))
    if t.reuse_memory:
        reuse_freed_memory()
    try:
        device = resolve_device(t.device)
    except (ValueError, RuntimeError):
        raise ConfigError(
            f"trainer.device={t.device} but no such device is available; use trainer.device=cpu or auto"
        ) from None
    dist, device = _init_distributed(device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[t.dtype.value]
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train, val, test = (torch.as_tensor(a, dtype=dtype).to(device) for a in (ds.train, ds.val, ds.test))

    arch = model_options(m, ds.truth.source if ds.truth is not None else None, gradient, o.recon_weight)
    _check_memory(m.name, arch, ds.dim, t.dtype.value, min(t.batch_size, len(ds.train)), device)
    try:
        flow = build_model(m.name, ds.dim, **arch, dtype=dtype, device=device)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    if getattr(flow, "dense", None) != "full":
        gradient = "backprop"  # the gradient modes are for dense W; other models take ordinary gradients
    flow.check_inputs = False  # validated once above
    gaussian = fit_gaussian(ds.train)  # the baseline (closed form) and, with init=data, the start
    if arch.get("init", "data") == "data":
        if not arch.get("bias", True):
            raise ConfigError("model.init=data needs model.bias=true (the first layer centres the data)")
        flow.init_from_data(gaussian)
    optimizer = make_optimizer(flow.parameters(), step_rule, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                               momentum=o.momentum, weight_decay=o.weight_decay)  # fmt: skip
    steps_per_epoch = -(-len(ds.train) // t.batch_size)
    schedule = LRSchedule(optimizer, o.schedule.value, warmup_steps=o.warmup_steps,
                          total_steps=t.max_epochs * steps_per_epoch, plateau_factor=o.plateau_factor,
                          plateau_patience=o.plateau_patience, min_lr=o.min_lr)  # fmt: skip
    identity = run_identity(cfg, flow)  # what a continued run must share with its checkpoint

    # -- resume ----------------------------------------------------------------------------------------------
    state = FitState()
    continues_here = False  # continuing this folder's own run: keep its records and its W&B run
    if resume_from is not None:
        try:
            differing = _differing(ck.get("flow", {}), identity["flow"], "model")
            if "optimizer" in ck:  # a continued run: the data, gradient, dtype, ... too
                recorded = ck.get("extra", {}).get("identity", {})
                saved = {k: v for k, v in (recorded if isinstance(recorded, dict) else {}).items() if k != "flow"}
                differing += _differing(saved, identity, "")
            if differing:
                raise ConfigError(
                    f"trainer.resume={t.resume}: {resume_from} was trained with other settings "
                    f"({'; '.join(differing)}); resume with the original values, or start a new run from its "
                    "weights in a new folder"
                )
            flow.load_state_dict(ck["model"])
        except (RuntimeError, KeyError, TypeError) as err:
            raise ConfigError(
                f"trainer.resume={t.resume}: {resume_from} is not a checkpoint of this model ({_one_line(err)}); "
                "resume with the model settings it was trained with, or start a new run in a new folder"
            ) from None
        full = "optimizer" in ck and "generator" in ck
        if not full and _inside(resume_from, ckpt_dir):  # a new run here would overwrite the run it comes from
            raise ConfigError(
                f"trainer.resume={t.resume}: {resume_from.name} holds weights only, so a run from it is a new run, "
                f"and this folder holds the run it comes from; give the new run its own folder (hydra.run.dir=...)"
            )
        if full:
            try:
                optimizer.load_state_dict(ck["optimizer"])
                generator.set_state(ck["generator"])
                if "schedule" in ck:
                    schedule.load_state_dict(ck["schedule"])
            except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
                raise ConfigError(
                    f"trainer.resume={t.resume}: {resume_from} has optimizer or schedule state that does not fit "
                    f"this model's optimizer ({_one_line(err)}); the file is damaged or from another run; resume "
                    "from another checkpoint, or start a new run in a new folder"
                ) from None
            _apply_optimizer_settings(optimizer, schedule, o, ck.get("extra", {}).get("lr"))
            state = state_from_entry(ck["state"])
            state.stopped_early = state.bad_evals > t.patience  # a larger patience continues an early-stopped run
            continues_here = _inside(resume_from, ckpt_dir)
            best_src = resume_from.parent / "best.pt"
            if best_src.is_file() and best_src.resolve() != (ckpt_dir / "best.pt").resolve():
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(best_src, ckpt_dir / "best.pt")  # the best so far belongs to this run too
            print(f"resuming from {resume_from} at epoch {state.epoch}, step {state.step}")
        else:  # a weights-only checkpoint (best.pt): a new run that starts from these weights
            print(f"starting from the weights in {resume_from} (no optimizer state in it: a new run from there)")

    if dist.main:
        _keep_configurations(run_dir, state.step if continues_here else None)

    # -- fit -------------------------------------------------------------------------------------------------
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    wandb_mode = cfg.logger.mode.value if cfg.logger.name == "wandb" else "disabled"
    try:
        tracker = (
            NullTracker()
            if not dist.main
            else Tracker(
                run_dir,
                wandb_mode=wandb_mode,
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=group,
                name=f"{group}/{run_dir.name}" if group else run_dir.name,
                tags=list(cfg.logger.tags),
                config=resolved,
                resume_step=state.step if continues_here else None,
            )
        )
    except Exception as err:
        if not type(err).__module__.startswith("wandb."):
            raise
        raise ConfigError(
            f"logger.mode={wandb_mode}: W&B could not start a run ({type(err).__name__}: {err}); log in with "
            "`wandb login`, or use logger.mode=offline or logger=none"
        ) from None
    exit_code = 1
    try:
        started = time.perf_counter()
        state = fit(
            flow,
            optimizer,
            train,
            val,
            max_epochs=t.max_epochs,
            batch_size=t.batch_size,
            patience=t.patience,
            min_delta=t.min_delta,
            eval_every=t.eval_every,
            eval_batch_size=t.eval_batch_size,
            log_every=t.log_every,
            tracker=tracker,
            checkpoint_dir=ckpt_dir,
            generator=generator,
            state=state,
            progress=t.progress,
            checkpoint_every=t.checkpoint_every,
            grad_clip=t.grad_clip,
            dist=dist,
            schedule=schedule,
            max_seconds=t.max_seconds,
            budget=t.budget.value,
            checkpoint_extra={"identity": identity, "lr": o.lr},
            compile=t.compile,
            matmul_precision=t.matmul_precision.value,
        )
        fit_seconds = time.perf_counter() - started
        if not dist.main:  # only the main process evaluates and writes
            exit_code = 0
            return {"rank": dist.rank, "best_val_ll": state.best_val_ll}

        # -- evaluate the best checkpoint on test ----------------------------------------------------------
        best = ckpt_dir / "best.pt"
        if best.exists():
            flow.load_state_dict(load_checkpoint(best)["model"])
        else:  # resumed a finished run: keep the weights we have
            save_checkpoint(best, flow, None, state)
        flow.eval()
        test_lls = log_likelihoods(flow, test, t.eval_batch_size)
        distinct = distinct_test_mask(ds) if duplicates["test_repeated"] else np.ones(len(test_lls), dtype=bool)
        test_ll, test_2se = mean_and_2se_distinct(test_lls, distinct)  # a repeated row counts once
        gaussian_test_ll, gaussian_test_2se = mean_and_2se_distinct(gaussian.log_prob(ds.test), distinct)
        summary: dict[str, Any] = {
            "dataset": ds.name,
            "dim": ds.dim,
            "model": m.name,
            **arch,
            "gradient": gradient,
            "optim": o.name,
            "step_rule": step_rule,
            "lr": o.lr,
            "batch_size": t.batch_size,
            "seed": cfg.seed,
            "schedule": o.schedule.value,
            "epochs": state.epoch,
            "epochs_done": state.epoch + state.epoch_step / steps_per_epoch,  # a budget may stop mid-epoch
            "best_epoch": state.best_epoch,
            "stopped_early": state.stopped_early,
            "stopped_by": state.stopped_by,
            "steps": state.step,
            "train_seconds": state.train_seconds,
            "train_cpu_seconds": state.train_cpu_seconds,
            "budget": {"max_seconds": t.max_seconds, "clock": t.budget.value} if t.max_seconds else None,
            "fit_seconds": fit_seconds,
            "median_step_ms": statistics.median(state.step_ms) if state.step_ms else None,
            "median_step_cpu_ms": statistics.median(state.step_cpu_ms) if state.step_cpu_ms else None,
            "best_val_ll": state.best_val_ll,
            "test_ll": test_ll,
            "test_ll_2se": test_2se,
            "test_rows_used": int(distinct.sum()),  # distinct test rows: the mean and ± are over these
            "duplicates": {k: int(duplicates[k]) for k in DUPLICATE_KEYS},
            "gaussian_test_ll": gaussian_test_ll,
            "gaussian_val_ll": float(np.mean(gaussian.log_prob(ds.val))),
            "gaussian_test_ll_2se": gaussian_test_2se,
            "gaussian_shrinkage": gaussian.shrinkage,
            "params": sum(p.numel() for p in flow.parameters()),
            "n_train": int(train.shape[0]),
            "n_test": int(test.shape[0]),
            "device": str(device),
            "dtype": t.dtype.value,
            "num_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "world_size": dist.world,
            "loss_includes_logdet": gradient in ("euclidean", "autograd_logdet"),
            "data_info": ds.info,
            "run_dir": str(run_dir),
        }
        if ds.image_shape is not None:
            from .data.images import bits_per_dim

            summary["bits_per_dim"] = bits_per_dim(ds.test, test_lls, ds.logit_alpha, ds.levels)
        if ds.truth is not None:
            true_ll = float(np.mean(ds.truth.test_log_prob))
            summary["true_test_ll"] = true_ll
            summary["nll_gap_per_dim"] = (true_ll - test_ll) / ds.dim
            summary["mcc"] = summary["amari"] = None
            if hasattr(flow, "layers"):  # the dense flows' latents are the estimated sources
                with torch.no_grad():
                    z = flow(test).double().cpu().numpy()
                summary["mcc"] = mean_corr_coef(z, ds.truth.test_sources)
            if ds.truth.mixing is not None and getattr(flow, "depth", 0) == 1:
                w = flow.layers[0].weight.detach().double().cpu().numpy()
                summary["amari"] = amari_distance(w @ ds.truth.mixing)
        tracker.summary(summary)  # first: a failure while drawing pictures must not cost the summary
        _pictures(flow, ds, run_dir, t.samples, tracker)
        exit_code = 0
        return summary
    finally:
        tracker.finish(exit_code)


def _check_memory(name: str, arch: dict[str, Any], dim: int, dtype: str, batch_size: int, device: Any) -> None:
    """Refuse a dense flow that cannot fit in the available memory before building it (one line, instead of dying
    in the allocator); zuko's flows (no ``depth`` option) are not estimated."""
    from .optim import CUBIC_MODES, InsufficientMemory, check_training_memory

    if "depth" not in arch:
        return
    gradient = arch.get("gradient")
    # self_normalizing's learned inverses: one more D×D matrix per layer, with its gradient and Adam state
    extra = 1 if gradient in CUBIC_MODES else 4 if gradient == "self_normalizing" else 0
    try:
        check_training_memory(dim, int(arch["depth"]), dtype, batch_size, device, extra_matrices_per_layer=extra)
    except InsufficientMemory as err:
        raise ConfigError(f"model: {err}") from None


def model_options(m: Any, ica_source: str | None, gradient: str, recon_weight: float = 1.0) -> dict[str, Any]:
    """The constructor options of model ``m.name`` (see :func:`relgrad_cli.models.build_model`), with every
    ``auto`` resolved for the data.

    Dense flows: synthetic ICA keeps the paper's model (its identifiability experiments need it): depth 2, the
    source prior, an orthogonal start, the fixed smooth leaky-ReLU and no final map. Every other data set gets the
    measured recipe: depth 6, a start at the fitted Gaussian (``init=data``), rational-quadratic splines between the
    dense layers and after the last one, and a standard-normal prior (see the README's model-quality section).
    zuko's flows take their sizes and always start standardised."""
    from .peers import ZUKO_FLOWS

    if m.name in ZUKO_FLOWS:
        return {"transforms": m.transforms, "hidden_features": list(m.hidden_features), "bins": m.spline_bins}
    paper = {"depth": 2, "init": "orthogonal", "activation": "slrelu", "final_activation": "none"}
    recipe = {"depth": 6, "init": "data", "activation": "spline", "final_activation": "spline"}
    defaults = paper if ica_source is not None else recipe
    choices: dict[str, Any] = {key: (defaults[key] if m[key] == "auto" else m[key]) for key in defaults}
    choices["prior"] = str(m.prior) if m.prior != "auto" else (ica_source or "gaussian")
    return {"alpha": m.alpha, "bias": m.bias, **choices, "spline_bins": m.spline_bins,
            "spline_bound": m.spline_bound, "gradient": gradient, "recon_weight": recon_weight}  # fmt: skip


def run_identity(cfg: Any, flow: Any) -> dict[str, Any]:
    """What a continued run must share with the checkpoint it continues: the architecture (``flow.config()``), the
    data and their preprocessing (every ``data`` option but the folder), the gradient mode, the step rule, the
    dtype, the batch size and the kind of learning-rate schedule. Everything else may change on resume."""
    from omegaconf import OmegaConf

    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "root"}
    return {"flow": flow.config(), "data": data, "gradient": cfg.optim.gradient.value, "step": cfg.optim.step.value,
            "dtype": cfg.trainer.dtype.value, "batch_size": cfg.trainer.batch_size,
            "schedule": cfg.optim.schedule.value, "warmup_steps": cfg.optim.warmup_steps}  # fmt: skip


def _differing(saved: dict[str, Any], now: dict[str, Any], prefix: str) -> list[str]:
    """'key: saved → now' for every key recorded in ``saved`` whose value differs (nested dicts flattened)."""
    out = []
    for key, old in saved.items():
        name = f"{prefix}.{key}" if prefix else key
        new = now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _differing(old, new, name)
        elif key in now and old != new:
            out.append(f"{name}: {old!r} → {new!r}")
    return out


def _apply_optimizer_settings(optimizer: Any, schedule: Any, o: Any, saved_lr: float | None) -> None:
    """A continued run takes this command's optimizer settings: a new optim.lr rescales the schedule, and betas,
    eps, momentum and weight decay replace the saved ones in every parameter group."""
    if saved_lr is not None and saved_lr != o.lr:
        schedule.rescale(optimizer, o.lr / saved_lr)
    for group in optimizer.param_groups:
        group["weight_decay"] = o.weight_decay
        if "betas" in group:
            group["betas"], group["eps"] = tuple(o.betas), o.eps
        if "momentum" in group:
            group["momentum"] = o.momentum


RUN_FILES = ("metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt")


def _resume_source(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint that ``trainer.resume`` names (None: a new run), checked before any work is done.

    A new run, or one continued from another folder's checkpoint, refuses a run folder that already holds a run's
    files: it would overwrite that run's checkpoints and records. ``auto`` continues from ``checkpoints/last.pt``,
    starts a new run in a folder that holds nothing of a run (none of its files, or only an empty
    ``metrics.jsonl``: a run stopped before its first checkpoint), and refuses a folder that holds a run but no
    readable ``last.pt`` (deleted, a dangling link, a folder, empty) rather than start that run over."""
    ckpt_dir = run_dir / "checkpoints"
    if resume == "auto":
        last = ckpt_dir / "last.pt"
        why = _unreadable(last)
        if why is None:
            return last  # what it holds is checked when it is read
        if not _is_main_process():
            return None
        held = [name for name in RUN_FILES if _present(run_dir / name)]
        if "metrics.jsonl" in held and (run_dir / "metrics.jsonl").is_file():
            if (run_dir / "metrics.jsonl").stat().st_size == 0:  # opened, nothing recorded: no run yet
                held.remove("metrics.jsonl")
        if held:
            best = ckpt_dir / "best.pt"
            start = (f", from its best weights with trainer.resume={best}"
                     if _unreadable(best) is None else "")  # fmt: skip
            raise ConfigError(
                f"the run folder {run_dir} holds a run ({', '.join(held)}) but no readable checkpoints/last.pt to "
                f"continue from ({why}); trainer.resume=auto will not start it over: restore checkpoints/last.pt, "
                f"or start a new run in another folder (hydra.run.dir=...){start}"
            )
        return None
    source = None
    if resume != "never":
        source = Path(resume)
        if not source.is_file():
            what = "is a folder, not a checkpoint file" if source.is_dir() else "no such checkpoint file"
            raise ConfigError(f"trainer.resume={resume}: {what}; use never, auto or the path of a checkpoint file")
    if source is not None and _inside(source, ckpt_dir):
        return source  # this folder's own checkpoint (run() refuses a weights-only one)
    if not _is_main_process():  # data parallel: process 0 checks (and alone writes); the others may
        return source  # look only after it has started writing, as nccl does not wait for them
    held = [name for name in RUN_FILES if _present(run_dir / name)]
    if held:
        raise ConfigError(
            f"the run folder {run_dir} already holds a run ({', '.join(held)}); continue it with "
            "trainer.resume=auto, or give this run a new folder (hydra.run.dir=...)"
        )
    return source


def _present(path: Path) -> bool:
    """Whether anything is at ``path``: a file, a folder, or a link (even one to nothing)."""
    return path.exists() or path.is_symlink()


def _unreadable(path: Path) -> str | None:
    """Why ``path`` is not a checkpoint file that can be opened (None: it is a non-empty readable file)."""
    if not _present(path):
        return "it is missing"
    if not path.exists():
        return f"it is a link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return "it is a folder"
    if not path.is_file():
        return "it is not a regular file"
    if path.stat().st_size == 0:
        return "it is empty, 0 bytes"
    if not os.access(path, os.R_OK):
        return "it cannot be read: no permission"
    return None


def _one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace runs joined), cut at ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies directly in ``folder`` (links resolved)."""
    return path.resolve().parent == folder.resolve()


def _parallel_jobs() -> int:
    """How many jobs run side by side on this machine: torchrun's local processes, or a joblib launcher's n_jobs
    (−1: one per core); 1 otherwise (submitit jobs get their own cores)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except (ImportError, ValueError):
        return local
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        from .optim import available_cores

        n_jobs = int(launcher.get("n_jobs", -1) or -1)
        return max(local, available_cores() if n_jobs < 0 else n_jobs)
    return local


def _init_distributed(device: Any) -> tuple[Any, Any]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA (one GPU per
    process, cuda:LOCAL_RANK). Returns (Dist, device)."""
    import torch
    import torch.distributed as torch_dist

    from .fit import Dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist.current(), device


def _pictures(flow: Any, ds: Any, run_dir: Path, n_samples: int, tracker: Any) -> None:
    """samples.png for image data, density.png for 2-D data."""
    from . import plots

    if ds.image_shape is not None and n_samples > 0:
        path = plots.sample_grid(flow, ds, run_dir / "samples.png", n_samples)
        tracker.image("samples", path)
    if ds.dim == 2:
        path = plots.density_2d(flow, ds, run_dir / "density.png")
        tracker.image("density", path)


def print_summary(s: dict[str, Any]) -> None:
    line = f"{s['dataset']} (D={s['dim']}), {s.get('model', 'deep_mlp')}, {s['gradient']} gradient + {s['step_rule']}"
    print(line)
    print(
        f"  test log-likelihood  {s['test_ll']:.4f} ± {s['test_ll_2se']:.4f} nats (best val {s['best_val_ll']:.4f},"
        f" epoch {s['best_epoch']}; {s.get('epochs_done', s['epochs']):.4g} epochs trained)"
    )
    if "true_test_ll" in s:
        print(
            f"  true log-likelihood  {s['true_test_ll']:.4f} nats; gap {s['nll_gap_per_dim']:.4f} nats/dim"
            + (f"; MCC {s['mcc']:.3f}" if s.get("mcc") is not None else "")
            + (f"; Amari {s['amari']:.4f}" if s.get("amari") is not None else "")
        )
    if s.get("gaussian_test_ll") is not None:
        gain = s["test_ll"] - s["gaussian_test_ll"]
        print(f"  Gaussian baseline    {s['gaussian_test_ll']:.4f} nats (full covariance, closed form); the flow is "
              f"{abs(gain):.4f} nats {'above' if gain >= 0 else 'BELOW'} it")  # fmt: skip
    if "bits_per_dim" in s:
        print(f"  bits/dim             {s['bits_per_dim']:.4f}")
    median = f"median step {s['median_step_ms']:.3f} ms, " if s.get("median_step_ms") is not None else ""
    print(f"  time                 {s['train_seconds']:.1f} s training ({s['train_cpu_seconds']:.1f} s CPU), {median}"
          f"{s['steps']} steps, stopped by {s['stopped_by'].replace('_', ' ')}")  # fmt: skip
    print(f"  run folder           {s['run_dir']}")


def task(cfg: Any) -> float:
    """Hydra task: returns the best validation log-likelihood (for sweepers that optimise it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import CompactHydraException
    from hydra.types import RunMode

    try:
        summary = run(cfg)
    except Exception as err:
        # The fit loop (and torch) is imported only once a run gets that far, so a bad value answers fast.
        fit = sys.modules.get("relgrad_cli.fit")
        if fit is not None and isinstance(err, fit.Preempted):
            print(f"relgrad-train: {err}; continue with trainer.resume=auto hydra.run.dir={err.path.parent.parent}",
                  file=sys.stderr)  # fmt: skip
            sys.exit(128 + err.signum)
        user_errors = (*_user_error_types(), *((fit.DivergenceError, fit.CheckpointError) if fit is not None else ()))
        if not isinstance(err, user_errors) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # the job fails and the sweep goes on; Hydra prints a compact exception as its message alone. The
            # reason stays in the job's folder (not in a folder another process holds: that one is not ours)
            if not isinstance(err, RunFolderInUse):
                _write_error(Path(HydraConfig.get().runtime.output_dir), str(err))
            raise CompactHydraException(f"relgrad-train: error: {err}") from None
        print(f"relgrad-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled, or one before training
        print(f"relgrad-train: {_interrupted_message()}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        _leave_distributed()
    if "test_ll" in summary:
        print_summary(summary)
    return float(summary["best_val_ll"])


def _write_error(job_dir: Path, reason: str) -> None:
    """A failed sweep job's one-line reason, in ``<job folder>/error.txt`` (best effort)."""
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ERROR_FILE).write_text(reason + "\n")
    except OSError:
        pass


def _interrupted_message() -> str:
    """What an interrupted run (KeyboardInterrupt: no checkpoint written then) leaves, on one line."""
    try:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return "interrupted; stopped at once, without writing a checkpoint"
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return "interrupted; stopped at once, before a checkpoint was written"
    return (f"interrupted; stopped at once, without writing a checkpoint; the last one written is kept in {last}; "
            f"continue with trainer.resume=auto hydra.run.dir={run_dir}")  # fmt: skip


def _leave_distributed() -> None:
    torch_dist = sys.modules.get("torch.distributed")  # not imported: no process group to leave
    if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def output_folder_problem(argv: list[str]) -> str | None:
    """Why the run or sweep folder named on the command line (default: outputs/) cannot be created, or None.

    Checks the fixed part of the path (before any ``${...}``): its nearest existing ancestor must be a writable
    folder. Hydra creates the folder before the task starts and would otherwise fail with a traceback."""
    keys = ("hydra.run.dir=", "hydra.sweep.dir=")
    targets = [a.split("=", 1)[1] for a in argv if a.startswith(keys)] or ["outputs"]
    for target in targets:
        fixed = Path(target.split("${", 1)[0] or ".").expanduser().absolute()
        probe = fixed
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            return f"cannot create the output folder {target}: {probe} is a file; choose another folder"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"cannot create the output folder {target}: no permission to write in {probe}"
    return None


NOT_A_RUN = ("-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc",
             "--shell-completion")  # fmt: skip


def run_folder_in_use(argv: list[str]) -> str | None:
    """The one-line error when ``hydra.run.dir=`` on the command line names a folder another process is training
    in (its lock is held), else None. Checked before Hydra starts, which would otherwise write this run's
    ``.hydra/`` files and log into that folder; :func:`run` takes the lock itself. Sweeps, interpolated folders
    and the processes of a data-parallel job other than process 0 are left to :func:`run`."""
    from .files import lock_holder

    if not _is_main_process() or any(a in NOT_A_RUN or a.startswith(("--cfg=", "--info=")) for a in argv):
        return None
    targets = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not targets or "${" in targets[-1]:
        return None
    held = lock_holder(Path(targets[-1]).expanduser().absolute())
    return None if held is None else folder_in_use_message(held)


class SweepEnd(Callback):
    """Hydra callback (``hydra.callbacks.sweep_end`` in ``conf/hydra/default.yaml``): remembers the sweep folder when
    a multirun starts, so :func:`main` can count the jobs at its end — also when a job failed, where Hydra stops
    before its own end-of-sweep callbacks."""

    folder: Path | None = None  # the current sweep's folder (one sweep per process)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        SweepEnd.folder = Path(str(config.hydra.sweep.dir))


def sweep_outcome(folder: Path) -> str:
    """One line on a sweep's jobs (the sub-folders with ``.hydra/``): how many finished (``summary.json``), how
    many failed (``error.txt``, written by this try: a job removes an earlier one when it starts) and how many
    stopped without either (killed, or never started)."""
    jobs = sorted((p for p in folder.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name))
    failed = [p.name for p in jobs if (p / ERROR_FILE).is_file()]
    finished = sum((p / "summary.json").is_file() and p.name not in failed for p in jobs)
    other = len(jobs) - finished - len(failed)
    line = f"sweep of {len(jobs)} job{'s' * (len(jobs) != 1)} in {folder}: {finished} finished"
    if failed:
        line += (f", {len(failed)} failed (job{'s' * (len(failed) != 1)} {', '.join(failed)}; the reasons are in "
                 f"<job>/{ERROR_FILE})")  # fmt: skip
    if other:
        line += f", {other} without a summary"
    if failed or other:
        line += f"; relgrad-report sweep {folder} lists every job"
    return line


def main() -> None:
    """Console-script entry point; a sweep (``-m``) ends with one line counting its finished and failed jobs."""
    problem = output_folder_problem(sys.argv[1:]) or run_folder_in_use(sys.argv[1:])
    if problem is not None:
        print(f"relgrad-train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    import hydra

    register_configs()
    try:
        hydra.main(version_base="1.3", config_path=conf_path(), config_name="config")(task)()
    finally:
        if SweepEnd.folder is not None and SweepEnd.folder.is_dir():
            print(f"relgrad-train: {sweep_outcome(SweepEnd.folder)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
