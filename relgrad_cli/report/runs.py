"""Run folders: how every report finds the runs under the folders it is given and reads what they wrote.

A run is a folder that ``relgrad-train`` wrote: one holding ``.hydra/`` (every run through the command line, a
failed sweep job included), ``summary.json`` or ``metrics.jsonl`` (a run trained in-process has no ``.hydra/``). From
it the reports read

- ``summary.json``: the run's results; a run without one failed or is still running. A damaged one (not JSON,
  truncated, not a mapping) is named in a warning and read as missing, so one bad folder does not stop a report;
- ``.hydra/overrides.yaml``: the command-line overrides (what a sweep varies);
- ``.hydra/config.yaml``: the composed configuration (what regenerates a run's data);
- ``metrics.jsonl``: the validation records (rows with split "val"), the learning curve;
- ``error.txt``: a failed job's one-line reason.

Each file is read when a report first asks for it, and once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .common import ReportError, number, warn

HYDRA_DIR = ".hydra"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
ERROR_FILE = "error.txt"  # a failed sweep job's one-line reason (written by relgrad_cli.train)
MARKERS = (HYDRA_DIR, SUMMARY_FILE, METRICS_FILE)  # what makes a folder a run


@dataclass(eq=False)
class Run:
    """One run folder: ``path`` as found under the folder given to the report, and its summary (None without a
    readable ``summary.json``). Everything else is read on first use."""

    path: Path
    summary: dict[str, Any] | None

    @cached_property
    def folder(self) -> Path:
        """The absolute path of the folder, symbolic links resolved."""
        return self.path.resolve()

    @property
    def hydra(self) -> bool:
        """Whether the run went through relgrad-train's runner (it has ``.hydra/``), as every sweep job does."""
        return (self.path / HYDRA_DIR).is_dir()

    @property
    def finished(self) -> bool:
        """Whether the run wrote a readable ``summary.json``."""
        return self.summary is not None

    @property
    def evaluated(self) -> bool:
        """Whether the summary holds a test log-likelihood (what the tables compare)."""
        return self.summary is not None and "test_ll" in self.summary

    @cached_property
    def overrides(self) -> dict[str, str]:
        """The command-line overrides, see :func:`read_overrides`."""
        return read_overrides(self.path)

    @cached_property
    def config(self) -> dict[str, Any] | None:
        """The composed configuration, see :func:`read_config`."""
        return read_config(self.path)

    @cached_property
    def error(self) -> str | None:
        """Why the run failed (``error.txt``); None for a finished run or one that gave no reason."""
        return None if self.finished else read_error(self.path)

    @cached_property
    def validation(self) -> list[dict[str, Any]]:
        """The validation records, see :func:`read_validation`."""
        return read_validation(self.path)


def find_runs(dirs: Iterable[Path], *, given_order: bool = False) -> list[Run]:
    """Every run folder under ``dirs`` (a folder given may itself be a run), each once, in path order; with
    ``given_order``, in the order of the folders given, each one's runs in path order (as the sweep lists jobs)."""
    runs: dict[Path, Run] = {}
    for root in dirs:
        for path in sorted({file.parent for marker in MARKERS for file in Path(root).rglob(marker)}):
            folder = path.resolve()
            if folder not in runs:
                runs[folder] = Run(path, read_summary(path / SUMMARY_FILE))
    return list(runs.values()) if given_order else [runs[folder] for folder in sorted(runs)]


def read_summary(file: Path) -> dict[str, Any] | None:
    """A run's ``summary.json`` as a mapping; None when there is none. A damaged one (not JSON, truncated, not a
    mapping) is named in a warning on stderr and read as missing, so one bad folder does not stop a report."""
    file = Path(file)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"{file} is not readable JSON ({err}); skipped")
        return None
    if not isinstance(data, dict):
        warn(f"{file} is not readable JSON (a {type(data).__name__}, expected an object); skipped")
        return None
    return data


def read_overrides(folder: Path) -> dict[str, str]:
    """The command-line overrides of a run (``.hydra/overrides.yaml``, ``hydra.*`` left out): key → value string;
    empty without the file (or with a damaged one, after a warning)."""
    import yaml

    file = Path(folder) / HYDRA_DIR / "overrides.yaml"
    if not file.is_file():
        return {}
    try:
        items = yaml.safe_load(file.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        warn(f"{file} is not readable YAML ({' '.join(str(err).split())}); its overrides are ignored")
        return {}
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, _, value = str(item).partition("=")
        if not key.startswith("hydra."):
            overrides[key.lstrip("+~")] = value
    return overrides


def read_config(folder: Path) -> dict[str, Any] | None:
    """The run's composed configuration (``.hydra/config.yaml``), interpolations resolved; None without one.
    Raises ReportError when the file cannot be read."""
    file = Path(folder) / HYDRA_DIR / "config.yaml"
    if not file.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    except Exception as err:  # noqa: BLE001 (any OmegaConf parse or resolution error)
        raise ReportError(f"{file} cannot be read ({err}); is it a relgrad-train run folder?") from None


def read_error(folder: Path) -> str | None:
    """The reason a failed job left in ``error.txt``, on one line; None without one."""
    try:
        text = (Path(folder) / ERROR_FILE).read_text(errors="replace")
    except OSError:
        return None
    return " ".join(text.split()) or None


def read_validation(folder: Path) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` rows with split "val" and a numeric ``ll``, in file order; empty without the file.
    Raises ReportError naming the first line that is not a JSON object."""
    file = Path(folder) / METRICS_FILE
    if not file.is_file():
        return []
    records = []
    for n, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ReportError(f"{file}:{n} is not a JSON line; the file is damaged") from None
        if not isinstance(rec, dict):
            raise ReportError(f"{file}:{n} is a JSON {type(rec).__name__}, not a record (an object); the file is "
                              "damaged")  # fmt: skip
        if rec.get("split") == "val" and number(rec.get("ll")) is not None:
            records.append(rec)
    return records
