"""The bad-input battery: each mistake gives one line naming the value or file and what to do, a non-zero exit,
no traceback, and nothing half-written in the data folder or the run folder."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

CLI = Path(sys.executable).parent / "relgrad-train"


def _mnist_bad_header(root: Path) -> list[str]:
    import test_data_mnist as m

    m.make_mnist(root / "mnist", gz=False)
    path = root / "mnist" / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2:4] = b"\x09\x99"  # magic number 2051 → something else
    path.write_bytes(bytes(raw))
    return ["data=mnist"]


def _mnist_truncated_gz(root: Path) -> list[str]:
    import test_data_mnist as m

    m.make_mnist(root / "mnist", gz=True)
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return ["data=mnist"]


def _bsds_missing_split(root: Path) -> list[str]:
    import test_data_maf as maf

    maf.write_bsds(root, splits=("train", "test"))
    return ["data=bsds300"]


def _power_wrong_dimension(root: Path) -> list[str]:
    import test_data_maf as maf

    maf.write_power(root, cols=5)
    return ["data=power"]


def _miniboone_with(value: float, row: int, col: int) -> Callable[[Path], list[str]]:
    """A MiniBooNE file with ``value`` at (row, col)."""

    def write(root: Path) -> list[str]:
        data = np.random.default_rng(0).normal(size=(500, 43))
        data[row, col] = value
        (root / "miniboone").mkdir(parents=True)
        np.save(root / "miniboone" / "data.npy", data)
        return ["data=miniboone"]

    return write


def _bsds_with_minus_inf(root: Path) -> list[str]:
    """-inf in a split that BSDS300 uses as stored (no statistics are computed on it)."""
    import h5py
    import test_data_maf as maf

    arrays = maf.write_bsds(root)
    arrays["test"][4, 9] = -np.inf
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "r+") as f:
        f["test"][...] = arrays["test"]
    return ["data=bsds300"]


def _nothing(root: Path) -> list[str]:
    return []


CASES: list[tuple[str, Callable[[Path], list[str]], list[str], list[str]]] = [
    ("corrupt IDX header", _mnist_bad_header, [], ["train-images-idx3-ubyte", "magic"]),
    ("truncated gzip", _mnist_truncated_gz, [], ["train-images-idx3-ubyte.gz"]),
    ("HDF5 missing a split", _bsds_missing_split, [], ["BSDS300.hdf5", "validation"]),
    ("wrong dimension", _power_wrong_dimension, [], ["power/data.npy"]),
    ("NaN in the data", _miniboone_with(np.nan, 7, 3), [], ["miniboone/data.npy", "NaN or inf", "row 7, column 3"]),
    ("inf in the data", _miniboone_with(np.inf, 11, 5), [], ["miniboone/data.npy", "NaN or inf", "row 11, column 5"]),
    (
        "-inf in an HDF5 split",
        _bsds_with_minus_inf,
        [],
        ["BSDS300/BSDS300.hdf5", "test split holds NaN or infinite", "row 4, column 9", "download maf"],
    ),
    ("zero lr", _nothing, ["optim.lr=0"], ["optim.lr=0.0", "positive"]),
    ("negative lr", _nothing, ["optim.lr=-0.1"], ["optim.lr=-0.1"]),
    ("batch size 0", _nothing, ["trainer.batch_size=0"], ["trainer.batch_size=0"]),
    ("depth 0", _nothing, ["model.depth=0"], ["model.depth=0"]),
    ("unknown dataset", _nothing, ["data=nope"], ["data/nope", "ica"]),
    ("unknown optim", _nothing, ["optim=nope"], ["optim/nope", "relative"]),
    ("unknown prior", _nothing, ["model.prior=cauchy"], ["model.prior='cauchy'", "laplace"]),
    ("unknown gradient", _nothing, ["optim.gradient=natural"], ["natural", "relative"]),
    ("wrong type", _nothing, ["trainer.max_epochs=many"], ["many", "max_epochs"]),
    ("unknown compile mode", _nothing, ["trainer.compile=fast"], ["trainer.compile='fast'", "reduce-overhead"]),
    ("unknown matmul precision", _nothing, ["trainer.matmul_precision=medium"], ["medium", "highest"]),
]


@pytest.mark.parametrize("case,prepare,overrides,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, prepare, overrides, words, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    extra = prepare(root)
    before = {p: p.stat().st_size for p in root.rglob("*")}
    run = tmp_path / "run"
    res = subprocess.run([str(CLI), *extra, *overrides, f"data.root={root}", "logger=none", "trainer.max_epochs=1",
                          f"hydra.run.dir={run}"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})  # fmt: skip
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    message = res.stderr.replace(str(tmp_path), "<tmp>")  # the folder's name contains the test id: not evidence
    for w in words:
        assert w in message, (w, message)
    if res.returncode == 2:  # our own checks: exactly one line
        assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
    assert {p: p.stat().st_size for p in root.rglob("*")} == before  # the data folder is untouched
    for name in ("summary.json", "metrics.jsonl", "checkpoints"):
        assert not (run / name).exists()


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = subprocess.run([str(CLI), "logger=none", f"hydra.run.dir={tmp_path / 'afile' / 'run'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"relgrad-train: error: cannot create the output folder {tmp_path / 'afile' / 'run'}:"
                                  f" {tmp_path / 'afile'} is a file; choose another folder")  # fmt: skip
    assert (tmp_path / "afile").read_text() == "x"


def test_data_root_that_is_a_file(tmp_path):
    (tmp_path / "root").write_text("x")
    res = subprocess.run([str(CLI), "data=power", f"data.root={tmp_path / 'root'}", "logger=none",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr and "Traceback" not in res.stderr


def test_gzip_helper_really_truncates(tmp_path):
    """The truncated-gzip case above really is a broken gzip stream."""
    root = tmp_path / "d"
    _mnist_truncated_gz(root)
    with pytest.raises((EOFError, OSError)):
        gzip.decompress((root / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
