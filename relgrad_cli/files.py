"""Atomic file writes: a temporary file beside the target, renamed onto it once complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_temp(path: Path) -> Path:
    """A new empty temporary file beside ``path`` (same folder, so a rename onto ``path`` is atomic), with the
    permissions a plain ``open(path, "w")`` would give (mkstemp's are owner-only)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)
