"""Downloads against a local HTTP server on 127.0.0.1 (no other address): checksums, mirrors, atomic writes and
atomic archive extraction, then the real loaders on what arrived."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from relgrad_cli.data import DatasetError
from relgrad_cli.data import download as dl
from relgrad_cli.data.download import DOWNLOADS, Remote, download, download_file, extract_tar, file_digest
from relgrad_cli.data.maf import load_miniboone, load_power
from relgrad_cli.data.mnist import load_mnist


class Server:
    def __init__(self, folder: Path):
        self.folder = folder
        self.requests: list[str] = []
        outer = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # http.server's naming
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    srv = Server(folder)
    yield srv
    srv.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_good_file_arrives_verified(server, tmp_path):
    payload = bytes(range(256)) * 5000
    (server.folder / "blob.bin").write_bytes(payload)
    remote = Remote("blob.bin", (server.url("blob.bin"),), md5=hashlib.md5(payload).hexdigest())
    dest = download_file(remote, tmp_path / "out", progress=False)
    assert dest == tmp_path / "out" / "blob.bin" and dest.read_bytes() == payload
    assert leftovers(dest.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    # a verified file already in place is not fetched again
    n = len(server.requests)
    assert download_file(remote, tmp_path / "out", progress=False) == dest and len(server.requests) == n


def test_sha256_is_supported(server, tmp_path):
    payload = b"relgrad" * 100
    (server.folder / "f").write_bytes(payload)
    remote = Remote("f", (server.url("f"),), sha256=hashlib.sha256(payload).hexdigest())
    assert download_file(remote, tmp_path, progress=False).read_bytes() == payload
    assert file_digest(tmp_path / "f", "sha256") == remote.sha256


def test_corrupt_file_is_rejected_and_leaves_nothing(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(b"corrupted bytes")
    expected = hashlib.md5(b"the real bytes").hexdigest()
    remote = Remote("blob.bin", (server.url("blob.bin"),), md5=expected)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=f"blob.bin.*md5 {hashlib.md5(b'corrupted bytes').hexdigest()}, expected"):
        download_file(remote, out, progress=False)
    assert list(out.iterdir()) == []


def test_wrong_existing_file_is_replaced(server, tmp_path):
    payload = b"good" * 10
    (server.folder / "f").write_bytes(payload)
    (tmp_path / "f").write_bytes(b"stale")
    download_file(Remote("f", (server.url("f"),), md5=hashlib.md5(payload).hexdigest()), tmp_path, progress=False)
    assert (tmp_path / "f").read_bytes() == payload


def test_mirrors_are_tried_in_order(server, tmp_path):
    payload = b"mirror" * 50
    (server.folder / "bad").write_bytes(b"wrong")
    (server.folder / "good").write_bytes(payload)
    urls = (server.url("missing"), server.url("bad"), server.url("good"))
    remote = Remote("f.bin", urls, md5=hashlib.md5(payload).hexdigest())
    assert download_file(remote, tmp_path, progress=False).read_bytes() == payload
    assert server.requests == ["/missing", "/bad", "/good"]
    assert leftovers(tmp_path) == []
    with pytest.raises(DatasetError) as err:
        download_file(Remote("g.bin", urls[:2], md5=remote.md5), tmp_path, progress=False)
    assert "/missing: HTTP Error 404" in str(err.value) and "/bad: md5" in str(err.value)
    assert not (tmp_path / "g.bin").exists() and leftovers(tmp_path) == []


def add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_extract_tar_places_folders_atomically(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "data/power/data.npy", b"P")
        add_bytes(tar, "data/gas/ethylene_CO.pickle", b"G")
        add_bytes(tar, "data/mnist/mnist.pkl.gz", b"M")
    dest = tmp_path / "root"
    (dest / "power").mkdir(parents=True)
    (dest / "power" / "old.txt").write_text("replaced")
    placed = extract_tar(archive, dest, ["power", "gas"], prefix="data/")
    assert placed == [dest / "power", dest / "gas"]
    assert (dest / "power" / "data.npy").read_bytes() == b"P" and not (dest / "power" / "old.txt").exists()
    assert (dest / "gas" / "ethylene_CO.pickle").read_bytes() == b"G"
    assert sorted(p.name for p in dest.iterdir()) == ["gas", "power"]  # no mnist, no staging folder left


def test_extract_truncated_archive_changes_nothing(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "data/power/data.npy", np.random.default_rng(0).bytes(200_000))
    archive.write_bytes(archive.read_bytes()[:-5000])
    dest = tmp_path / "root"
    with pytest.raises(DatasetError, match="could not be unpacked"):
        extract_tar(archive, dest, ["power"], prefix="data/")
    assert list(dest.iterdir()) == []


def test_extract_refuses_unsafe_members_and_missing_folders(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "data/power/../../../escape.txt", b"x")
    with pytest.raises(DatasetError, match="unsafe"):
        extract_tar(archive, tmp_path / "root", ["power"], prefix="data/")
    assert not (tmp_path / "escape.txt").exists()
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "data/gas/x", b"x")
    with pytest.raises(DatasetError, match="no folder.*data/power"):
        extract_tar(archive, tmp_path / "root", ["power"], prefix="data/")
    assert list((tmp_path / "root").iterdir()) == []


def test_download_maf_end_to_end(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    power, miniboone = rng.normal(size=(300, 8)), rng.normal(size=(200, 43))
    archive = server.folder / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "data/power/data.npy", npy_bytes(power))
        add_bytes(tar, "data/miniboone/data.npy", npy_bytes(miniboone))
        for name in ("gas/ethylene_CO.pickle", "hepmass/1000_train.csv", "hepmass/1000_test.csv"):
            add_bytes(tar, f"data/{name}", b"placeholder")
        add_bytes(tar, "data/BSDS300/BSDS300.hdf5", b"placeholder")
        add_bytes(tar, "data/cifar10/skipped.npy", b"skipped")
    remote = Remote("data.tar.gz", (server.url("data.tar.gz"),), md5=file_digest(archive))
    monkeypatch.setitem(DOWNLOADS, "maf", ((remote,), "."))
    root = tmp_path / "root"
    placed = download("maf", root, progress=False)
    assert sorted(p.name for p in placed) == sorted(dl.MAF_FOLDERS)
    assert not (root / "data.tar.gz").exists() and not (root / "cifar10").exists()
    assert load_miniboone(root).train.shape == (162, 43)
    assert load_power(root).dim == 6
    n = len(server.requests)
    assert sorted(download("maf", root, progress=False)) == sorted(placed)  # all there: nothing fetched
    assert len(server.requests) == n


def test_download_mnist_end_to_end(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": struct.pack(">iiii", 2051, 30, 28, 28) + rng.bytes(30 * 784),
        "train-labels-idx1-ubyte.gz": struct.pack(">ii", 2049, 30) + bytes(rng.integers(0, 10, 30).tolist()),
        "t10k-images-idx3-ubyte.gz": struct.pack(">iiii", 2051, 8, 28, 28) + rng.bytes(8 * 784),
        "t10k-labels-idx1-ubyte.gz": struct.pack(">ii", 2049, 8) + bytes(8),
    }
    remotes = []
    for name, payload in files.items():
        blob = gzip.compress(payload)
        (server.folder / name).write_bytes(blob)
        remotes.append(Remote(name, (server.url(name),), md5=hashlib.md5(blob).hexdigest()))
    monkeypatch.setitem(DOWNLOADS, "mnist", (tuple(remotes), "mnist"))
    root = tmp_path / "root"
    paths = download("mnist", root, progress=False)
    assert [p.parent for p in paths] == [root / "mnist"] * 4
    data = load_mnist(root, n_val=5)
    assert (len(data.train), len(data.val), len(data.test)) == (25, 5, 8)


def test_the_table_holds_the_published_checksums():
    mnist = {r.filename: r.md5 for r in DOWNLOADS["mnist"][0]}
    assert mnist["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert mnist["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert all(r.urls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for r in DOWNLOADS["mnist"][0])
    (maf,) = DOWNLOADS["maf"][0]
    assert maf.md5 == "9b9c9b0375315ad270eba4ce80c093ab" and "zenodo.org" in maf.urls[0] and "1161203" in maf.urls[0]


def test_unknown_download_name(tmp_path):
    with pytest.raises(DatasetError, match="mnist, maf"):
        download("cifar", tmp_path)
