"""Downloads with checksums and atomic writes (urllib only).

A file is streamed to a temporary file in its destination folder while its digest is computed; only when the
digest matches the known value is it renamed into place (``os.replace``, atomic on one file system). A mismatch
deletes the temporary file; the next mirror is tried, and when none is left a :class:`DatasetError` says what each
source gave. An archive is unpacked into a temporary folder next to the destination and each top-level folder is
then renamed into place, so an interrupted run never leaves a half-written dataset under its final name.

Every URL and checksum is in :data:`DOWNLOADS`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_temp
from .base import DatasetError, as_root

_CHUNK = 1 << 20
USER_AGENT = "relgrad-data/0.1 (python-urllib)"


@dataclass(frozen=True)
class Remote:
    """One file to fetch: its name on disk, the URLs to try in order, and its known digest (md5 or sha256)."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None

    @property
    def checksum(self) -> tuple[str, str]:
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        raise ValueError(f"{self.filename}: no checksum known")


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror (torchvision's first choice)
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # the mirror TensorFlow's MNIST loader used
    "http://yann.lecun.com/exdb/mnist/",  # the original page (often refuses automated downloads)
)


def _mnist(filename: str, md5: str) -> Remote:
    return Remote(filename, tuple(base + filename for base in _MNIST_MIRRORS), md5=md5)


#: name → (files to fetch, sub-folder of the data root they go to). MNIST md5s are the well-known values (as in
#: torchvision); the MAF archive's md5 is that of Zenodo record 1161203 (data.tar.gz, about 0.9 GB).
DOWNLOADS: dict[str, tuple[tuple[Remote, ...], str]] = {
    "mnist": (
        (
            _mnist("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            _mnist("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            _mnist("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            _mnist("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        "mnist",
    ),
    "maf": (
        (
            Remote(
                "data.tar.gz",
                (
                    "https://zenodo.org/records/1161203/files/data.tar.gz?download=1",
                    "https://zenodo.org/record/1161203/files/data.tar.gz",
                ),
                md5="9b9c9b0375315ad270eba4ce80c093ab",
            ),
        ),
        ".",
    ),
}

#: the folders of the MAF archive (under its top-level ``data/``) that relgrad uses; mnist/ and cifar10/ are skipped
MAF_FOLDERS = ("power", "gas", "hepmass", "miniboone", "BSDS300")


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_to(url: str, handle, algorithm: str, progress: bool, label: str, timeout: float) -> str:
    """Stream ``url`` into the open binary ``handle``; return the hex digest of what was written."""
    from tqdm import tqdm

    digest = hashlib.new(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total and total.isdigit() else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
            file=sys.stderr,
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_file(remote: Remote, folder: str | Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``folder`` (created if needed), verifying its checksum; return the final path.

    A file already there with the right checksum is kept. Mirrors are tried in order; a network error or a
    checksum mismatch moves on to the next. Raises DatasetError when no mirror delivers a verified file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    algorithm, expected = remote.checksum
    if dest.is_file() and file_digest(dest, algorithm) == expected:
        return dest
    failures: list[str] = []
    for url in remote.urls:
        tmp = atomic_temp(dest)
        try:
            with open(tmp, "wb") as handle:
                got = _fetch_to(url, handle, algorithm, progress, remote.filename, timeout)
            if got != expected:
                failures.append(f"{url}: {algorithm} {got}, expected {expected}")
                continue
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts are OSErrors
            reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"could not fetch a verified {remote.filename} into {folder} (" + "; ".join(failures) + "); check the "
        f"connection, or download it by hand and place it at {dest}"
    )


def _safe_members(archive: tarfile.TarFile, prefix: str, folders: Iterable[str]) -> list[tarfile.TarInfo]:
    """Members under ``prefix + folder`` for the wanted folders; refuses absolute paths, '..' and links."""
    wanted = tuple(f"{prefix}{name}" for name in folders)
    members = []
    for member in archive.getmembers():
        name = member.name.removeprefix("./")
        if not any(name == w or name.startswith(w + "/") for w in wanted):
            continue
        if name.startswith("/") or ".." in Path(name).parts or member.issym() or member.islnk():
            raise DatasetError(f"archive member {member.name!r} is unsafe (absolute, '..' or a link); not extracting")
        if not (member.isfile() or member.isdir()):
            continue
        members.append(member)
    return members


def extract_tar(archive: str | Path, dest: str | Path, folders: Sequence[str], *, prefix: str = "") -> list[Path]:
    """Unpack the top-level ``folders`` (under ``prefix`` inside the archive) of a .tar.gz into ``dest``.

    Everything goes into a temporary folder inside ``dest`` first; each complete folder is then renamed into
    place (an existing folder of that name is swapped out and deleted afterwards). Returns the final folders.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    placed: list[Path] = []
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(tar, prefix, folders)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters; members were checked above
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} could not be unpacked ({exc}); delete it and download it again") from None
        missing = [name for name in folders if not (staging / prefix / name).is_dir()]
        if missing:
            raise DatasetError(f"{archive} has no folder(s) {', '.join(prefix + m for m in missing)}")
        for name in folders:
            final = dest / name
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=dest))
                os.replace(final, old / name)
            os.replace(staging / prefix / name, final)
            placed.append(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return placed


def _maf_present(root: Path) -> bool:
    from .maf import MAF_FILES

    return all((root / rel).is_file() for rels in MAF_FILES.values() for rel in rels)


def download(name: str, root: str | Path, *, progress: bool = True, keep_archive: bool = False) -> list[Path]:
    """Fetch dataset family ``name`` ("mnist" or "maf") into the data root; return the files/folders written.

    mnist: the four .gz IDX files into ``<root>/mnist/``. maf: data.tar.gz into ``<root>/``, verified, then its
    folders power, gas, hepmass, miniboone and BSDS300 unpacked into ``<root>/`` (the archive is deleted
    afterwards unless ``keep_archive``); nothing is fetched when all five datasets' files are already there.
    """
    if name not in DOWNLOADS:
        raise DatasetError(f"nothing to download for {name!r}; choose one of: {', '.join(DOWNLOADS)}")
    root = as_root(root)
    if name == "maf" and _maf_present(root):
        return [root / folder for folder in MAF_FOLDERS]
    remotes, sub = DOWNLOADS[name]
    folder = (root / sub).resolve()
    paths = [download_file(remote, folder, progress=progress) for remote in remotes]
    if name == "maf":
        (archive,) = paths
        placed = extract_tar(archive, root, MAF_FOLDERS, prefix="data/")
        if not keep_archive:
            archive.unlink(missing_ok=True)
        return placed
    return paths
