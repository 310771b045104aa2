"""The MAF density-estimation suite: POWER, GAS, HEPMASS, MINIBOONE, BSDS300, preprocessed exactly as MAF.

Source: the archive ``data.tar.gz`` of Papamakarios et al., "Masked Autoregressive Flow for Density Estimation"
(NeurIPS 2017), Zenodo record 10.5281/zenodo.1161203; ``relgrad-data download maf`` fetches and unpacks it.
Expected files under the data root (folder names as in the archive):

    power/data.npy             (N×8: active power, reactive power, voltage, intensity, 3 sub-meterings, time)
    gas/ethylene_CO.pickle     (pandas DataFrame: Time, Meth, Eth and 16 sensor columns)
    hepmass/1000_train.csv     (header line; column 0 = class label, then the features)
    hepmass/1000_test.csv      (the same, plus one trailing column that MAF drops)
    miniboone/data.npy         (N×43, already cleaned by the MAF authors)
    BSDS300/BSDS300.hdf5       (datasets train, validation, test; N×63 patches)

The steps below re-implement the MAF authors' public loaders (github.com/gpapamak/maf, ``datasets/*.py``) in
numpy/pandas ≥ 2 code. Splits "10% test, then 10% of the rest validation" take the LAST rows:
n_test = ⌊0.1·N⌋, n_val = ⌊0.1·(N − n_test)⌋. Standard deviations are population (ddof 0) where MAF used numpy and
sample (ddof 1) where MAF used pandas, as noted per dataset. All arrays are returned as float32 (as MAF does).

Security note: ``gas/ethylene_CO.pickle`` is unpickled by pandas, and unpickling can run arbitrary code. Only use a
file from the official archive (``relgrad-data download maf`` verifies the archive's MD5 before unpacking it).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import Dataset, DatasetError, as_root

#: files each dataset needs, relative to the data root
MAF_FILES: dict[str, tuple[str, ...]] = {
    "power": ("power/data.npy",),
    "gas": ("gas/ethylene_CO.pickle",),
    "hepmass": ("hepmass/1000_train.csv", "hepmass/1000_test.csv"),
    "miniboone": ("miniboone/data.npy",),
    "bsds300": ("BSDS300/BSDS300.hdf5",),
}
#: dimension after preprocessing
MAF_DIMS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}
FETCH_HINT = "`relgrad-data download maf` fetches the MAF archive (data.tar.gz, about 0.9 GB) and unpacks it"
REFETCH = f"delete it and re-fetch the official file: {FETCH_HINT}"


def _require(root: Path, name: str) -> list[Path]:
    paths = [root / rel for rel in MAF_FILES[name]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{name.upper()} needs {', '.join(str(p) for p in missing)}, which is missing; {FETCH_HINT}: "
            f"relgrad-data download maf --root {root}"
        )
    return paths


def _tail_split(data: np.ndarray, what: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's split: test = last ⌊0.1·N⌋ rows, validation = last ⌊0.1·(N − n_test)⌋ of the rest, train = the rest."""
    n_test = int(0.1 * len(data))
    n_val = int(0.1 * (len(data) - n_test))
    if n_val < 1:
        raise DatasetError(f"{what} holds {len(data)} rows, too few for a 10% test and 10% validation split")
    rest, test = data[:-n_test], data[-n_test:]
    return rest[:-n_val], rest[-n_val:], test


def _npy_dtype(path: Path) -> np.dtype | None:
    """The dtype in a .npy file's header (None when the header cannot be read: np.load then says why)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return read(f)[2]
    except (OSError, ValueError, EOFError):
        return None


def _load_npy(path: Path, n_cols: int, name: str) -> np.ndarray:
    dtype = _npy_dtype(path)  # checked first: an object array cannot even be loaded without pickle
    if dtype is not None and dtype.kind not in "iuf":  # complex, objects, strings, records: never cast to float
        raise DatasetError(
            f"{path} holds {dtype} values; the {name.upper()} file of the MAF archive holds real numbers (floats); "
            f"{REFETCH}"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path} could not be read as a .npy array ({exc}); {REFETCH}") from None
    if data.dtype.kind not in "iuf":
        raise DatasetError(f"{path} holds {data.dtype} values; the {name.upper()} file of the MAF archive holds real "
                           f"numbers (floats); {REFETCH}")  # fmt: skip
    if data.ndim != 2 or data.shape[1] != n_cols:
        raise DatasetError(
            f"{path} has shape {data.shape}; the {name.upper()} file of the MAF archive is N×{n_cols}; {REFETCH}"
        )
    return data.astype(np.float64)


def _standardize(
    splits: tuple[np.ndarray, ...], reference: np.ndarray, ddof: int, what: Path, dtype: type = np.float32
) -> tuple[np.ndarray, ...]:
    """(x − μ)/s for every split, with μ and s (ddof as given) computed on ``reference`` only (float64 math)."""
    if not np.isfinite(reference).all():
        row, col = np.argwhere(~np.isfinite(reference))[0].tolist()
        raise DatasetError(
            f"{what}: contains NaN or infinite values (first at row {row}, column {col} of the statistics split); "
            f"the file is corrupt or not the MAF one, {REFETCH}"
        )
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0, ddof=ddof)
    if not np.all(sd > 0):
        cols = np.flatnonzero(~(sd > 0)).tolist()
        raise DatasetError(
            f"{what}: column(s) {cols} are constant on the statistics split; the file looks corrupt, {REFETCH}"
        )
    return tuple(((s - mu) / sd).astype(dtype) for s in splits)


def _dataset(name: str, splits: tuple[np.ndarray, ...], files: list[Path], steps: str) -> Dataset:
    train, val, test = splits
    for split in splits:
        if split.shape[1] != MAF_DIMS[name]:
            raise DatasetError(
                f"{', '.join(map(str, files))}: preprocessing gave {split.shape[1]} columns, expected "
                f"{MAF_DIMS[name]} for {name.upper()}; the file does not have the MAF archive's layout, {REFETCH}"
            )
    for split_name, split in zip(("train", "validation", "test"), splits, strict=True):
        if not np.all(np.isfinite(split)):
            row, col = np.argwhere(~np.isfinite(split))[0]
            raise DatasetError(
                f"{', '.join(map(str, files))}: the {split_name} split holds NaN or infinite values (first at row "
                f"{row}, column {col} after preprocessing); the file is corrupt, {REFETCH}"
            )
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=test,
        info={
            "files": [str(p) for p in files],
            "preprocessing": steps,
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        },
    )


# ---------------------------------------------------------------------------------------------------------- POWER


def load_power(root: str | Path) -> Dataset:
    """UCI household electric power consumption, 6 dims (MAF's ``power.py``).

    1. X = power/data.npy (N×8); shuffle its rows with RandomState(42).
    2. Drop column 3 (global intensity), then column 1 (global reactive power): 6 columns remain —
       active power, voltage, sub-metering 1–3, time.
    3. Add uniform noise from the same RandomState, drawn in this order: voltage 0.01·U(0,1), active power
       0.001·U(0,1), sub-meterings U(0,1) (N×3); time gets none. (Breaks ties from the data's quantization.)
    4. Tail split (10% test, 10% of the rest validation); standardize with the mean and std (ddof 0) of
       train ∪ validation.
    """
    root = as_root(root)
    (path,) = _require(root, "power")
    data = _load_npy(path, 8, "power")
    rng = np.random.RandomState(42)
    data = data[rng.permutation(len(data))]  # same draws as rng.shuffle(data), without mutating the loaded array
    data = data[:, [0, 2, 4, 5, 6, 7]]
    n = len(data)
    voltage = 0.01 * rng.rand(n, 1)
    active = 0.001 * rng.rand(n, 1)
    metering = rng.rand(n, 3)
    data = data + np.hstack([active, voltage, metering, np.zeros((n, 1))])
    train, val, test = _tail_split(data, path)
    splits = _standardize((train, val, test), np.vstack([train, val]), ddof=0, what=path)
    return _dataset(
        "power",
        splits,
        [path],
        "RandomState(42) row shuffle; drop cols 3,1; uniform noise; tail split; standardize on train+val (ddof 0)",
    )


# ------------------------------------------------------------------------------------------------------------ GAS

_LEGACY_MODULES = {
    # where classes of pandas 0.17–0.23 (the era of the MAF archive) live now
    "pandas.core.index": "pandas.core.indexes.base",
    "pandas.indexes.base": "pandas.core.indexes.base",
    "pandas.indexes.numeric": "pandas.core.indexes.base",
    "pandas.core.indexes.numeric": "pandas.core.indexes.base",
    "pandas.indexes.range": "pandas.core.indexes.range",
    "pandas.indexes.multi": "pandas.core.indexes.multi",
    "pandas.indexes.frozen": "pandas.core.indexes.frozen",
    "pandas.core.base": "pandas.core.indexes.frozen",
    "pandas.core.internals": "pandas.core.internals.managers",
}


def _read_legacy_pickle(path: Path) -> Any:
    """Unpickle a DataFrame written by an old pandas (possibly under Python 2) when ``pd.read_pickle`` cannot:
    pandas' own compatibility unpickler plus the pre-0.24 class locations, with latin-1 for Python 2 strings."""
    try:
        from pandas.compat.pickle_compat import Unpickler as Base
    except ImportError:  # private module; fall back to the plain unpickler
        Base = pickle.Unpickler

    class LegacyUnpickler(Base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            if name in ("Int64Index", "UInt64Index", "Float64Index"):
                module, name = "pandas.core.indexes.base", "Index"
            elif name == "FrozenNDArray":
                module, name = "numpy", "ndarray"
            else:
                module = _LEGACY_MODULES.get(module, module)
            return super().find_class(module, name)

    with open(path, "rb") as handle:
        return LegacyUnpickler(handle, encoding="latin1").load()


def read_gas_frame(path: str | Path) -> Any:
    """The GAS DataFrame from its pickle: ``pd.read_pickle``, falling back to a legacy-aware unpickler."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_pickle(path)
    except Exception as first:  # any unpickling failure: try the legacy route, then report both
        try:
            frame = _read_legacy_pickle(path)
        except Exception as second:
            raise DatasetError(
                f"{path} could not be unpickled as a pandas DataFrame ({type(first).__name__}: {first}; legacy "
                f"reader: {type(second).__name__}: {second}); {REFETCH}"
            ) from None
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(
            f"{path} holds a {type(frame).__name__}, not the pandas DataFrame of the MAF archive; {REFETCH}"
        )
    return frame


def load_gas(root: str | Path) -> Dataset:
    """UCI gas sensor array under dynamic gas mixtures (ethylene + CO), 8 dims (MAF's ``gas.py``).

    1. Read gas/ethylene_CO.pickle; drop the columns Meth, Eth and Time (16 sensor columns remain).
    2. Repeat: C = Pearson correlation matrix; B_j = #{k : C_jk > 0.98} (the diagonal counts, so B_j ≥ 1 for
       non-constant columns); if some B_j > 1, drop (by name) the first such column j, and recompute.
    3. Standardize every column with the mean and std (ddof 1, pandas) of the WHOLE table.
    4. Tail split (no shuffle): 10% test, 10% of the rest validation.
    """
    root = as_root(root)
    (path,) = _require(root, "gas")
    frame = read_gas_frame(path)
    absent = [c for c in ("Meth", "Eth", "Time") if c not in frame.columns]
    if absent:
        raise DatasetError(
            f"{path} has no column(s) {', '.join(absent)} (columns: {', '.join(map(str, frame.columns))}); "
            f"the MAF GAS pickle has Time, Meth, Eth and 16 sensor columns; {REFETCH}"
        )
    frame = frame.drop(columns=["Meth", "Eth", "Time"])
    odd = [str(c) for c, t in frame.dtypes.items() if getattr(t, "kind", "O") == "c"]
    if odd:  # complex columns: astype(float) would drop the imaginary parts silently
        raise DatasetError(f"{path}: column(s) {', '.join(odd)} hold complex values; the MAF GAS sensor columns are "
                           f"real numbers; {REFETCH}")  # fmt: skip
    try:
        frame = frame.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: the sensor columns are not all numeric ({exc}); {REFETCH}") from None
    dropped: list[str] = []
    while True:
        counts = (frame.corr() > 0.98).sum(axis=1).to_numpy()
        over = np.flatnonzero(counts > 1)
        if len(over) == 0:
            break
        name = frame.columns[over[0]]
        dropped.append(str(name))
        frame = frame.drop(columns=name)
    values = frame.to_numpy(dtype=np.float64)
    (values,) = _standardize((values,), values, ddof=1, what=path)
    return _dataset(
        "gas",
        _tail_split(values, path),
        [path],
        f"drop Meth, Eth, Time; drop correlated (>0.98) columns {dropped}; standardize on all rows (ddof 1); "
        "tail split",
    )


# -------------------------------------------------------------------------------------------------------- HEPMASS


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, index_col=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path} could not be parsed as CSV ({exc}); {REFETCH}") from None
    if frame.shape[1] < 2 or not all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        raise DatasetError(
            f"{path} is not a numeric CSV with a header line (columns: {list(frame.columns)[:5]}…); {REFETCH}"
        )
    return frame


def load_hepmass(root: str | Path) -> Dataset:
    """UCI HEPMASS ("1000" subset), 21 dims (MAF's ``hepmass.py``).

    1. Read hepmass/1000_train.csv and 1000_test.csv (header line). Keep the signal rows (column 0 == 1) and drop
       column 0; from the test table also drop its last column, which the training table does not have.
    2. Standardize both with the training table's mean and std (ddof 1, pandas), before any split.
    3. Drop every feature whose smallest (standardized) training value occurs more than 5 times — MAF's test for
       discrete features (its ``Counter``: the count of the first key in sorted order, i.e. of the minimum).
    4. Validation = the last ⌊0.1·N⌋ training rows (no shuffle); test = the whole signal test table.
    """
    root = as_root(root)
    train_path, test_path = _require(root, "hepmass")
    train_frame, test_frame = _read_csv(train_path), _read_csv(test_path)
    train = train_frame[train_frame.iloc[:, 0] == 1].iloc[:, 1:].to_numpy(dtype=np.float64)
    test = test_frame[test_frame.iloc[:, 0] == 1].iloc[:, 1:-1].to_numpy(dtype=np.float64)
    if train.shape[1] != test.shape[1]:
        raise DatasetError(
            f"{test_path} has {test_frame.shape[1]} columns but {train_path} has {train_frame.shape[1]}; the MAF "
            f"HEPMASS test table has exactly one column more (dropped as MAF does); {REFETCH}"
        )
    if len(train) < 10 or len(test) < 1:
        raise DatasetError(
            f"{train_path} / {test_path} hold too few signal rows (label 1): {len(train)}/{len(test)}; {REFETCH}"
        )
    train, test = _standardize((train, test), train, ddof=1, what=train_path, dtype=np.float64)
    keep = np.array([np.count_nonzero(col == col.min()) <= 5 for col in train.T])
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * len(train))
    splits = (train[:-n_val], train[-n_val:], test)
    return _dataset(
        "hepmass",
        tuple(s.astype(np.float32) for s in splits),
        [train_path, test_path],
        f"signal rows only; standardize on train (ddof 1); drop discrete features {np.flatnonzero(~keep).tolist()}"
        "; validation = last 10% of train",
    )


# ------------------------------------------------------------------------------------------------------ MINIBOONE


def load_miniboone(root: str | Path) -> Dataset:
    """UCI MiniBooNE particle identification, 43 dims (MAF's ``miniboone.py``).

    The archive's miniboone/data.npy is already cleaned (outliers and discrete features removed by the MAF
    authors). Tail split (no shuffle): 10% test, 10% of the rest validation; standardize with the mean and std
    (ddof 0) of train ∪ validation.
    """
    root = as_root(root)
    (path,) = _require(root, "miniboone")
    data = _load_npy(path, 43, "miniboone")
    train, val, test = _tail_split(data, path)
    splits = _standardize((train, val, test), np.vstack([train, val]), ddof=0, what=path)
    return _dataset("miniboone", splits, [path], "tail split; standardize on train+val (ddof 0)")


# -------------------------------------------------------------------------------------------------------- BSDS300


def load_bsds300(root: str | Path) -> Dataset:
    """Berkeley Segmentation Dataset patches, 63 dims (MAF's ``bsds300.py``): the archive's BSDS300/BSDS300.hdf5
    holds the final train/validation/test arrays (8×8 grey patches, mean removed, the last pixel dropped), used
    as they are."""
    import h5py

    root = as_root(root)
    (path,) = _require(root, "bsds300")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path} could not be opened as HDF5 ({exc}); {REFETCH}") from None
    with handle:
        missing = [key for key in ("train", "validation", "test") if key not in handle]
        if missing:
            raise DatasetError(
                f"{path} has no dataset(s) {', '.join(missing)} (it has: {', '.join(sorted(handle.keys()))}); "
                f"the MAF file has train, validation and test; {REFETCH}"
            )
        splits = []
        for key in ("train", "validation", "test"):
            kind = getattr(getattr(handle[key], "dtype", None), "kind", "?")
            if kind not in "iuf":  # complex, strings, compounds, ...: never silently cast to float
                raise DatasetError(
                    f"{path}: dataset '{key}' holds {getattr(handle[key], 'dtype', 'non-array')} values; BSDS300 "
                    f"patches are real numbers (floats), {REFETCH}"
                )
            try:
                array = np.asarray(handle[key], dtype=np.float32)
            except (OSError, ValueError, TypeError) as exc:  # damaged chunks, a non-numeric dataset, ...
                raise DatasetError(
                    f"{path}: dataset '{key}' could not be read ({exc}); the file is damaged, {REFETCH}"
                ) from None
            if array.ndim != 2 or array.shape[1] != 63:
                raise DatasetError(
                    f"{path}: dataset '{key}' has shape {array.shape}; BSDS300 patches are N×63, {REFETCH}"
                )
            splits.append(array)
    return _dataset("bsds300", tuple(splits), [path], "none (the file holds the final splits)")
