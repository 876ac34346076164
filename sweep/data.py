"""Load labelled sequences, validate them at the edge, and split them the same way every time.

Accepted files:

* ``.npz`` with ``X_train [n, timesteps, features]`` and ``y_train [n]``, optionally ``X_test``
  and ``y_test`` (the layout of the shared benchmark sets), optionally a ``meta`` JSON string.
* ``.csv`` / ``.tsv`` in UCR style: the label in the first column, one univariate series per row.
  A test file comes separately (``--test FILE``).

Labels may be integers or strings; they are mapped to ``0..K-1`` in sorted order and the mapping
(``Dataset.labels``) travels with the study and every logged model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The input statistics (re-exported here, where the data is read): objectives.preprocessing.
from objectives.preprocessing import HEAVY_TAIL_RATIO as HEAVY_TAIL_RATIO
from objectives.preprocessing import PADDED_SHARE as PADDED_SHARE
from objectives.preprocessing import is_padded as is_padded
from objectives.preprocessing import standardization as standardization
from sweep.errors import DataError

Label = int | str


@dataclass(frozen=True)
class Dataset:
    """A validated classification set; class ids are ``0..K-1``, ``labels[i]`` is the original label."""

    X_train: np.ndarray
    y_train: np.ndarray
    labels: tuple[Label, ...]
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def timesteps(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def features(self) -> int:
        return int(self.X_train.shape[2])

    @property
    def has_test(self) -> bool:
        return self.X_test is not None

    def fingerprint(self) -> str:
        """A short hash of every array and the label mapping: equal data, equal fingerprint."""
        h = hashlib.sha256()
        h.update(json.dumps(list(self.labels)).encode())
        for arr in (self.X_train, self.y_train, self.X_test, self.y_test):
            if arr is None:
                h.update(b"none")
                continue
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """Train / validation (for selection) / test (reported only) arrays with class ids."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None


def load_dataset(path: str | Path, *, test_path: str | Path | None = None) -> Dataset:
    """Read and validate a data file (and an optional separate test file).

    Raises:
        DataError: with a message naming the file, the problem and the fix.
    """
    path = Path(path)
    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if test_path is not None:
            raise DataError(f"--test is for .csv/.tsv data; {path.name} is an .npz: put X_test/y_test inside it")
        X, y, X_test, y_test, meta = _read_npz(path)
    elif suffix in (".csv", ".tsv"):
        X, y = _read_delimited(path)
        X_test = y_test = None
        if test_path is not None:
            test_path = Path(test_path)
            _check_readable(test_path)
            if test_path.suffix.lower() not in (".csv", ".tsv"):
                raise DataError(f"{test_path}: unknown test file format '{test_path.suffix}'; use .csv or .tsv")
            X_test, y_test = _read_delimited(test_path)
        meta = {}
    else:
        raise DataError(f"{path}: unknown format '{suffix or '(none)'}'; use .npz, .csv or .tsv")
    return _validate(path, X, y, X_test, y_test, meta)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (make a demo set with `sweep make-data seed-signal`)")
    if not path.is_file():
        raise DataError(f"{path}: is a directory, not a data file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz (no pickles), or a DataError saying why the file cannot be read."""
    if not zipfile.is_zipfile(path):
        # numpy would try to unpickle it and complain about pickles, which misleads.
        raise DataError(f"{path}: not a readable .npz file (not a zip archive); re-save it with numpy.savez")
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); re-save it with numpy.savez") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: holds pickled objects; save plain numeric or string arrays with numpy.savez") from None
        raise DataError(f"{path}: not a readable .npz file ({exc}); re-save it with numpy.savez") from None
    return arrays


def _memory_limit() -> int:
    """Bytes an .npz's arrays may take: ``SWEEP_MAX_DATA_BYTES``, else half the memory available now
    (the arrays are copied again for the split and the model's input)."""
    raw = os.environ.get("SWEEP_MAX_DATA_BYTES")
    if raw is not None:
        try:
            return max(0, int(raw))
        except ValueError:
            raise DataError(f"SWEEP_MAX_DATA_BYTES={raw!r}: must be a whole number of bytes") from None
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            available = 8 * 2**30
    return available // 2


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


def _check_npz_sizes(path: Path) -> None:
    """Read every array's header (not its data) and refuse what cannot be loaded: a header that
    declares more data than the file holds (a crafted or truncated file), object arrays (pickles),
    or arrays larger than the memory this machine has to spare. Nothing is allocated before this."""
    from numpy.lib import format as npy

    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename.removesuffix(".npy")
                # The sizes in the zip directory are claims too: stored data is as long as it says,
                # deflate packs at most ~1032:1 (numpy writes only these two).
                if (info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) or (
                        info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > 1100 * max(info.compress_size, 1)):
                    raise DataError(f"{path}: array '{name}' claims {_size(info.file_size)} packed in "
                                    f"{_size(info.compress_size)}; the file is corrupt: re-save it with numpy.savez")
                with archive.open(info) as fh:
                    version = npy.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = npy.read_array_header_2_0(fh)
                    else:
                        shape, _, dtype = npy._read_array_header(fh, version)
                    header = fh.tell()
                if dtype.hasobject:
                    raise DataError(f"{path}: holds pickled objects; save plain numeric or string arrays with numpy.savez")
                declared = math.prod(shape) * dtype.itemsize
                if declared > info.file_size - header:
                    raise DataError(
                        f"{path}: array '{name}' declares shape {tuple(shape)} of {dtype} ({_size(declared)}) but the "
                        f"file holds {_size(max(0, info.file_size - header))} for it; the file is corrupt or truncated: "
                        "re-save it with numpy.savez")
                total += declared
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, SyntaxError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"{path}: not a readable .npz file ({reason}); re-save it with numpy.savez") from None
    limit = _memory_limit()
    if total > limit:
        raise DataError(
            f"{path}: its arrays take {_size(total)} in memory, more than this machine can spare ({_size(limit)}: half "
            "the memory available now, or SWEEP_MAX_DATA_BYTES); use a smaller file or a machine with more memory")


def _read_npz(path: Path) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    arrays = _npz_arrays(path)
    for key in ("X_train", "y_train"):
        if key not in arrays:
            raise DataError(
                f"{path}: missing array '{key}'; an .npz needs X_train [n, timesteps, features] and y_train [n] "
                f"(it has: {', '.join(arrays) or 'nothing'})"
            )
    if ("X_test" in arrays) != ("y_test" in arrays):
        have, lack = ("X_test", "y_test") if "X_test" in arrays else ("y_test", "X_test")
        raise DataError(f"{path}: has '{have}' but not '{lack}'; store both or neither")
    meta: dict[str, Any] = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError:
            meta = {}
    return arrays["X_train"], arrays["y_train"], arrays.get("X_test"), arrays.get("y_test"), meta


def _delimited_rows(path: Path, *, first_value: int, layout: str) -> list[list[str]]:
    """The non-blank rows of a .csv/.tsv, a header line dropped (a first row whose values from
    column ``first_value`` on are not all numbers); ``layout`` names the expected row in errors."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="") as fh:
            rows = [row for row in csv.reader(fh, delimiter=delimiter) if row and any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: is not a text file; a .csv holds one '{layout}' row per series") from None
    if rows and not _is_numeric_row(rows[0][first_value:]):
        rows = rows[1:]  # a header line
    if not rows:
        raise DataError(f"{path}: holds no data rows; expected one '{layout}' row per series")
    return rows


def _read_delimited(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = _delimited_rows(path, first_value=1, layout="label,v1,v2,...")
    width = len(rows[0])
    if width < 2:
        raise DataError(f"{path}: line 1 has a label but no values; expected 'label,v1,v2,...'")
    labels, values = [], []
    for lineno, row in enumerate(rows, start=1):
        if len(row) != width:
            raise DataError(
                f"{path}: row {lineno} has {len(row) - 1} values but row 1 has {width - 1}; "
                "all series must have the same length (pad them)"
            )
        try:
            values.append([float(v) for v in row[1:]])
        except ValueError:
            bad = next(v for v in row[1:] if not _is_float(v))
            raise DataError(f"{path}: row {lineno} has a non-numeric value {bad!r}; fix or drop that row") from None
        labels.append(row[0].strip())
    X = np.asarray(values, dtype=np.float32)[:, :, None]
    return X, np.asarray(_normalise_labels(labels))


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_numeric_row(values: list[str]) -> bool:
    return bool(values) and all(_is_float(v) for v in values)


def _normalise_labels(raw: list[str]) -> list[Label]:
    """'1', '1.0' and '1.000e+00' are the same integer label; anything else stays a string."""
    out: list[Label] = []
    for v in raw:
        try:
            f = float(v)
        except ValueError:
            return list(raw)
        if not np.isfinite(f) or f != int(f):
            return list(raw)
        out.append(int(f))
    return out


def _validate(path: Path, X: Any, y: Any, X_test: Any, y_test: Any, meta: dict[str, Any]) -> Dataset:
    X = _check_x(path, "X_train", X)
    y = _check_y(path, "y_train", y, len(X), "X_train")
    labels = _label_order(path, y)
    if len(labels) < 2:
        raise DataError(
            f"{path}: y_train has one class only ({labels[0]!r}); a classifier needs at least two classes"
        )
    index = {lab: i for i, lab in enumerate(labels)}
    y_ids = np.asarray([index[_as_label(v)] for v in y], dtype=np.int64)
    counts = np.bincount(y_ids, minlength=len(labels))
    if counts.min() < 2:
        small = labels[int(np.argmin(counts))]
        raise DataError(
            f"{path}: class {small!r} has {counts.min()} training sequence; the stratified validation split "
            "needs at least 2 per class: add sequences of that class or drop it"
        )
    X_test_out = y_test_ids = None
    if X_test is not None:
        X_test_out = _check_x(path, "X_test", X_test)
        if X_test_out.shape[1:] != X.shape[1:]:
            raise DataError(
                f"{path}: X_test has sequences of shape {X_test_out.shape[1:]} but X_train has {X.shape[1:]} "
                "[timesteps, features]; they must match"
            )
        y_test = _check_y(path, "y_test", y_test, len(X_test_out), "X_test")
        unseen = sorted({_as_label(v) for v in y_test} - set(labels), key=str)
        if unseen:
            raise DataError(
                f"{path}: y_test has label {unseen[0]!r} that never occurs in y_train; a model cannot learn it"
            )
        y_test_ids = np.asarray([index[_as_label(v)] for v in y_test], dtype=np.int64)
    return Dataset(
        X_train=X, y_train=y_ids, labels=tuple(labels), X_test=X_test_out, y_test=y_test_ids,
        source=str(path), meta=meta,
    )


def _check_x(path: Path, name: str, X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: {name} has dtype {X.dtype}; expected numbers")
    if X.ndim != 3:
        hint = "; for univariate series use X[..., None]" if X.ndim == 2 else ""
        raise DataError(f"{path}: {name} has shape {X.shape}: expected 3 dimensions [n, timesteps, features]{hint}")
    if min(X.shape) == 0:
        raise DataError(f"{path}: {name} has shape {X.shape}: it is empty")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{path}: {name} has {int(bad.sum())} NaN/inf values (first in sequence {first}); "
            "fill or drop them first"
        )
    return X


def _check_y(path: Path, name: str, y: Any, n: int, x_name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {name} has shape {y.shape}; expected one label per sequence [n]")
    if len(y) != n:
        raise DataError(f"{path}: {x_name} has {n} sequences but {name} has {len(y)} labels; they must match")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{path}: {name} holds non-integer numbers; labels must be integers or strings")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise DataError(f"{path}: {name} has dtype {y.dtype}; labels must be integers or strings")
    return y


def _as_label(v: Any) -> Label:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if isinstance(v, (str, np.str_)):
        return str(v)
    return int(v)


def _label_order(path: Path, y: np.ndarray) -> list[Label]:
    values = {_as_label(v) for v in y}
    if len({type(v) for v in values}) > 1:
        raise DataError(f"{path}: y_train mixes numbers and strings; use one kind of label")
    return sorted(values)


@dataclass(frozen=True)
class Sequences:
    """Sequences to predict (``sweep predict``), with their labels when the file has them."""

    X: np.ndarray
    labels: list[Label] | None
    source: str
    array: str  # which array or format they came from, for messages


def load_sequences(path: str | Path, *, unlabeled: bool = False) -> Sequences:
    """Read sequences to classify: from an .npz its ``X`` (else ``X_test``, else ``X_train``) with
    the matching ``y`` when present; from a .csv/.tsv one series per row, label first (as for
    training) or, with ``unlabeled``, values only.

    Raises:
        DataError: naming the file, the problem and the fix.
    """
    path = Path(path)
    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _npz_arrays(path)
        name = next((k for k in ("X", "X_test", "X_train") if k in arrays), None)
        if name is None:
            raise DataError(f"{path}: no array 'X' (or X_test, X_train) of sequences [n, timesteps, features] "
                            f"to predict (it has: {', '.join(arrays) or 'nothing'})")
        X = _check_x(path, name, arrays[name])
        y_name = "y" + name[1:]
        labels = None
        if y_name in arrays:
            labels = [_as_label(v) for v in _check_y(path, y_name, arrays[y_name], len(X), name)]
        return Sequences(X=X, labels=labels, source=str(path), array=name)
    if suffix in (".csv", ".tsv"):
        if unlabeled:
            X = _read_values(path)
            return Sequences(X=_check_x(path, "the values", X), labels=None, source=str(path), array="rows")
        X, y = _read_delimited(path)
        return Sequences(X=_check_x(path, "the values", X), labels=[_as_label(v) for v in y], source=str(path),
                         array="rows (label first)")
    raise DataError(f"{path}: unknown format '{suffix or '(none)'}'; use .npz, .csv or .tsv")


def _read_values(path: Path) -> np.ndarray:
    """A .csv/.tsv of numbers only, one univariate series per row (an optional header is skipped)."""
    rows = _delimited_rows(path, first_value=0, layout="v1,v2,...")
    for lineno, row in enumerate(rows, start=1):
        if len(row) != len(rows[0]):
            raise DataError(f"{path}: row {lineno} has {len(row)} values but row 1 has {len(rows[0])}; "
                            "all series must have the same length")
        if not _is_numeric_row(row):
            bad = next(v for v in row if not _is_float(v))
            raise DataError(f"{path}: row {lineno} has a non-numeric value {bad!r}; fix or drop that row "
                            "(a label column? drop --unlabeled)")
    return np.asarray([[float(v) for v in row] for row in rows], dtype=np.float32)[:, :, None]


def split_stratified(data: Dataset, *, val_fraction: float, seed: int) -> Split:
    """Stratified, seeded train/validation split of the training part; the test part is kept apart.

    Every class lands on both sides: stratification rounds a rare class's share down, so a class
    the split left out of validation gets one of its training sequences moved there.

    Raises:
        DataError: when the validation part is too small to hold every class.
    """
    from sklearn.model_selection import train_test_split

    n = len(data.y_train)
    n_val = int(np.ceil(n * val_fraction))
    if n_val < data.n_classes or n - n_val < data.n_classes:
        raise DataError(
            f"{data.source}: a validation fraction of {val_fraction} gives {n_val} of {n} sequences, too few "
            f"to hold all {data.n_classes} classes on both sides; change --val-fraction or add data"
        )
    idx_train, idx_val = train_test_split(
        np.arange(n), test_size=n_val, stratify=data.y_train, random_state=seed
    )
    missing = np.setdiff1d(np.arange(data.n_classes), data.y_train[idx_val])
    if missing.size:
        move = np.array([idx_train[data.y_train[idx_train] == c][0] for c in missing])
        idx_train = np.setdiff1d(idx_train, move)
        idx_val = np.concatenate([idx_val, move])
    return Split(
        X_train=data.X_train[idx_train], y_train=data.y_train[idx_train],
        X_val=data.X_train[idx_val], y_val=data.y_train[idx_val],
        X_test=data.X_test, y_test=data.y_test,
    )


def split_folds(data: Dataset, *, k: int, seed: int) -> list[Split] | None:
    """The training part in ``k`` stratified, seeded folds: split ``i`` validates on fold ``i`` and
    trains on the others, so every training sequence is validated on exactly once and two
    configurations trained on the same folds are compared on the same sequences. The test part is
    kept apart. None when ``k`` < 2 or a class has fewer than ``k`` sequences (a fold would miss it).
    """
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(data.y_train, minlength=data.n_classes)
    if k < 2 or int(counts.min()) < k:
        return None
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(data.y_train)), data.y_train)
    return [
        Split(X_train=data.X_train[tr], y_train=data.y_train[tr], X_val=data.X_train[va], y_val=data.y_train[va],
              X_test=data.X_test, y_test=data.y_test)
        for tr, va in folds
    ]


def whole_training(data: Dataset) -> Split:
    """The whole training part to train on, nothing held out (the refit of ``--ship refit``): its
    validation arrays are empty; the test part is kept apart as always."""
    return Split(X_train=data.X_train, y_train=data.y_train, X_val=data.X_train[:0], y_val=data.y_train[:0],
                 X_test=data.X_test, y_test=data.y_test)
