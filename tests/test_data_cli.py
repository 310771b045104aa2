"""``relgrad-data``: info on present / missing datasets, download through the URL table, one-line errors."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relgrad_cli import data_cli
from relgrad_cli.data.download import DOWNLOADS, Remote

REPO = Path(__file__).resolve().parents[1]


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 8, magic: int = 2051) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = struct.pack(">iiii", magic, n, 28, 28) + rng.bytes(n * 784)
        labels = struct.pack(">ii", 2049, n) + bytes(n)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


def write_miniboone(root: Path) -> None:
    (root / "miniboone").mkdir(parents=True)
    np.save(root / "miniboone" / "data.npy", np.random.default_rng(0).normal(size=(200, 43)))


def test_info_lists_every_dataset_with_paths_and_commands(tmp_path, capsys):
    assert data_cli.main(["info", "--root", str(tmp_path), "--no-load"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "power", "gas", "hepmass", "miniboone", "bsds300", "digits", "toy2d", "ica"):
        assert f"\n{name} " in out
    assert str(tmp_path / "BSDS300" / "BSDS300.hdf5") in out and str(tmp_path / "hepmass" / "1000_test.csv") in out
    assert f"relgrad-data download maf --root {tmp_path}" in out
    assert f"relgrad-data download mnist --root {tmp_path}" in out
    assert "loaded:" not in out


def test_info_on_present_files_shows_sizes_md5_and_shapes(tmp_path, capsys):
    write_miniboone(tmp_path)
    assert data_cli.main(["info", "miniboone", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "miniboone" / "data.npy"
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert "miniboone  present" in out and f"{path}" in out and f"md5 {md5}" in out and "KiB" in out
    assert "loaded: train 162×43, val 18×43, test 20×43 (float32)" in out
    assert "power" not in out  # only the named dataset


def test_info_mnist_compares_with_the_official_md5(tmp_path, capsys):
    write_mnist(tmp_path / "mnist")
    assert data_cli.main(["info", "mnist", "--root", str(tmp_path), "--no-load"]) == 0
    out = capsys.readouterr().out
    assert "mnist      present" in out and out.count("DIFFERS from the official") == 4


def test_info_exit_1_when_a_present_dataset_fails_to_load(tmp_path, capsys):
    write_mnist(tmp_path / "mnist", magic=2049)
    assert data_cli.main(["info", "mnist", "--root", str(tmp_path)]) == 1
    assert "load failed:" in capsys.readouterr().out


def test_info_loads_bundled_digits(tmp_path, capsys):
    assert data_cli.main(["info", "digits", "--root", str(tmp_path)]) == 0
    assert "train 1257×64, val 270×64, test 270×64" in capsys.readouterr().out


def test_root_from_environment(tmp_path, capsys, monkeypatch):
    write_miniboone(tmp_path)
    monkeypatch.setenv("RELGRAD_DATA", str(tmp_path))
    assert data_cli.main(["info", "miniboone", "--no-load"]) == 0
    assert f"data root: {tmp_path}" in capsys.readouterr().out
    monkeypatch.delenv("RELGRAD_DATA")
    monkeypatch.chdir(tmp_path)
    assert data_cli.main(["info", "miniboone", "--no-load"]) == 0
    assert f"data root: {tmp_path / 'data'} (does not exist yet)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["info", "nosuch"], "unknown dataset 'nosuch'"),
        (["info", "--root", "FILE"], "is a file, not a folder"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_2(tmp_path, capsys, argv, fragment):
    (tmp_path / "FILE").write_text("x")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    assert data_cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relgrad-data: error: ") and fragment in lines[0]
    assert "Traceback" not in captured.err


def test_download_through_the_table(tmp_path, capsys, monkeypatch):
    """file:// URLs stand in for the mirrors: a good file, then a corrupted one (exit 2, nothing left behind)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "blob.gz").write_bytes(b"payload")
    good = Remote("blob.gz", ((served / "blob.gz").as_uri(),), md5=hashlib.md5(b"payload").hexdigest())
    monkeypatch.setitem(DOWNLOADS, "mnist", ((good,), "mnist"))
    root = tmp_path / "root"
    assert data_cli.main(["download", "mnist", "--root", str(root), "--no-progress"]) == 0
    assert (root / "mnist" / "blob.gz").read_bytes() == b"payload"
    assert f"ready: {root / 'mnist' / 'blob.gz'}" in capsys.readouterr().out
    bad = Remote("other.gz", good.urls, md5="0" * 32)
    monkeypatch.setitem(DOWNLOADS, "mnist", ((bad,), "mnist"))
    assert data_cli.main(["download", "mnist", "--root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relgrad-data: error: could not fetch a verified other.gz") and err.count("\n") == 1
    assert sorted(p.name for p in (root / "mnist").iterdir()) == ["blob.gz"]


def test_download_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit) as exc:
        data_cli.main(["download", "cifar"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nfrom relgrad_cli import data_cli\n"
        "try:\n    data_cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'h5py', 'sklearn', 'scipy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "info" in result.stdout and "download" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
