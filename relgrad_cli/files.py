"""Atomic file writes (a temporary file beside the target, renamed onto it once complete), and run-folder locks."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


class DiskFullError(OSError):
    """A file could not be written because its device is full; the message names the file, the bytes needed and
    the bytes free, on one line."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def raise_if_disk_full(err: BaseException, path: Path, needed: int) -> None:
    """Raise :class:`DiskFullError` when ``err`` (from writing ``path``) means that its device is full: ENOSPC, or
    a failed write (torch's zip writer reports one as a RuntimeError) while less than ``needed`` bytes are free."""
    import errno
    import shutil

    path = Path(path)
    if not isinstance(err, (OSError, RuntimeError)):
        return
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or free < needed:
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the device to write {path}: it needs about {_size(needed)} and {path.parent} has "
            f"{_size(free)} free; free some space there, or choose another hydra.run.dir (the previous version of "
            "the file, if any, is kept)",
        ) from None


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


def remove_orphan_temps(path: Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_temp` left beside ``path`` (``.NAME.*.tmp``) when a write was cut
    short (a kill between writing and renaming). Call it only while no other process writes there (the run
    folder's lock is held). Returns the files removed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


LOCK_NAME = ".lock"


class FolderInUse(Exception):
    """Another process holds a folder's lock; ``pid`` is the one written in the lock file (None if unreadable)."""

    def __init__(self, folder: Path, pid: int | None):
        super().__init__(f"{folder} is in use by another process (PID {pid if pid is not None else 'unknown'})")
        self.folder, self.pid = Path(folder), pid


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.lock``, holding the holder's PID.

    ``acquire`` creates the folder and the lock file if needed and raises :class:`FolderInUse` when another process
    holds the lock (it writes nothing then). The lock lasts until ``release`` or until the process ends: the
    operating system drops it when the process dies, so a crash never leaves the folder locked. The lock file stays
    (removing it would race with a process that has just opened it)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, attempts: int = 5, wait: float = 0.02) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no lock
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        for attempt in range(attempts):  # a few tries: a look by :func:`lock_holder` holds a shared lock briefly
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    os.close(fd)
                    raise FolderInUse(self.folder, _read_pid(self.path)) from None
                time.sleep(wait)
            except OSError:  # locks not supported on this file system: go on without one
                os.close(fd)
                return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(folder: Path) -> FolderInUse | None:
    """Whether another process holds ``folder``'s lock (a :class:`FolderInUse` naming it) or not (None), without
    creating anything: a missing folder or lock file is a free one."""
    path = Path(folder) / LOCK_NAME
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return FolderInUse(Path(folder), _read_pid(path))
    except OSError:  # locks not supported here
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    for _ in range(5):  # the holder writes its PID just after taking the lock
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None
