"""Duplicate rows across and within splits, the distinct-row error bar, and the optional data root."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_data_mnist import NAMES, idx_bytes, write  # the IDX writer of the MNIST loader's tests

from relgrad_cli.data import DatasetError, load_dataset
from relgrad_cli.data import duplicates as dup
from relgrad_cli.data.base import as_root
from relgrad_cli.data.duplicates import (
    DUPLICATE_KEYS,
    dataset_duplicates,
    distinct_rows_mask,
    distinct_test_mask,
    duplicates_warning,
    find_duplicates,
)
from relgrad_cli.metrics import mean_and_2se, mean_and_2se_distinct


def brute_force(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict[str, int]:
    """The same counts from Python sets of row bytes."""
    rows = {name: [r.tobytes() for r in np.ascontiguousarray(a).reshape(len(a), -1)]
            for name, a in (("train", train), ("val", val), ("test", test))}  # fmt: skip
    sets = {name: set(r) for name, r in rows.items()}
    return {
        "val_in_train": sum(r in sets["train"] for r in rows["val"]),
        "test_in_train": sum(r in sets["train"] for r in rows["test"]),
        "test_in_val": sum(r in sets["val"] for r in rows["test"]),
        "test_repeated": len(rows["test"]) - len(sets["test"]),
        "train_repeated": len(rows["train"]) - len(sets["train"]),
        "val_repeated": len(rows["val"]) - len(sets["val"]),
        "train_rows": len(train),
        "val_rows": len(val),
        "test_rows": len(test),
        "test_distinct": len(sets["test"]),
    }


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val, test = rng.standard_normal((50, 4)), rng.standard_normal((20, 4)), rng.standard_normal((15, 4))
    train[31] = train[30]  # 1 training repeat
    val[3] = val[5] = train[7]  # 2 validation rows in train (and 1 validation repeat)
    val[9] = train[0]  # a 3rd validation row in train
    test[0] = val[1]  # 1 test row in validation
    test[4] = test[10] = train[2]  # 2 test rows in train (1 of them a test repeat)
    test[6] = test[8] = test[1]  # 2 more test repeats
    return train, val, test


def test_planted_copies_give_exactly_the_planted_counts():
    train, val, test = planted()
    counts = find_duplicates(train, val, test)
    assert counts == {
        "val_in_train": 3,
        "test_in_train": 2,
        "test_in_val": 1,
        "test_repeated": 3,
        "train_repeated": 1,
        "val_repeated": 1,
        "train_rows": 50,
        "val_rows": 20,
        "test_rows": 15,
        "test_distinct": 12,
    }
    assert counts == brute_force(train, val, test)
    mask = distinct_rows_mask(test)
    assert mask.sum() == 12 and not mask[[8, 10, 6]].any() and mask[[0, 1, 4]].all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8, np.int16])
@pytest.mark.parametrize("width", [1, 3, 8])
def test_counts_match_brute_force_on_many_collisions(dtype, width):
    rng = np.random.default_rng(width)
    parts = [rng.integers(0, 2, size=(n, width)).astype(dtype) for n in (300, 60, 80)]  # few distinct rows
    assert find_duplicates(*parts) == brute_force(*parts)


def test_hash_collisions_fall_back_to_exact_grouping(monkeypatch):
    train, val, test = planted(1)
    monkeypatch.setattr(dup, "_hash_rows", lambda words: np.zeros(len(words), dtype=np.uint64))
    assert find_duplicates(train, val, test) == brute_force(train, val, test)
    expected = np.zeros(len(test), bool)
    expected[np.unique(test, axis=0, return_index=True)[1]] = True
    np.testing.assert_array_equal(distinct_rows_mask(test), expected)


def test_no_duplicates_gives_zeros_and_no_warning():
    rng = np.random.default_rng(3)
    counts = find_duplicates(*(rng.standard_normal((n, 5)) for n in (40, 10, 10)))
    assert all(counts[k] == 0 for k in DUPLICATE_KEYS) and counts["test_distinct"] == 10
    assert duplicates_warning("toy", counts) is None
    assert distinct_rows_mask(rng.standard_normal((10, 5))).all()


def test_equality_is_exact_bytes_and_needs_one_dtype():
    a = np.array([[0.0, 1.0]])
    counts = find_duplicates(a, np.array([[-0.0, 1.0]]), np.array([[0.0, np.nextafter(1.0, 2.0)]]))
    assert all(counts[k] == 0 for k in DUPLICATE_KEYS)  # -0.0 is not 0.0 bytewise, nor 1 its neighbour
    assert find_duplicates(a, a.copy(), a.copy())["test_in_train"] == 1
    with pytest.raises(ValueError, match="dtype"):
        find_duplicates(a, a.astype(np.float32), a)
    with pytest.raises(ValueError, match="width"):
        find_duplicates(a, np.zeros((1, 3)), a)


def test_distinct_mask_and_error_bar_match_brute_force():
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 6, size=(500, 2)).astype(np.float32)  # 36 possible rows: many repeats
    values = rng.standard_normal(500)
    mask = distinct_rows_mask(rows)
    seen, first = set(), []
    for i, r in enumerate(rows):
        if r.tobytes() not in seen:
            seen.add(r.tobytes())
            first.append(i)
    np.testing.assert_array_equal(np.flatnonzero(mask), first)
    v = values[first]
    mean, two_se = mean_and_2se_distinct(values, mask)
    assert mean == pytest.approx(sum(v) / len(v))
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
    assert two_se == pytest.approx(2 * sd / math.sqrt(len(v)))
    # the plain error bar is unchanged and uses every row
    plain = (pytest.approx(values.mean()), pytest.approx(2 * values.std(ddof=1) / math.sqrt(500)))
    assert mean_and_2se(values) == plain
    with pytest.raises(ValueError, match="mask"):
        mean_and_2se_distinct(values, mask[:-1])


def test_warning_names_the_counts_and_totals():
    counts = {k: 0 for k in DUPLICATE_KEYS}
    counts.update(val_in_train=12, test_repeated=3, train_rows=1257, val_rows=270, test_rows=270, test_distinct=267)
    text = duplicates_warning("digits", counts)
    assert text is not None and "\n" not in text and text.startswith("digits: ")
    assert "12 of 270 validation rows copy a training row" in text
    assert "3 of 270 test rows repeat an earlier test row" in text
    assert "validation cannot catch overfitting" in text and "267 distinct test rows" in text
    one = duplicates_warning("power", {**counts, "val_in_train": 0, "test_repeated": 0, "test_in_train": 1})
    assert one == ("power: 1 of 270 test rows copies a training row — the test log-likelihood includes rows seen in "
                   "training or model selection.")  # fmt: skip
    everything = duplicates_warning("x", find_duplicates(*planted()))
    for part in (
        "3 of 20 validation rows copy a training row",
        "2 of 15 test rows copy a training row",
        "1 of 15 test rows copies a validation row",
        "3 of 15 test rows repeat an earlier test row",
        "1 of 20 validation rows repeats",
        "1 of 50 training rows repeats",
        "12 distinct test rows",
    ):
        assert part in everything


def write_mnist(folder: Path, train_images: np.ndarray, test_images: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": train_images,
        "train_labels": rng.integers(0, 10, size=len(train_images)),
        "test_images": test_images,
        "test_labels": rng.integers(0, 10, size=len(test_images)),
    }
    for key, array in arrays.items():
        write(folder / NAMES[key], idx_bytes(array), gz=True)


def test_mnist_files_with_repeated_images(tmp_path, monkeypatch):
    """Copies of an image are unequal rows after dequantization; compared on pixel levels they are found."""
    rng = np.random.default_rng(5)
    d = rng.integers(0, 256, size=(52, 28, 28))  # distinct images
    e = rng.integers(0, 256, size=(14, 28, 28))
    train_all = np.concatenate([d[:45], d[:5], d[45:52], d[10:13]])  # 50 train (5 repeats), 10 val (3 in train)
    test = np.concatenate([e, d[20:21], d[46:47], e[[0, 0, 1]], d[20:21]])  # 20 test rows
    write_mnist(tmp_path / "mnist", train_all, test)
    ds = load_dataset("mnist", tmp_path, n_val=10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 20)
    raw = find_duplicates(ds.train, ds.val, ds.test)
    assert all(raw[k] == 0 for k in DUPLICATE_KEYS)  # the dequantization noise hides every copy
    counts = dataset_duplicates(ds)
    assert {k: counts[k] for k in DUPLICATE_KEYS} == {
        "val_in_train": 3,
        "test_in_train": 2,
        "test_in_val": 1,
        "test_repeated": 4,
        "train_repeated": 5,
        "val_repeated": 0,
    }
    assert counts["test_distinct"] == 16 and distinct_test_mask(ds).sum() == 16
    assert not distinct_test_mask(ds)[[16, 17, 18, 19]].any()
    assert "16 distinct test rows" in duplicates_warning("mnist", counts)
    # the same files through the default data root
    monkeypatch.setenv("RELGRAD_DATA", str(tmp_path))
    np.testing.assert_array_equal(load_dataset("mnist", None, n_val=10).test, ds.test)


def test_digits_have_no_duplicate_images():
    ds = load_dataset("digits")
    counts = dataset_duplicates(ds)
    assert all(counts[k] == 0 for k in DUPLICATE_KEYS) and duplicates_warning("digits", counts) is None


def test_datasets_without_files_need_no_root(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("RELGRAD_DATA", str(not_a_folder))  # never looked at
    digits = load_dataset("digits", None)
    assert digits.train.shape == (1257, 64)
    patches = load_dataset("patches", None, n_train=20, n_val=5, n_test=5)
    assert (patches.train.shape, patches.test.shape) == ((20, 63), (5, 63))
    assert load_dataset("toy2d", None, n_train=10).train.shape == (10, 2)


def test_datasets_with_files_use_the_default_root(tmp_path, monkeypatch):
    empty = tmp_path.resolve() / "empty"
    empty.mkdir()
    monkeypatch.setenv("RELGRAD_DATA", str(empty))
    with pytest.raises(DatasetError, match="power/data.npy") as err:
        load_dataset("power", None)
    assert str(empty / "power" / "data.npy") in str(err.value) and f"--root {empty}" in str(err.value)
    with pytest.raises(DatasetError, match=f"--root {empty}"):
        load_dataset("mnist", None)


def test_as_root_default(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELGRAD_DATA", str(tmp_path / "elsewhere"))
    assert as_root(None) == as_root() == tmp_path / "elsewhere"
    monkeypatch.setenv("RELGRAD_DATA", "")
    assert as_root(None) == tmp_path / "data"
    monkeypatch.delenv("RELGRAD_DATA")
    assert as_root(None) == tmp_path / "data"
    assert as_root("x") == tmp_path / "x"
