"""The MAF-suite loaders on small files in each real format (.npy, pandas pickle, CSV with header, HDF5).

Each loader is compared with a reference written here step by step in the MAF authors' own style (in-place
RandomState shuffle, np.delete, pandas statistics, collections.Counter), and its individual steps are checked.
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.data.maf import load_bsds300, load_gas, load_hepmass, load_miniboone, load_power, read_gas_frame


def tail_split(data):
    n_test = int(0.1 * data.shape[0])
    test, data = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * data.shape[0])
    return data[:-n_val], data[-n_val:], test


def close(a, b):
    np.testing.assert_allclose(a, np.asarray(b, dtype=np.float64), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------ POWER


def write_power(root: Path, n: int = 1000, cols: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = np.column_stack(
        [
            rng.gamma(2.0, 0.5, n),  # active power
            1000.0 + rng.normal(0, 1, n),  # reactive power (dropped)
            rng.normal(240.0, 3.0, n),  # voltage
            -1000.0 + rng.normal(0, 1, n),  # intensity (dropped)
            rng.integers(0, 3, n),  # sub-meterings (integers: ties broken by the noise)
            rng.integers(0, 2, n),
            rng.integers(0, 20, n),
            np.arange(n) % 1440,  # time of day, never jittered
        ]
    ).astype(np.float64)[:, :cols]
    (root / "power").mkdir(parents=True)
    np.save(root / "power" / "data.npy", data)
    return data


def power_reference(data):
    rng = np.random.RandomState(42)
    data = data.copy()
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    data = data + np.hstack((gap_noise, voltage_noise, sm_noise, np.zeros((n, 1))))
    train, val, test = tail_split(data)
    both = np.vstack((train, val))
    mu, s = both.mean(axis=0), both.std(axis=0)
    return [(x - mu) / s for x in (train, val, test)], data


def test_power(tmp_path):
    raw = write_power(tmp_path)
    data = load_power(tmp_path)
    assert (data.train.shape, data.val.shape, data.test.shape) == ((810, 6), (90, 6), (100, 6))
    assert data.dim == 6 and data.train.dtype == np.float32
    expected, noisy = power_reference(raw)
    for got, want in zip(data.splits().values(), expected, strict=True):
        close(got, want)
    # the dropped columns were 1 and 3 (their ±1000 offsets are gone), the time column got no noise
    assert not np.any(np.abs(noisy[:, :5]) > 500)
    shuffled_time = raw[np.random.RandomState(42).permutation(len(raw)), 7]
    np.testing.assert_array_equal(noisy[:, 5], shuffled_time)
    # standardized on train ∪ validation, not on test
    both = np.vstack([data.train, data.val]).astype(np.float64)
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(both.std(axis=0), 1.0, atol=1e-5)
    # loading twice gives the same arrays (fixed RandomState(42)) and does not change the file
    np.testing.assert_array_equal(load_dataset("power", tmp_path).train, data.train)
    np.testing.assert_array_equal(np.load(tmp_path / "power" / "data.npy"), raw)


def test_power_wrong_column_count(tmp_path):
    write_power(tmp_path, cols=7)
    with pytest.raises(DatasetError, match=r"power/data\.npy has shape \(1000, 7\).*N×8"):
        load_power(tmp_path)


@pytest.mark.parametrize(
    "name,loader,rel",
    [
        ("power", load_power, "power/data.npy"),
        ("gas", load_gas, "gas/ethylene_CO.pickle"),
        ("hepmass", load_hepmass, "hepmass/1000_train.csv"),
        ("miniboone", load_miniboone, "miniboone/data.npy"),
        ("bsds300", load_bsds300, "BSDS300/BSDS300.hdf5"),
    ],
)
def test_missing_file_names_the_path_and_the_command(tmp_path, name, loader, rel):
    with pytest.raises(DatasetError) as err:
        loader(tmp_path)
    assert str(tmp_path / rel) in str(err.value) and "relgrad-data download maf" in str(err.value)


# -------------------------------------------------------------------------------------------------------------- GAS


def gas_frame(n: int = 2000) -> pd.DataFrame:
    """Time, Meth, Eth and 16 sensors: a triple of near-copies (two dropped), six pairs (one of each dropped), and
    one column correlated 0.95 with another (kept): 8 survive. Names are unique here."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(n, 8))
    cols: dict[str, np.ndarray] = {"Time": np.arange(n, dtype=float), "Meth": rng.random(n), "Eth": rng.random(n)}

    def twin(x):
        return x + 0.05 * rng.normal(size=n)  # correlation ≈ 0.9988

    cols["s0"], cols["s1"], cols["s2"] = base[:, 0], twin(base[:, 0]), twin(base[:, 0])  # triple → s2 kept
    for k in range(1, 7):  # pairs → the second of each kept
        cols[f"p{k}a"], cols[f"p{k}b"] = base[:, k], twin(base[:, k])
    cols["solo"] = 0.95 * base[:, 1] + np.sqrt(1 - 0.95**2) * base[:, 7]  # corr ≈ 0.95 with p1*: kept
    return pd.DataFrame(cols)


GAS_KEPT = ["s2", "p1b", "p2b", "p3b", "p4b", "p5b", "p6b", "solo"]


def gas_reference(frame: pd.DataFrame):
    data = frame.drop(columns=["Meth", "Eth", "Time"])
    while True:
        b = (data.corr() > 0.98).to_numpy().sum(axis=1)
        if not np.any(b > 1):
            break
        data = data.drop(columns=data.columns[np.where(b > 1)[0][0]])
    data = (data - data.mean()) / data.std()
    return list(data.columns), tail_split(data.to_numpy())


def test_gas(tmp_path):
    frame = gas_frame()
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    data = load_gas(tmp_path)
    kept, expected = gas_reference(frame)
    assert kept == GAS_KEPT
    assert (data.train.shape, data.val.shape, data.test.shape) == ((1620, 8), (180, 8), (200, 8))
    for got, want in zip(data.splits().values(), expected, strict=True):
        close(got, want)
    # standardized over ALL rows with the sample std (ddof 1); splits are the tail, in file order
    everything = np.vstack(list(data.splits().values())).astype(np.float64)
    np.testing.assert_allclose(everything.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(everything.std(axis=0, ddof=1), 1.0, atol=1e-5)
    raw_last = frame["s2"].to_numpy()[-200:]
    close(data.test[:, 0], (raw_last - frame["s2"].mean()) / frame["s2"].std())


def test_gas_missing_column(tmp_path):
    (tmp_path / "gas").mkdir()
    gas_frame().drop(columns=["Eth"]).to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    with pytest.raises(DatasetError, match=r"ethylene_CO\.pickle has no column\(s\) Eth"):
        load_gas(tmp_path)


def test_gas_not_a_pickle(tmp_path):
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas" / "ethylene_CO.pickle").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="could not be unpickled"):
        load_gas(tmp_path)


def test_gas_pickle_from_an_old_pandas_layout(tmp_path):
    """A pickle naming classes where pandas < 0.24 kept them (pandas.indexes.base, pandas.core.internals)."""
    frame = gas_frame(300)
    blob = pickle.dumps(frame, protocol=2)
    for new, old in [
        (b"cpandas.core.indexes.base\n_new_Index\n", b"cpandas.indexes.base\n_new_Index\n"),
        (b"cpandas.core.internals.managers\nBlockManager\n", b"cpandas.core.internals\nBlockManager\n"),
    ]:
        assert new in blob
        blob = blob.replace(new, old)
    path = tmp_path / "old.pickle"
    path.write_bytes(blob)
    with pytest.raises(ModuleNotFoundError):
        pd.read_pickle(path)
    pd.testing.assert_frame_equal(read_gas_frame(path), frame, check_column_type=False)


# ---------------------------------------------------------------------------------------------------------- HEPMASS

N_FEATURES = 27
DISCRETE = {5: 3, 9: 2, 13: 2, 17: 2, 21: 2}  # column → number of distinct values (jet count, b-tags)
MIN_REPEATS_6 = 24  # a continuous feature whose minimum occurs 6 times: dropped (> 5)
MIN_REPEATS_5 = 25  # minimum occurs exactly 5 times: kept
MODE_NOT_MIN = 26  # a value repeated 40 times that is NOT the minimum: kept (MAF looks at the minimum only)


def hepmass_features(rng, n):
    x = rng.normal(size=(n, N_FEATURES))
    for col, k in DISCRETE.items():
        x[:, col] = rng.integers(0, k, n)
    x[:6, MIN_REPEATS_6] = x[:, MIN_REPEATS_6].min() - 1.0
    x[:5, MIN_REPEATS_5] = x[:, MIN_REPEATS_5].min() - 1.0
    x[10:50, MODE_NOT_MIN] = 0.0
    return x


def write_hepmass(root: Path, n_train=600, n_test=300, extra_test_column=True):
    rng = np.random.default_rng(2)
    header = ["# label"] + [f"f{i}" for i in range(N_FEATURES)]
    frames = {}
    for name, n, extra in (("train", n_train, False), ("test", n_test, extra_test_column)):
        label = (np.arange(n) % 2 == 0).astype(float)  # half signal
        x = np.full((n, N_FEATURES), 1e4)  # background rows: would wreck the statistics if kept
        x[label == 1] = hepmass_features(rng, n // 2)
        table = np.column_stack([label, x])
        columns = header
        if extra:
            table = np.column_stack([table, rng.choice([500.0, 750.0, 1000.0], n)])
            columns = header + ["mass"]
        frames[name] = pd.DataFrame(table, columns=columns)
    (root / "hepmass").mkdir(parents=True)
    for name, frame in frames.items():
        frame.to_csv(root / "hepmass" / f"1000_{name}.csv", index=False)
    return frames


def hepmass_reference(frames):
    train, test = frames["train"], frames["test"]
    train = train[train[train.columns[0]] == 1].drop(columns=train.columns[0])
    test = test[test[test.columns[0]] == 1].drop(columns=test.columns[0])
    test = test.drop(columns=test.columns[-1])
    mu, s = train.mean(), train.std()
    train, test = ((train - mu) / s).to_numpy(), ((test - mu) / s).to_numpy()
    remove = [i for i, f in enumerate(train.T) if [v for _, v in sorted(Counter(f).items())][0] > 5]
    keep = [i for i in range(train.shape[1]) if i not in remove]
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * train.shape[0])
    return remove, (train[:-n_val], train[-n_val:], test)


def test_hepmass(tmp_path):
    frames = write_hepmass(tmp_path)
    data = load_hepmass(tmp_path)
    removed, expected = hepmass_reference(frames)
    assert removed == [5, 9, 13, 17, 21, MIN_REPEATS_6]
    assert (data.train.shape, data.val.shape, data.test.shape) == ((270, 21), (30, 21), (150, 21))
    for got, want in zip(data.splits().values(), expected, strict=True):
        close(got, want)
    # statistics from the signal training rows (train ∪ validation), sample std
    both = np.vstack([data.train, data.val]).astype(np.float64)
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(both.std(axis=0, ddof=1), 1.0, atol=1e-5)
    assert np.abs(data.test).max() < 10  # no background row (1e4) slipped in


def test_hepmass_test_table_without_its_extra_column(tmp_path):
    write_hepmass(tmp_path, extra_test_column=False)
    with pytest.raises(DatasetError, match=r"1000_test\.csv has 28 columns but .*1000_train\.csv has 28"):
        load_hepmass(tmp_path)


def test_hepmass_wrong_feature_count(tmp_path):
    frames = write_hepmass(tmp_path)
    frames["train"].drop(columns=["f0"]).to_csv(tmp_path / "hepmass" / "1000_train.csv", index=False)
    frames["test"].drop(columns=["f0"]).to_csv(tmp_path / "hepmass" / "1000_test.csv", index=False)
    with pytest.raises(DatasetError, match=r"1000_train\.csv.*gave 20 columns, expected 21 for HEPMASS"):
        load_hepmass(tmp_path)


# -------------------------------------------------------------------------------------------------------- MINIBOONE


def test_miniboone(tmp_path):
    raw = np.random.default_rng(3).normal(size=(500, 43)) * np.arange(1, 44) + np.arange(43)
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    data = load_miniboone(tmp_path)
    assert (data.train.shape, data.val.shape, data.test.shape) == ((405, 43), (45, 43), (50, 43))
    train, val, test = tail_split(raw)
    both = np.vstack((train, val))
    mu, s = both.mean(axis=0), both.std(axis=0)
    for got, want in zip(data.splits().values(), (train, val, test), strict=True):
        close(got, (want - mu) / s)


def test_miniboone_wrong_columns_and_constant_column(tmp_path):
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", np.zeros((500, 42)))
    with pytest.raises(DatasetError, match=r"miniboone/data\.npy has shape \(500, 42\)"):
        load_miniboone(tmp_path)
    raw = np.random.default_rng(0).normal(size=(500, 43))
    raw[:, 7] = 1.0
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    with pytest.raises(DatasetError, match=r"column\(s\) \[7\] are constant"):
        load_miniboone(tmp_path)


# ---------------------------------------------------------------------------------------------------------- BSDS300


def write_bsds(root: Path, splits=("train", "validation", "test"), dim=63) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    sizes = {"train": 40, "validation": 10, "test": 20}
    arrays = {name: rng.normal(size=(sizes[name], dim)).astype(np.float32) for name in splits}
    (root / "BSDS300").mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array)
    return arrays


def test_bsds300(tmp_path):
    arrays = write_bsds(tmp_path)
    data = load_bsds300(tmp_path)
    np.testing.assert_array_equal(data.train, arrays["train"])
    np.testing.assert_array_equal(data.val, arrays["validation"])
    np.testing.assert_array_equal(data.test, arrays["test"])
    assert data.dim == 63


def test_bsds300_missing_split_and_wrong_dim(tmp_path):
    write_bsds(tmp_path, splits=("train", "test"))
    with pytest.raises(DatasetError, match=r"BSDS300\.hdf5 has no dataset\(s\) validation"):
        load_bsds300(tmp_path)
    write_bsds(tmp_path, dim=64)
    with pytest.raises(DatasetError, match=r"BSDS300\.hdf5: dataset 'train' has shape \(40, 64\)"):
        load_bsds300(tmp_path)
    (tmp_path / "BSDS300" / "BSDS300.hdf5").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="could not be opened as HDF5"):
        load_bsds300(tmp_path)


def test_bsds300_damaged_chunk(tmp_path):
    """A file whose header opens but whose compressed chunks are damaged names the file and the split."""
    path = tmp_path / "BSDS300" / "BSDS300.hdf5"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for name, n in (("train", 20000), ("validation", 100), ("test", 100)):
            f.create_dataset(name, data=rng.random((n, 63), dtype=np.float32), chunks=(min(n, 1000), 63),
                             compression="gzip")  # fmt: skip
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 5000] = bytes(5000)
    path.write_bytes(bytes(raw))
    with pytest.raises(
        DatasetError, match=r"BSDS300\.hdf5: dataset 'train' could not be read .*relgrad-data download maf"
    ):
        load_bsds300(tmp_path)
