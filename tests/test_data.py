"""Loading, validating, splitting and standardizing data (numpy and scikit-learn only)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sweep.data import load_dataset, split_folds, split_stratified, standardization
from sweep.errors import DataError


def _arrays(n: int = 40, t: int = 6, f: int = 2, minority: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array([0] * (n - minority) + [1] * minority)
    return rng.normal(size=(n, t, f)).astype(np.float32), y


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


X0, Y0 = _arrays()


# --- .npz -----------------------------------------------------------------------------------------


def test_npz_with_int_labels_and_a_test_split(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y, X_test=X[:8], y_test=y[:8]))
    assert d.labels == (0, 1) and d.n_classes == 2
    assert d.X_train.shape == (40, 6, 2) and d.X_train.dtype == np.float32
    np.testing.assert_array_equal(d.X_train, X)
    np.testing.assert_array_equal(d.y_train, y)
    assert d.has_test and d.X_test.shape == (8, 6, 2)
    np.testing.assert_array_equal(d.y_test, y[:8])
    assert d.timesteps == 6 and d.features == 2
    assert d.source == str(tmp_path / "d.npz") and d.meta == {}


def test_npz_int_labels_that_are_not_0_to_k_are_mapped_in_sorted_order(tmp_path):
    X, y = _arrays()
    raw = np.where(y == 1, -7, 12)
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=raw))
    assert d.labels == (-7, 12)
    np.testing.assert_array_equal(d.y_train, np.where(raw == -7, 0, 1))


def test_npz_float_labels_holding_integers_become_ints(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=(y + 1).astype(np.float64)))
    assert d.labels == (1, 2) and all(type(v) is int for v in d.labels)


def test_npz_string_labels_are_mapped_in_sorted_order_also_in_the_test_split(tmp_path):
    X, y = _arrays()
    names = np.where(y == 1, "apple", "zebra")  # the minority sorts first
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=names, X_test=X[::5], y_test=names[::5]))
    assert d.labels == ("apple", "zebra")
    np.testing.assert_array_equal(d.y_train, np.where(y == 1, 0, 1))
    np.testing.assert_array_equal(d.y_test, np.where(y[::5] == 1, 0, 1))


def test_npz_bytes_labels_read_like_strings(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=np.where(y == 1, b"b", b"a")))
    assert d.labels == ("a", "b")


def test_npz_without_test_split_and_with_meta_json(tmp_path):
    X, y = _arrays()
    meta = {"kind": "demo", "bayes_balanced_accuracy": 0.9}
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y, meta=np.array(json.dumps(meta))))
    assert not d.has_test and d.X_test is None and d.y_test is None
    assert d.meta == meta


def test_npz_meta_that_is_not_json_is_ignored(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y, meta=np.array("not json {")))
    assert d.meta == {}


def test_npz_column_vector_labels_are_accepted(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y[:, None]))
    np.testing.assert_array_equal(d.y_train, y)


# --- .csv / .tsv ----------------------------------------------------------------------------------


def _ucr_rows(labels: list[str], length: int = 5) -> list[str]:
    return [",".join([lab] + [f"{i + j * 0.5:.2f}" for j in range(length)]) for i, lab in enumerate(labels)]


def test_ucr_csv_label_first_column_no_header(tmp_path):
    rows = _ucr_rows(["1", "2", "1", "2", "1", "1"])
    d = load_dataset(_write(tmp_path / "d.csv", "\n".join(rows) + "\n"))
    assert d.labels == (1, 2)
    assert d.X_train.shape == (6, 5, 1) and d.X_train.dtype == np.float32
    np.testing.assert_allclose(d.X_train[3, :, 0], [3.0, 3.5, 4.0, 4.5, 5.0])
    np.testing.assert_array_equal(d.y_train, [0, 1, 0, 1, 0, 0])
    assert not d.has_test


def test_ucr_csv_header_line_is_skipped(tmp_path):
    rows = ["label,t0,t1,t2,t3,t4"] + _ucr_rows(["a", "b", "a", "b"])
    d = load_dataset(_write(tmp_path / "d.csv", "\n".join(rows) + "\n"))
    assert len(d.y_train) == 4 and d.labels == ("a", "b")


def test_ucr_float_labels_become_ints(tmp_path):
    rows = _ucr_rows(["1.0", "-1.0", "1.000e+00", "-1", "1.0", "-1.0"])
    d = load_dataset(_write(tmp_path / "d.csv", "\n".join(rows) + "\n"))
    assert d.labels == (-1, 1) and all(type(v) is int for v in d.labels)
    np.testing.assert_array_equal(d.y_train, [1, 0, 1, 0, 1, 0])


def test_ucr_string_labels_sorted(tmp_path):
    rows = _ucr_rows(["up", "down", "up", "down", "flat", "flat"])
    d = load_dataset(_write(tmp_path / "d.csv", "\n".join(rows) + "\n"))
    assert d.labels == ("down", "flat", "up")
    np.testing.assert_array_equal(d.y_train, [2, 0, 2, 0, 1, 1])


def test_ucr_tsv_is_tab_separated(tmp_path):
    rows = ["\t".join(r.split(",")) for r in _ucr_rows(["3", "4", "3", "4"], length=7)]
    d = load_dataset(_write(tmp_path / "d.tsv", "\n".join(rows) + "\n"))
    assert d.X_train.shape == (4, 7, 1) and d.labels == (3, 4)


def test_ucr_separate_test_file_shares_the_label_mapping(tmp_path):
    train = _write(tmp_path / "train.csv", "\n".join(_ucr_rows(["b", "a", "b", "a", "c", "c"])) + "\n")
    test = _write(tmp_path / "test.tsv", "\n".join("\t".join(r.split(",")) for r in _ucr_rows(["c", "a", "b"])) + "\n")
    d = load_dataset(train, test_path=test)
    assert d.labels == ("a", "b", "c") and d.has_test
    assert d.X_test.shape == (3, 5, 1)
    np.testing.assert_array_equal(d.y_test, [2, 0, 1])


def test_ucr_test_file_with_float_labels_matches_int_train_labels(tmp_path):
    train = _write(tmp_path / "train.csv", "\n".join(_ucr_rows(["1", "2", "1", "2"])) + "\n")
    test = _write(tmp_path / "test.csv", "\n".join(_ucr_rows(["2.0", "1.0"])) + "\n")
    d = load_dataset(train, test_path=test)
    np.testing.assert_array_equal(d.y_test, [1, 0])


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_is_equal_for_equal_data_and_changes_with_one_value(tmp_path):
    X, y = _arrays()
    a = load_dataset(_npz(tmp_path / "a.npz", X_train=X, y_train=y))
    b = load_dataset(_npz(tmp_path / "b.npz", X_train=X.copy(), y_train=y.copy()))
    assert a.fingerprint() == b.fingerprint()
    X2 = X.copy()
    X2[17, 3, 1] += 1e-3
    c = load_dataset(_npz(tmp_path / "c.npz", X_train=X2, y_train=y))
    assert c.fingerprint() != a.fingerprint()
    y2 = y.copy()
    y2[[0, -1]] = y2[[-1, 0]]  # swap one label pair: same counts, different data
    assert load_dataset(_npz(tmp_path / "e.npz", X_train=X, y_train=y2)).fingerprint() != a.fingerprint()
    with_test = load_dataset(_npz(tmp_path / "f.npz", X_train=X, y_train=y, X_test=X[:4], y_test=y[:4]))
    assert with_test.fingerprint() != a.fingerprint()


def test_fingerprint_sees_the_label_names(tmp_path):
    X, y = _arrays()
    a = load_dataset(_npz(tmp_path / "a.npz", X_train=X, y_train=y))
    b = load_dataset(_npz(tmp_path / "b.npz", X_train=X, y_train=np.where(y == 1, "x", "w")))
    assert np.array_equal(a.y_train, b.y_train)
    assert a.fingerprint() != b.fingerprint()


# --- split and standardization --------------------------------------------------------------------


def _dataset(tmp_path: Path, y: np.ndarray, seed: int = 0):
    X = np.random.default_rng(seed).normal(size=(len(y), 4, 3)).astype(np.float32)
    X[:, 0, 0] = np.arange(len(y))  # every sequence is unique, so rows identify sequences
    return load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y))


def test_split_is_stratified_every_class_on_both_sides_in_close_proportions(tmp_path):
    y = np.array([0] * 70 + [1] * 20 + [2] * 10)
    d = _dataset(tmp_path, y)
    s = split_stratified(d, val_fraction=0.2, seed=0)
    assert len(s.y_val) == 20 and len(s.y_train) == 80
    assert np.bincount(s.y_val, minlength=3).tolist() == [14, 4, 2]
    assert np.bincount(s.y_train, minlength=3).tolist() == [56, 16, 8]
    # disjoint and complete
    ids = np.concatenate([s.X_train[:, 0, 0], s.X_val[:, 0, 0]]).astype(int)
    assert sorted(ids.tolist()) == list(range(100))
    # labels travel with their sequences
    np.testing.assert_array_equal(s.y_val, y[s.X_val[:, 0, 0].astype(int)])
    assert s.X_test is None and s.y_test is None


@pytest.mark.parametrize("val_fraction", [0.05, 0.1, 0.25, 0.5])
def test_split_proportions_stay_close_for_other_fractions(tmp_path, val_fraction):
    y = np.array([0] * 150 + [1] * 50)
    s = split_stratified(_dataset(tmp_path, y), val_fraction=val_fraction, seed=3)
    assert len(s.y_val) == int(np.ceil(200 * val_fraction))
    for part in (s.y_train, s.y_val):
        assert set(part.tolist()) == {0, 1}
        assert abs(part.mean() - 0.25) <= 1 / len(part) + 1e-9


def test_split_is_seeded(tmp_path):
    d = _dataset(tmp_path, np.array([0] * 60 + [1] * 20))
    a = split_stratified(d, val_fraction=0.25, seed=7)
    b = split_stratified(d, val_fraction=0.25, seed=7)
    c = split_stratified(d, val_fraction=0.25, seed=8)
    np.testing.assert_array_equal(a.X_val, b.X_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert set(a.X_val[:, 0, 0].tolist()) != set(c.X_val[:, 0, 0].tolist())


def test_folds_validate_every_training_sequence_once_and_are_stratified(tmp_path):
    y = np.array([0] * 69 + [1] * 31)  # ECG200's training part
    d = _dataset(tmp_path, y)
    splits = split_folds(d, k=3, seed=7919)
    assert splits is not None and len(splits) == 3
    seen = np.concatenate([s.X_val[:, 0, 0] for s in splits]).astype(int)
    assert sorted(seen.tolist()) == list(range(100))  # each sequence validated on exactly once
    for s in splits:
        ids = np.concatenate([s.X_train[:, 0, 0], s.X_val[:, 0, 0]]).astype(int)
        assert sorted(ids.tolist()) == list(range(100))  # each split holds the whole training part
        assert np.bincount(s.y_val, minlength=2).tolist() in ([23, 10], [23, 11])
        np.testing.assert_array_equal(s.y_val, y[s.X_val[:, 0, 0].astype(int)])
        assert s.X_test is None
    again = split_folds(d, k=3, seed=7919)
    other = split_folds(d, k=3, seed=1)
    assert again is not None and other is not None
    np.testing.assert_array_equal(splits[0].X_val, again[0].X_val)
    assert set(splits[0].X_val[:, 0, 0].tolist()) != set(other[0].X_val[:, 0, 0].tolist())


def test_no_folds_when_a_class_is_smaller_than_k_or_k_below_two(tmp_path):
    d = _dataset(tmp_path, np.array([0] * 20 + [1] * 2))
    assert split_folds(d, k=3, seed=0) is None  # a fold would have no sequence of class 1
    assert split_folds(d, k=2, seed=0) is not None
    assert split_folds(d, k=1, seed=0) is None


def test_split_keeps_the_test_part_apart(tmp_path):
    X, y = _arrays()
    d = load_dataset(_npz(tmp_path / "d.npz", X_train=X, y_train=y, X_test=X[:6], y_test=y[:6]))
    s = split_stratified(d, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(s.X_test, d.X_test)
    np.testing.assert_array_equal(s.y_test, d.y_test)
    assert len(s.y_train) + len(s.y_val) == 40


def test_split_rejects_a_validation_fraction_leaving_too_few_sequences(tmp_path):
    d = _dataset(tmp_path, np.array([0, 1, 2, 3] * 3))  # 12 sequences, 4 classes
    with pytest.raises(DataError) as info:
        split_stratified(d, val_fraction=0.1, seed=0)  # 2 validation sequences for 4 classes
    msg = str(info.value)
    assert "gives 2 of 12 sequences" in msg and "all 4 classes" in msg and "--val-fraction" in msg


def test_split_rejects_a_training_part_too_small_for_every_class(tmp_path):
    d = _dataset(tmp_path, np.array([0, 1, 2] * 2))  # 6 sequences, 3 classes
    with pytest.raises(DataError, match="too few"):
        split_stratified(d, val_fraction=0.6, seed=0)  # 4 validation, 2 train for 3 classes


def test_split_never_leaves_a_class_out_of_the_validation_part(tmp_path):
    d = _dataset(tmp_path, np.array([0] * 1000 + [1] * 2 + [2] * 2))
    try:
        s = split_stratified(d, val_fraction=0.05, seed=0)
    except DataError:
        return  # refusing is what the docstring promises
    assert set(s.y_val.tolist()) == {0, 1, 2}
    assert set(s.y_train.tolist()) == {0, 1, 2}


def test_standardization_is_per_feature_and_replaces_zero_std_by_one():
    X = np.zeros((4, 3, 3), np.float32)
    X[:, :, 0] = np.arange(12).reshape(4, 3)
    X[:, :, 1] = 5.0  # constant feature: std 0
    X[:, :, 2] = np.tile([-1.0, 1.0, -1.0], (4, 1))
    mean, std = standardization(X)
    assert mean.shape == (3,) and std.shape == (3,)
    assert mean.dtype == np.float32 and std.dtype == np.float32
    np.testing.assert_allclose(mean, [5.5, 5.0, -1 / 3], rtol=1e-6)
    np.testing.assert_allclose(std, [np.arange(12).std(), 1.0, np.std([-1, 1, -1])], rtol=1e-6)
    Z = (X - mean) / std
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[:, :, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(Z[:, :, 0].std(), 1.0, rtol=1e-5)


def test_a_heavy_tailed_feature_is_scaled_by_its_robust_spread_and_the_rest_by_mean_and_std():
    """LSST-like fluxes: a bulk within a few units and rare events 1000x larger. Scaled by its
    standard deviation the bulk would collapse onto 0; median and IQR / 1.349 keep it at unit scale."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 30, 3))
    X[:, :, 1] *= 4.0
    X[:, :, 1][rng.random((200, 30)) < 0.01] = 30_000.0  # 1% of the steps: bright events
    X[:, :, 2] = 0.0
    X[::50, ::10, 2] = 7.0  # sparse spikes: an IQR of 0 is no robust spread, so mean and std
    X = X.astype(np.float32)
    centre, scale = standardization(X)
    flat = X.reshape(-1, 3).astype(np.float64)
    q25, q50, q75 = np.percentile(flat[:, 1], [25, 50, 75])
    np.testing.assert_allclose([centre[1], scale[1]], [q50, (q75 - q25) / 1.349], rtol=1e-5)
    assert 3.0 < scale[1] < 5.0 < flat[:, 1].std() / 10  # the bulk's spread, not the events'
    np.testing.assert_allclose([centre[0], scale[0]], [flat[:, 0].mean(), flat[:, 0].std()], rtol=1e-5)
    np.testing.assert_allclose([centre[2], scale[2]], [flat[:, 2].mean(), flat[:, 2].std()], rtol=1e-5)
    bulk = ((X[:, :, 1] - centre[1]) / scale[1])[X[:, :, 1] < 1000]
    assert 0.8 < bulk.std() < 1.2


# --- every bad input is a DataError that says what is wrong ---------------------------------------


def _zip_with_garbage(p: Path) -> Path:
    """A .npz that is a zip but not numpy's format inside."""
    return (p / "d.npz").write_bytes(np.random.default_rng(0).bytes(500)) and p / "d.npz"


BAD_INPUTS = {
    "missing file": (lambda p: p / "missing.npz", "no such file"),
    "directory": (lambda p: (p / "data.npz").mkdir() or p / "data.npz", "is a directory"),
    "unknown extension": (lambda p: _write(p / "d.txt", "0,1,2\n"), "unknown format '.txt'"),
    "no extension": (lambda p: _write(p / "data", "0,1,2\n"), "unknown format '(none)'"),
    "corrupt npz (random bytes)": (_zip_with_garbage, "not a readable .npz"),
    "npz missing X_train": (lambda p: _npz(p / "d.npz", X=X0, y_train=Y0), "missing array 'X_train'"),
    "npz missing y_train": (lambda p: _npz(p / "d.npz", X_train=X0), "missing array 'y_train'"),
    "X_test without y_test": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=X0[:4]),
                              "has 'X_test' but not 'y_test'"),
    "y_test without X_test": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, y_test=Y0[:4]),
                              "has 'y_test' but not 'X_test'"),
    "pickled object array": (lambda p: _npz(p / "d.npz", X_train=np.array([{"a": 1}] * 40, dtype=object), y_train=Y0),
                             "pickled objects"),
    "mixed int/str labels (object array)": (
        lambda p: _npz(p / "d.npz", X_train=X0, y_train=np.array([0] * 30 + ["a"] * 10, dtype=object)),
        "pickled objects"),
    "2-D X": (lambda p: _npz(p / "d.npz", X_train=X0[:, :, 0], y_train=Y0),
              "expected 3 dimensions [n, timesteps, features]; for univariate series use X[..., None]"),
    "4-D X": (lambda p: _npz(p / "d.npz", X_train=X0[..., None], y_train=Y0), "expected 3 dimensions"),
    "empty X": (lambda p: _npz(p / "d.npz", X_train=X0[:, :0], y_train=Y0), "it is empty"),
    "string X": (lambda p: _npz(p / "d.npz", X_train=X0.astype(str), y_train=Y0), "expected numbers"),
    "NaN in X": (lambda p: _npz(p / "d.npz", X_train=np.where(np.arange(40)[:, None, None] == 7, np.nan, X0),
                                y_train=Y0), "NaN/inf values (first in sequence 7)"),
    "inf in X": (lambda p: _npz(p / "d.npz", X_train=np.where(np.arange(40)[:, None, None] == 3, np.inf, X0),
                                y_train=Y0), "NaN/inf values (first in sequence 3)"),
    "NaN in X_test": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=np.full((2, 6, 2), np.nan),
                                     y_test=Y0[:2]), "X_test has 24 NaN/inf"),
    "X/y length mismatch": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0[:-1]),
                            "X_train has 40 sequences but y_train has 39 labels"),
    "X_test/y_test length mismatch": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=X0[:5], y_test=Y0[:4]),
                                      "X_test has 5 sequences but y_test has 4 labels"),
    "2-D labels": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=np.stack([Y0, Y0], axis=1)),
                   "expected one label per sequence"),
    "non-integer float labels": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0 + 0.5), "non-integer"),
    "NaN labels": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=np.where(Y0 == 1, np.nan, 0.0)), "non-integer"),
    "one class only": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=np.zeros(40, int)), "one class only (0)"),
    "a class with a single sequence": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=np.r_[np.zeros(39, int), 1]),
                                       "class 1 has 1 training sequence"),
    "test label unseen in train": (
        lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=X0[:4], y_test=np.array([0, 1, 5, 0])),
        "y_test has label 5 that never occurs in y_train"),
    "test timesteps differ": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=X0[:4, :3], y_test=Y0[:4]),
                              "X_test has sequences of shape (3, 2) but X_train has (6, 2)"),
    "test features differ": (lambda p: _npz(p / "d.npz", X_train=X0, y_train=Y0, X_test=X0[:4, :, :1], y_test=Y0[:4]),
                             "X_test has sequences of shape (6, 1)"),
    "csv rows of different lengths": (lambda p: _write(p / "d.csv", "0,1,2,3\n1,1,2,3\n0,1,2\n1,4,5,6\n"),
                                      "row 3 has 2 values but row 1 has 3"),
    "csv non-numeric value": (lambda p: _write(p / "d.csv", "0,1,2\n1,1,oops\n0,1,2\n1,3,4\n"),
                              "row 2 has a non-numeric value 'oops'"),
    "csv NaN value": (lambda p: _write(p / "d.csv", "0,1,nan\n1,1,2\n0,1,2\n1,3,3\n"), "NaN/inf"),
    "csv label only": (lambda p: _write(p / "d.csv", "0\n1\n"), "a label but no values"),
    "csv empty": (lambda p: _write(p / "d.csv", "\n\n"), "no data rows"),
    "csv header only": (lambda p: _write(p / "d.csv", "label,a,b\n"), "no data rows"),
    "csv one class": (lambda p: _write(p / "d.csv", "1,1,2\n1,3,4\n1,5,6\n"), "one class only"),
    "csv binary": (lambda p: (p / "d.csv").write_bytes(b"\xff\xfe\x00\x81" * 50) and p / "d.csv", "not a text file"),
}


@pytest.mark.parametrize("make, phrase", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_raises_a_one_line_data_error_naming_the_file_and_problem(tmp_path, make, phrase):
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert phrase in msg
    assert str(path) in msg
    assert "\n" not in msg


def test_corrupt_npz_that_is_not_a_zip_is_not_called_a_pickle(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"\x93NUMPY" + np.random.default_rng(1).bytes(300))  # looks like a bare .npy
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "not a readable .npz" in str(info.value) and "pickle" not in str(info.value)


def test_corrupt_npz_with_a_bad_crc_is_not_readable(tmp_path):
    path = _npz(tmp_path / "d.npz", X_train=X0, y_train=Y0)
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF  # inside X_train.npy's stored bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(path)


def test_npz_with_a_truncated_array_member_is_not_called_a_pickle(tmp_path):
    import io

    buf = io.BytesIO()
    np.save(buf, X0)
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X_train.npy", buf.getvalue()[:200])  # header intact, data cut short
        z.writestr("y_train.npy", buf.getvalue()[:200])
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "pickle" not in str(info.value)


def test_test_file_with_unseen_label_and_mismatched_length(tmp_path):
    train = _write(tmp_path / "train.csv", "a,1,2,3\nb,1,2,3\na,4,5,6\nb,4,5,6\n")
    unseen = _write(tmp_path / "t1.csv", "a,1,2,3\nz,1,2,3\n")
    with pytest.raises(DataError, match="y_test has label 'z' that never occurs"):
        load_dataset(train, test_path=unseen)
    shorter = _write(tmp_path / "t2.csv", "a,1,2\nb,1,2\n")
    with pytest.raises(DataError, match=r"X_test has sequences of shape \(2, 1\) but X_train has \(3, 1\)"):
        load_dataset(train, test_path=shorter)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(train, test_path=tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown test file format '.npz'"):
        load_dataset(train, test_path=_npz(tmp_path / "t.npz", X_train=X0, y_train=Y0))


def test_test_option_is_refused_for_npz(tmp_path):
    with pytest.raises(DataError, match="--test is for .csv/.tsv data"):
        load_dataset(_npz(tmp_path / "d.npz", X_train=X0, y_train=Y0), test_path=tmp_path / "t.csv")
