"""Run records: our own metrics.jsonl and summary.json (the source of truth for reports), mirrored to W&B.

Every file W&B writes stays inside the run folder: WANDB_DIR, WANDB_CACHE_DIR, WANDB_DATA_DIR and WANDB_CONFIG_DIR
are pointed there before ``wandb`` is imported. One W&B run per job, always finished (``finish`` in a ``finally``
of the caller, with a non-zero exit code when the job failed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .files import atomic_temp, raise_if_disk_full


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it into place."""
    tmp = atomic_temp(path)
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(err, path, len(text.encode()))
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def keep_records_up_to(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` (atomically) without the records logged after ``step``, and without a last line
    cut short by a kill: a run resumed from a checkpoint at ``step`` logs those steps again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line + "\n")
    tmp = atomic_temp(path)
    try:
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


WANDB_FOLDERS = (("WANDB_DIR", None), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                 ("WANDB_CONFIG_DIR", "config"))  # fmt: skip


def start_wandb(folder: Path, **init_kwargs: Any) -> tuple[Any, dict[str, str | None]]:
    """``wandb.init(**init_kwargs)`` for a run whose files all stay inside ``folder``; returns the run and the
    environment to restore with :func:`finish_wandb`.

    WANDB_DIR (``folder``), WANDB_CACHE_DIR, WANDB_DATA_DIR and WANDB_CONFIG_DIR (under ``folder/wandb``) are set
    before W&B reads them, and a W&B service inherited from a parent process (WANDB_SERVICE) is left alone, so this
    process starts its own service, whose logs go to the same folder."""
    saved = {var: os.environ.get(var) for var in (*(v for v, _ in WANDB_FOLDERS), "WANDB_SERVICE", "WANDB_SILENT")}
    for var, sub in WANDB_FOLDERS:
        path = Path(folder) if sub is None else Path(folder) / "wandb" / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ.pop("WANDB_SERVICE", None)
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    try:
        return wandb.init(dir=str(folder), reinit="finish_previous", **init_kwargs), saved
    except BaseException:  # e.g. online mode without a login: leave the process as it was
        wandb.teardown()
        _restore_env(saved)
        raise


def finish_wandb(run: Any, saved: dict[str, str | None], exit_code: int = 0) -> None:
    """Finish ``run``, stop this process's W&B service (the next run, e.g. the next job of a sweep in this process,
    starts its own in its own folder, instead of one writing into the first run's folder), and restore the
    environment ``start_wandb`` changed."""
    import wandb

    try:
        run.finish(exit_code=exit_code)
        wandb.teardown()
    finally:
        _restore_env(saved)


def _restore_env(saved: dict[str, str | None]) -> None:
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


class Tracker:
    """Writes records to ``metrics.jsonl`` and mirrors them (and the summary, and images) to W&B when enabled.

    A new run starts both afresh. A run continued in its own folder (``resume_step``: the step of the checkpoint it
    continues from) keeps the records up to that step and continues the same W&B run (its id is kept in
    ``wandb/run-id``; offline, the continuation is a second ``offline-run-*`` folder with the same id, and
    ``wandb sync`` joins them).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        wandb_mode: str = "disabled",
        project: str = "relgrad",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        config: dict | None = None,
        resume_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb_run = None
        if wandb_mode != "disabled":
            id_file = self.run_dir / "wandb" / "run-id"
            run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else None
            self.wandb_run, self._wandb_env = start_wandb(
                self.run_dir,
                id=run_id,
                resume="allow" if run_id else None,
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=list(tags or []),
                config=config,
                mode=wandb_mode,
            )
            id_file.write_text(self.wandb_run.id + "\n")
        # after W&B has started: a run that could not start leaves no records behind
        metrics = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            keep_records_up_to(metrics, resume_step)
        self._metrics = open(metrics, "a" if resume_step is not None else "w", buffering=1)

    def log(self, record: dict[str, Any]) -> None:
        """One JSON line; W&B gets the numeric fields under ``<split>/<key>`` at the record's step."""
        line = json.dumps(_jsonable(record)) + "\n"
        try:
            self._metrics.write(line)
        except OSError as err:
            raise_if_disk_full(err, self.run_dir / "metrics.jsonl", len(line.encode()))
            raise
        if self.wandb_run is not None:
            split = record.get("split", "train")
            data = {
                f"{split}/{k}": v
                for k, v in record.items()
                if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            self.wandb_run.log(data, step=int(record.get("step", 0)))

    def summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / "summary.json", summary)
        if self.wandb_run is not None:
            for k, v in _jsonable(summary).items():
                if v is not None:
                    self.wandb_run.summary[k] = v

    def image(self, key: str, path: Path) -> None:
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Image(str(path))})

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()
        if self.wandb_run is not None:
            finish_wandb(self.wandb_run, self._wandb_env, exit_code)
            self.wandb_run = None


class NullTracker:
    """The tracker of a non-main data-parallel process: records nothing (only the main process writes)."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
