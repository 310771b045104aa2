"""Duplicate rows within and across the train/validation/test splits, and the distinct test rows.

Two rows are duplicates when their bytes are equal (same dtype and width; so 0.0 and -0.0 differ, and a NaN equals
a NaN with the same bit pattern). Every row is hashed to 64 bits with vectorized numpy integer arithmetic over its
bytes (viewed as 8-, 4-, 2- or 1-byte words); rows with equal hashes are then compared byte by byte, so the counts
are exact, and should two different rows ever share a hash, the grouping falls back to ``np.unique`` on the raw
bytes. A 60 000×784 float32 array takes a fraction of a second.

Image data sets are stored dequantized (``k + U(0, 1)`` per pixel, then logit), so two copies of one image never
give equal rows. :func:`comparable_splits` therefore compares image data on the integer pixel levels recovered from
logit space, ``k = ⌊levels·(sigmoid(x) − α)/(1 − 2α)⌋``. That recovery is exact except when the dequantization
noise of a pixel fell within float32 rounding (about 1e-5 of a level) of a level boundary: about one MNIST image in
1 500 reads one level off in one pixel, which can hide that copy, never invent one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .base import Dataset

_SEED = np.uint64(0x243F6A8885A308D3)
_MULT = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
#: equal-hash row pairs compared at a time
_PAIR_BLOCK = 1 << 16
#: rows of logit-space image data converted to pixel levels at a time (float64 temporaries)
_PIXEL_BLOCK = 8192


def _row_words(rows: np.ndarray) -> np.ndarray:
    """The bytes of each row as an N×W array of unsigned words (the widest of 8, 4, 2, 1 bytes dividing a row)."""
    a = np.ascontiguousarray(rows)
    if a.ndim == 0:
        raise ValueError("rows must have a leading axis of rows")
    a = a.reshape(len(a), -1)
    raw = a.view(np.uint8).reshape(len(a), a.shape[1] * a.dtype.itemsize)
    for width in (8, 4, 2):
        if raw.shape[1] % width == 0 and raw.shape[1]:
            return raw.view(f"<u{width}")
    return raw


def _hash_rows(words: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row of an N×W word array (xor, multiply, xor-shift per word)."""
    h = np.full(len(words), _SEED, dtype=np.uint64)
    for j in range(words.shape[1]):
        np.bitwise_xor(h, words[:, j], out=h, casting="unsafe")
        np.multiply(h, _MULT, out=h)
        np.bitwise_xor(h, h >> _SHIFT, out=h)
    return h


def _take(parts: list[np.ndarray], offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (positions in the concatenation of ``parts``) without concatenating the parts."""
    out = np.empty((len(index), parts[0].shape[1]), dtype=parts[0].dtype)
    which = np.searchsorted(offsets, index, side="right") - 1
    for p, part in enumerate(parts):
        sel = which == p
        if sel.any():
            out[sel] = part[index[sel] - offsets[p]]
    return out


def _group_ids(*arrays: np.ndarray) -> tuple[list[np.ndarray], int, np.ndarray]:
    """Group the rows of all arrays by their bytes.

    Returns, per array, an int64 id per row (equal ids exactly when the rows' bytes are equal, across arrays too;
    ids run 0..G−1), the number of groups G, and the position (in the concatenation of the arrays) of the first
    row of each group.
    """
    parts = [_row_words(a) for a in arrays]
    for a, part in zip(arrays[1:], parts[1:], strict=True):
        if np.asarray(a).dtype != np.asarray(arrays[0]).dtype or part.shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"rows of dtype {np.asarray(a).dtype} and width {part.shape[1]} words cannot be compared with rows "
                f"of dtype {np.asarray(arrays[0]).dtype} and width {parts[0].shape[1]} words"
            )
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    hashes = np.concatenate([_hash_rows(p) for p in parts])
    order = np.argsort(hashes, kind="stable")  # stable: the first row of each group comes first
    sorted_hashes = hashes[order]
    same = sorted_hashes[1:] == sorted_hashes[:-1]
    pairs = np.flatnonzero(same)
    exact = True
    for start in range(0, len(pairs), _PAIR_BLOCK):
        k = pairs[start : start + _PAIR_BLOCK]
        if not np.array_equal(_take(parts, offsets, order[k]), _take(parts, offsets, order[k + 1])):
            exact = False  # two different rows share a hash: group on the raw bytes instead
            break
    if exact:
        first = np.ones(len(order), dtype=bool)
        first[1:] = ~same
        ids = np.empty(len(order), dtype=np.int64)
        ids[order] = np.cumsum(first) - 1
        firsts = order[first]
    else:
        whole = np.concatenate(parts)
        void = whole.view(np.dtype((np.void, whole.shape[1] * whole.itemsize))).ravel()
        _, firsts, ids = np.unique(void, return_index=True, return_inverse=True)
        ids = ids.astype(np.int64).ravel()
    return [ids[offsets[i] : offsets[i + 1]] for i in range(len(parts))], len(firsts), firsts


def _present(ids: np.ndarray, n_groups: int) -> np.ndarray:
    seen = np.zeros(n_groups, dtype=bool)
    seen[ids] = True
    return seen


def _repeats(ids: np.ndarray, n_groups: int) -> int:
    return int(len(ids) - np.count_nonzero(_present(ids, n_groups)))


def find_duplicates(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict[str, int]:
    """Count rows that are byte-for-byte copies of other rows, within and across the three splits.

    Returns a dict of ints:
    ``val_in_train`` validation rows equal to some training row; ``test_in_train`` and ``test_in_val`` test rows
    equal to some training / validation row (a test row can count in both); ``train_repeated``, ``val_repeated``,
    ``test_repeated`` rows of a split that copy an earlier row of the same split (rows minus distinct rows);
    ``train_rows``, ``val_rows``, ``test_rows`` the split sizes; ``test_distinct`` the number of distinct test rows.
    All three arrays need the same dtype and row width (rows are N×D, or N×… flattened per row).
    """
    (id_train, id_val, id_test), n_groups, _ = _group_ids(train, val, test)
    in_train, in_val = _present(id_train, n_groups), _present(id_val, n_groups)
    test_repeated = _repeats(id_test, n_groups)
    return {
        "val_in_train": int(np.count_nonzero(in_train[id_val])),
        "test_in_train": int(np.count_nonzero(in_train[id_test])),
        "test_in_val": int(np.count_nonzero(in_val[id_test])),
        "test_repeated": test_repeated,
        "train_repeated": _repeats(id_train, n_groups),
        "val_repeated": _repeats(id_val, n_groups),
        "train_rows": len(id_train),
        "val_rows": len(id_val),
        "test_rows": len(id_test),
        "test_distinct": len(id_test) - test_repeated,
    }


#: the keys of :func:`find_duplicates` that count duplicates (the others are sizes)
DUPLICATE_KEYS = ("val_in_train", "test_in_train", "test_in_val", "test_repeated", "train_repeated", "val_repeated")


def distinct_rows_mask(rows: np.ndarray) -> np.ndarray:
    """Boolean mask over the rows: True at the first occurrence of each distinct row (byte equality), in row order."""
    (ids,), _, firsts = _group_ids(rows)
    mask = np.zeros(len(ids), dtype=bool)
    mask[firsts] = True
    return mask


def pixel_levels(x: np.ndarray, alpha: float, levels: int) -> np.ndarray:
    """Integer pixel levels k ∈ {0..levels−1} behind logit-space image rows x = logit(α + (1 − 2α)(k + ε)/levels):
    k = ⌊levels·(sigmoid(x) − α)/(1 − 2α)⌋, clipped to the valid levels (uint8, or uint16 above 256 levels)."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.uint8 if levels <= 256 else np.uint16)
    for start in range(0, len(x), _PIXEL_BLOCK):
        block = x[start : start + _PIXEL_BLOCK].astype(np.float64)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-block))
        v = np.floor(levels * (p - alpha) / (1.0 - 2.0 * alpha))
        out[start : start + _PIXEL_BLOCK] = np.clip(v, 0, levels - 1)
    return out


def comparable_splits(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (train, val, test) rows to compare for duplicates: for image data (``levels`` and ``logit_alpha`` set)
    the integer pixel levels (:func:`pixel_levels`), since dequantization noise makes every loaded row unique;
    otherwise the loaded arrays themselves."""
    if ds.levels is not None and ds.logit_alpha is not None:
        return tuple(pixel_levels(a, ds.logit_alpha, ds.levels) for a in (ds.train, ds.val, ds.test))  # type: ignore[return-value]
    return ds.train, ds.val, ds.test


def dataset_duplicates(ds: Dataset) -> dict[str, int]:
    """:func:`find_duplicates` on :func:`comparable_splits` of a loaded data set."""
    return find_duplicates(*comparable_splits(ds))


def distinct_test_mask(ds: Dataset) -> np.ndarray:
    """:func:`distinct_rows_mask` of the test split, compared as in :func:`comparable_splits`."""
    if ds.levels is not None and ds.logit_alpha is not None:
        return distinct_rows_mask(pixel_levels(ds.test, ds.logit_alpha, ds.levels))
    return distinct_rows_mask(ds.test)


def _of(count: int, total: int | None, what: str) -> str:
    """Like "3 of 270 test rows" ("3 test rows" when the total is unknown)."""
    if total is not None:
        return f"{count} of {total} {what} rows"
    return f"{count} {what} {'row' if count == 1 else 'rows'}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def duplicates_warning(name: str, counts: Mapping[str, int]) -> str | None:
    """One line for the log when :func:`find_duplicates` found copies; None when every duplicate count is 0.

    E.g. "digits: 12 of 270 validation rows copy a training row; 3 of 270 test rows repeat an earlier test row —
    validation cannot catch overfitting on the copied rows and the test log-likelihood ± is computed over the 267
    distinct test rows." Sizes come from the ``*_rows`` and ``test_distinct`` entries when present.
    """
    c = {k: int(counts.get(k, 0)) for k in DUPLICATE_KEYS}
    if not any(c.values()):
        return None
    n_train, n_val, n_test = (counts.get(k) for k in ("train_rows", "val_rows", "test_rows"))
    facts, effects = [], []

    def verb(count: int, singular: str, plural: str) -> str:
        return singular if count == 1 else plural

    if c["val_in_train"]:
        k = c["val_in_train"]
        facts.append(f"{_of(k, n_val, 'validation')} {verb(k, 'copies', 'copy')} a training row")
        effects.append("validation cannot catch overfitting on the copied rows")
    if c["test_in_train"]:
        k = c["test_in_train"]
        facts.append(f"{_of(k, n_test, 'test')} {verb(k, 'copies', 'copy')} a training row")
    if c["test_in_val"]:
        k = c["test_in_val"]
        facts.append(f"{_of(k, n_test, 'test')} {verb(k, 'copies', 'copy')} a validation row")
    if c["test_in_train"] or c["test_in_val"]:
        effects.append("the test log-likelihood includes rows seen in training or model selection")
    if c["test_repeated"]:
        k = c["test_repeated"]
        facts.append(f"{_of(k, n_test, 'test')} {verb(k, 'repeats', 'repeat')} an earlier test row")
        distinct = counts.get("test_distinct", None if n_test is None else n_test - k)
        over = f"the {distinct} distinct test rows" if distinct is not None else "the distinct test rows"
        effects.append(f"the test log-likelihood ± is computed over {over}")
    if c["val_repeated"]:
        k = c["val_repeated"]
        facts.append(f"{_of(k, n_val, 'validation')} {verb(k, 'repeats', 'repeat')} an earlier validation row")
        effects.append("repeated validation rows weigh more in model selection")
    if c["train_repeated"]:
        k = c["train_repeated"]
        facts.append(f"{_of(k, n_train, 'training')} {verb(k, 'repeats', 'repeat')} an earlier training row")
        effects.append("repeated training rows weigh more in the fit")
    return f"{name}: {'; '.join(facts)} — {_join(effects)}."


__all__ = [
    "DUPLICATE_KEYS",
    "comparable_splits",
    "dataset_duplicates",
    "distinct_rows_mask",
    "distinct_test_mask",
    "duplicates_warning",
    "find_duplicates",
    "pixel_levels",
]
