"""``relgrad-data``: see which datasets are on disk, and fetch the ones that can be downloaded.

    relgrad-data info [NAME] [--root DIR] [--no-load]
    relgrad-data download {mnist,maf} [--root DIR] [--no-progress] [--keep-archive]

The data root defaults to $RELGRAD_DATA, else ./data. Errors print one line ``relgrad-data: error: …`` on stderr
and exit with status 2. ``info`` exits 1 when a dataset that is present fails to load. Only numpy is imported
before a command runs (``--help`` stays fast; torch is never needed here).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

PROG = "relgrad-data"
SYNTHETIC = {"ica": "synthetic, generated from its config (no files)", "toy2d": "synthetic (no files)"}
BUNDLED = {
    "digits": "bundled with scikit-learn (no files)",
    "patches": "cut from the photographs scikit-learn ships (no files)",
}
MAF_NAMES = ("power", "gas", "hepmass", "miniboone", "bsds300")


def default_root() -> str:
    """$RELGRAD_DATA if set, else ./data."""
    return os.environ.get("RELGRAD_DATA") or "./data"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _files_of(name: str, root: Path) -> tuple[list[Path], list[Path], str | None]:
    """(files found, files expected but missing, fetch command) for a dataset that lives on disk."""
    if name == "mnist":
        from .data.mnist import MNIST_FILES, find_mnist_files

        found, _ = find_mnist_files(root)
        present = [p for p in found.values() if p is not None]
        missing = [root / "mnist" / f"{MNIST_FILES[k]}.gz" for k, p in found.items() if p is None]
        return present, missing, f"{PROG} download mnist --root {root}"
    from .data.maf import MAF_FILES

    paths = [root / rel for rel in MAF_FILES[name]]
    return (
        [p for p in paths if p.is_file()],
        [p for p in paths if not p.is_file()],
        f"{PROG} download maf --root {root}",
    )


def _known_md5s() -> dict[str, str]:
    from .data.download import DOWNLOADS

    return {r.filename: r.md5 for remotes, _ in DOWNLOADS.values() for r in remotes if r.md5}


def _describe_load(name: str, root: Path, out: TextIO) -> bool:
    """Load ``name`` with default options and print its shapes; False if loading failed."""
    from .data import DatasetError, load_dataset

    try:
        data = load_dataset(name, root)
    except DatasetError as exc:
        print(f"    load failed: {exc}", file=out)
        return False
    except ImportError as exc:  # a loader module not available in this installation
        print(f"    not loadable here: {exc}", file=out)
        return True
    shapes = ", ".join(f"{k} {'×'.join(map(str, v.shape))}" for k, v in data.splits().items())
    extra = f"; images {'×'.join(map(str, data.image_shape))}, {data.levels} levels" if data.image_shape else ""
    print(f"    loaded: {shapes} ({data.train.dtype}){extra}", file=out)
    return True


def cmd_info(name: str | None, root: Path, load: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .data import DatasetError, dataset_names
    from .data.download import file_digest

    names = dataset_names()
    if name is not None and name not in names:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(names)}")
    print(f"data root: {root}{'' if root.is_dir() else ' (does not exist yet)'}", file=out)
    known = _known_md5s()
    ok = True
    for item in [name] if name else names:
        if item in SYNTHETIC or item in BUNDLED:
            print(f"{item:<10} {SYNTHETIC.get(item) or BUNDLED[item]}", file=out)
            if load:
                ok &= _describe_load(item, root, out)
            continue
        present, missing, fetch = _files_of(item, root)
        print(f"{item:<10} {'present' if not missing else 'missing'}", file=out)
        for path in present:
            md5 = file_digest(path)
            check = ""
            if path.name in known:
                check = "  (matches the official file)" if known[path.name] == md5 else "  (DIFFERS from the official)"
            print(f"    {path}  {_size(path.stat().st_size)}  md5 {md5}{check}", file=out)
        if missing:
            for path in missing:
                print(f"    expected: {path}", file=out)
            if item == "mnist":
                print(f"    (also accepted: files without .gz, in {root}/ or {root / 'MNIST' / 'raw'}/)", file=out)
            print(f"    fetch with: {fetch}", file=out)
        elif load:
            ok &= _describe_load(item, root, out)
    return 0 if ok else 1


def cmd_download(name: str, root: Path, progress: bool, keep_archive: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .data.download import download

    for path in download(name, root, progress=progress, keep_archive=keep_archive):
        print(f"ready: {path}", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="List the datasets relgrad knows, where their files are expected, and fetch MNIST or the MAF "
        "archive. The data root is --root, else $RELGRAD_DATA, else ./data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,download}")
    info = sub.add_parser("info", help="which datasets are present, their files (size, md5) and shapes")
    info.add_argument("name", nargs="?", help="one dataset (default: all)")
    info.add_argument("--root", default=None, help="data root (default: $RELGRAD_DATA, else ./data)")
    info.add_argument("--no-load", action="store_true", help="list files only; do not load present datasets")
    dl = sub.add_parser("download", help="fetch files with checksum verification (needs internet)")
    dl.add_argument(
        "name",
        choices=["mnist", "maf"],
        help="mnist: 4 IDX files; maf: POWER, GAS, HEPMASS, MINIBOONE, BSDS300 (one 0.9 GB archive)",
    )
    dl.add_argument("--root", default=None, help="data root (default: $RELGRAD_DATA, else ./data)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.add_argument("--keep-archive", action="store_true", help="maf: keep data.tar.gz after unpacking it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DatasetError, as_root

    try:
        root = as_root(args.root if args.root is not None else default_root())
        if args.command == "info":
            return cmd_info(args.name, root, load=not args.no_load)
        return cmd_download(args.name, root, progress=not args.no_progress, keep_archive=args.keep_archive)
    except (DatasetError, OSError) as exc:  # OSError: disk full, permission denied, … while writing files
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
