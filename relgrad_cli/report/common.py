"""What every report shares: its error and warnings, how values are read as numbers and printed, and the writers of
CSV files and markdown tables (with pandas) and of the offline W&B run."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any


class ReportError(Exception):
    """A report cannot be made; :func:`relgrad_cli.report.main` prints the message as one line and exits with 2."""


def warn(message: str) -> None:
    """Print ``relgrad-report: warning: <message>`` on stderr."""
    print(f"relgrad-report: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------- numbers


def number(value: Any) -> float | None:
    """``value`` as a finite float; None when it is missing, not a number, infinite or NaN."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def sort_key(value: Any) -> tuple:
    """Sort numbers by value before everything else, which sorts as text."""
    x = number(value)
    return (0, x, "") if x is not None else (1, 0.0, str(value))


def mean(values: list[float]) -> float:
    """The arithmetic mean of a non-empty list."""
    return sum(values) / len(values)


def plus_minus(value: Any, err: Any, digits: int = 3) -> str:
    """The text "value ± err" with a fixed number of decimals; "–" when the value is missing."""
    x, e = number(value), number(err)
    if x is None:
        return "–"
    return f"{x:.{digits}f}" + (f" ± {e:.{digits}f}" if e is not None else "")


def seconds_text(value: Any) -> str:
    """Seconds for a table: three significant digits below 100 s, whole seconds above."""
    x = number(value)
    return "–" if x is None else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def ll_digits(*values: Any) -> int:
    """Decimals for log-likelihoods: 3 below 100 nats in magnitude, 2 below 1000, else 1 (as the papers print)."""
    m = max((abs(x) for x in map(number, values) if x is not None), default=0.0)
    return 3 if m < 100 else 2 if m < 1000 else 1


# ----------------------------------------------------------------------------------------------------------- output


def cell(v: Any) -> str:
    """A value as a markdown cell: "–" for a missing one, four significant digits for a float below 10⁴."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _frame(header: list[str], rows: list[list[Any]]) -> Any:
    """``rows`` as a pandas DataFrame of Python objects, so that every value is written as ``str`` writes it."""
    import pandas as pd

    return pd.DataFrame([list(row) for row in rows], columns=list(header), dtype=object)


def _numeric(values: list[Any]) -> bool:
    """Whether every value given (None and "" aside) reads as a number, and there is one."""
    given = [v for v in values if v is not None and v != ""]
    return bool(given) and all(not isinstance(v, bool) and number(v) is not None for v in given)


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (pipe format) of ``rows`` under ``header``, every value written by :func:`cell`; columns of
    numbers are right-aligned."""
    align = ["right" if _numeric([row[i] for row in rows]) else "left" for i in range(len(header))]
    frame = _frame(header, [[cell(v).replace("|", "\\|") for v in row] for row in rows])  # a | would end the cell
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    """The CSV text of ``rows`` under ``header``: lines end in CRLF (RFC 4180), a missing value (None) is an empty
    field, every other value is written as ``str`` writes it (a NaN as "nan")."""
    frame = _frame(header, [["" if v is None else v for v in row] for row in rows])
    return frame.to_csv(index=False, lineterminator="\r\n", na_rep="nan")


def _wandb_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int)):
        return v
    x = number(v)
    return x if x is not None and isinstance(v, float) else (None if isinstance(v, float) else str(v))


def log_to_wandb(
    out: Path, tables: dict[str, tuple[list[str], list[list[Any]]]], name: str, images: dict[str, Path] | None = None
) -> Path:
    """Log ``tables`` (name → (header, rows)) and ``images`` (name → PNG file) to an offline W&B run whose files all
    stay under ``out/wandb``. Returns the offline run folder (``wandb sync`` uploads it later)."""
    from ..tracking import finish_wandb, start_wandb

    run, saved = start_wandb(out, project="relgrad", mode="offline", job_type="report", name=name)
    try:
        import wandb

        run.log({**{key: wandb.Table(columns=header, data=[[_wandb_value(v) for v in row] for row in rows])
                    for key, (header, rows) in tables.items()},
                 **{key: wandb.Image(str(path)) for key, path in (images or {}).items()}})  # fmt: skip
        return Path(run.dir).parent
    finally:
        finish_wandb(run, saved)
