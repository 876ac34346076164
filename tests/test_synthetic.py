"""The synthetic sets: seed-signal hides a *temporal* signal with a known Bayes rate; seed-noise has none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from sweep.data import load_dataset
from sweep.errors import DataError
from sweep.synthetic import make_dataset, write_dataset


def _ordered(X: np.ndarray) -> np.ndarray:
    """The raw sequences, flattened: the time order is kept."""
    return X.reshape(len(X), -1)


def _order_blind(X: np.ndarray) -> np.ndarray:
    """Each sequence's values per feature, sorted: the same values with the time order removed."""
    return np.sort(X, axis=1).reshape(len(X), -1)


def _balanced_accuracy(arrays: dict[str, np.ndarray], features) -> float:
    clf = LogisticRegression(class_weight="balanced", max_iter=2000)
    clf.fit(features(arrays["X_train"]), arrays["y_train"])
    return balanced_accuracy_score(arrays["y_test"], clf.predict(features(arrays["X_test"])))


@pytest.fixture(scope="module")
def signal() -> dict[str, np.ndarray]:
    return make_dataset("seed-signal", seed=3)


@pytest.fixture(scope="module")
def noise() -> dict[str, np.ndarray]:
    return make_dataset("seed-noise", seed=4)


@pytest.mark.parametrize("kind", ["seed-signal", "seed-noise"])
def test_default_shapes_and_80_20_labels(kind):
    a = make_dataset(kind)
    assert a["X_train"].shape == (1000, 20, 5) and a["X_test"].shape == (1000, 20, 5)
    assert a["X_train"].dtype == np.float32
    assert a["y_train"].shape == (1000,) and a["y_test"].shape == (1000,)
    assert np.bincount(a["y_train"]).tolist() == [800, 200]
    assert np.bincount(a["y_test"]).tolist() == [800, 200]
    assert np.isfinite(a["X_train"]).all()
    meta = json.loads(str(a["meta"]))
    assert meta["kind"] == kind and meta["timesteps"] == 20 and meta["features"] == 5
    assert meta["minority_share"] == 0.2


def test_labels_are_shuffled_not_sorted(signal):
    y = signal["y_train"]
    assert 0 < np.flatnonzero(y == 1)[0] < 100 and np.flatnonzero(y == 0)[-1] > 900


def test_seed_signal_meta_states_a_bayes_rate_between_0_80_and_0_95(signal):
    meta = json.loads(str(signal["meta"]))
    assert 0.80 <= meta["bayes_balanced_accuracy"] <= 0.95
    assert meta["bayes_balanced_accuracy"] == 0.9
    assert abs(meta["bayes_balanced_accuracy_test"] - 0.9) < 0.05
    assert abs(meta["bayes_balanced_accuracy_train"] - 0.9) < 0.05


def test_seed_noise_meta_states_a_bayes_rate_of_one_half(noise):
    assert json.loads(str(noise["meta"]))["bayes_balanced_accuracy"] == 0.5


def test_the_ramp_direction_is_the_bayes_optimal_rule(signal):
    # Reading the hidden bit from the order of feature 0 (end minus start) scores the stated Bayes rate.
    X, y = signal["X_test"], signal["y_test"]
    z_hat = (X[:, -1, 0] > X[:, 0, 0]).astype(int)
    meta = json.loads(str(signal["meta"]))
    assert balanced_accuracy_score(y, z_hat) == pytest.approx(meta["bayes_balanced_accuracy_test"], abs=1e-9)


def test_every_sequence_holds_the_same_multiset_of_ramp_values(signal):
    # Sorted, a rising and a falling sequence differ only by noise: the order carries the signal.
    X, y = signal["X_train"], signal["y_train"]
    sorted0 = np.sort(X[:, :, 0], axis=1)
    gap = np.abs(sorted0[y == 0].mean(axis=0) - sorted0[y == 1].mean(axis=0))
    assert gap.max() < 0.1


def test_the_signal_is_temporal_an_ordered_model_finds_it(signal):
    assert _balanced_accuracy(signal, _ordered) >= 0.80


def test_the_signal_is_temporal_an_order_blind_model_does_not(signal):
    assert _balanced_accuracy(signal, _order_blind) < 0.60


@pytest.mark.parametrize("features", [_ordered, _order_blind], ids=["ordered", "order-blind"])
def test_seed_noise_has_nothing_to_learn(noise, features):
    assert _balanced_accuracy(noise, features) < 0.60


def test_seeded():
    a, b, c = (make_dataset("seed-signal", n_train=40, n_test=20, seed=s) for s in (1, 1, 2))
    for key in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["X_train"], c["X_train"])


def test_agreement_sets_the_bayes_rate():
    a = make_dataset("seed-signal", n_train=2000, n_test=2000, agreement=1.0, seed=0)
    meta = json.loads(str(a["meta"]))
    assert meta["bayes_balanced_accuracy"] == 1.0 and meta["bayes_balanced_accuracy_test"] == 1.0
    z_hat = (a["X_test"][:, -1, 0] > a["X_test"][:, 0, 0]).astype(int)
    np.testing.assert_array_equal(z_hat, a["y_test"])


def test_no_test_split_when_n_test_is_zero():
    a = make_dataset("seed-noise", n_train=20, n_test=0)
    assert "X_test" not in a and "y_test" not in a and a["X_train"].shape == (20, 20, 5)


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(kind="seed-magic"), "unknown kind 'seed-magic'"),
        (dict(kind="seed-signal", n_train=19), "--n must be in [20, 1000000]"),
        (dict(kind="seed-signal", n_train=10**12), "got 1000000000000"),
        (dict(kind="seed-signal", n_test=-1), "--n-test in [0, 1000000]"),
        (dict(kind="seed-signal", agreement=0.5), "--agreement must be in (0.5, 1]"),
        (dict(kind="seed-signal", agreement=1.01), "--agreement"),
    ],
)
def test_make_dataset_rejects_bad_arguments(kwargs, phrase):
    kind = kwargs.pop("kind")
    with pytest.raises(DataError) as info:
        make_dataset(kind, **kwargs)
    assert phrase in str(info.value)


def test_write_dataset_round_trips_through_the_loader(tmp_path):
    arrays = make_dataset("seed-signal", n_train=60, n_test=30, seed=5)
    path = write_dataset(arrays, tmp_path / "s.npz")
    d = load_dataset(path)
    assert d.labels == (0, 1) and d.X_train.shape == (60, 20, 5) and d.X_test.shape == (30, 20, 5)
    np.testing.assert_array_equal(d.X_train, arrays["X_train"])
    assert d.meta["bayes_balanced_accuracy"] == 0.9 and d.meta["kind"] == "seed-signal"


@pytest.mark.parametrize("name", ["s.csv", "s", "s.npz.txt"])
def test_write_dataset_rejects_a_non_npz_path(tmp_path, name):
    with pytest.raises(DataError, match="must end in .npz"):
        write_dataset(make_dataset("seed-noise", n_train=20, n_test=0), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_write_dataset_rejects_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist; create it first"):
        write_dataset(make_dataset("seed-noise", n_train=20, n_test=0), tmp_path / "no" / "s.npz")
