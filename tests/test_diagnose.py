"""`sweep diagnose DATA`: the signal check must tell noise from signal, with margins that hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_sweep_cli
from sweep.data import load_dataset
from sweep.diagnose import diagnose, signal_check, summary_features
from sweep.synthetic import make_dataset, write_dataset


def _data(tmp_path, kind: str, seed: int = 0, n: int = 300):
    return load_dataset(write_dataset(make_dataset(kind, n_train=n, n_test=200, seed=seed), tmp_path / f"{kind}.npz"))


def test_summary_features_see_the_order_of_values():
    """seed-signal hides its bit in the *direction* of a ramp: the features must tell the two apart."""
    up = np.linspace(0, 1, 20)[None, :, None]
    f_up, f_down = summary_features(up), summary_features(up[:, ::-1])
    assert f_up.shape == (1, 8)
    assert np.allclose(f_up[0, :4], f_down[0, :4])      # mean, std, min, max are order-blind
    assert f_up[0, 4] > 0 > f_down[0, 4]                 # slope
    assert f_up[0, 5] > 0 > f_down[0, 5]                 # last - first


@pytest.mark.parametrize("seed", range(3))
def test_noise_is_never_called_signal(tmp_path, seed):
    d = diagnose(_data(tmp_path, "seed-noise", seed), seed=seed)
    assert not d.signal.has_signal and d.signal.p_value > 0.01
    assert abs(d.signal.baseline_balanced_accuracy - 0.5) < 0.1
    assert not d.verdict.startswith("Signal found")


def test_the_demo_noise_set_is_called_noise_in_one_sentence(tmp_path):
    """The file `sweep make-data seed-noise` writes (1000 series, seed 0): p = 0.75 when written."""
    d = diagnose(load_dataset(write_dataset(make_dataset("seed-noise"), tmp_path / "noise.npz")))
    assert d.signal.p_value > 0.5
    assert d.verdict.startswith("No signal: the labels look independent of the inputs")
    assert d.verdict.count(". ") == 0 and d.verdict.endswith(".")


@pytest.mark.parametrize("seed", [0, 1])
def test_signal_is_called_signal(tmp_path, seed):
    d = diagnose(_data(tmp_path, "seed-signal", seed), seed=seed)
    assert d.signal.has_signal and d.signal.p_value <= 0.01
    assert d.signal.baseline_balanced_accuracy > 0.8 > d.signal.shuffled_p95
    assert d.verdict.startswith("Signal found")


def test_class_counts_and_chance(tmp_path):
    d = diagnose(_data(tmp_path, "seed-noise", 0, n=500), n_permutations=9)
    assert [(c.label, c.train, c.test) for c in d.classes] == [("0", 400, 160), ("1", 100, 40)]
    assert d.signal.n_permutations == 9
    assert d.imbalance_ratio == 4.0 and d.chance_balanced_accuracy == 0.5 and d.majority_class_accuracy == 0.8
    assert (d.timesteps, d.features, len(d.feature_stats)) == (20, 5, 5)


def test_check_is_seeded():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(120, 10, 2)), np.repeat([0, 1], 60)
    assert signal_check(X, y, seed=4, n_permutations=19) == signal_check(X, y, seed=4, n_permutations=19)


def test_cli_prints_one_clear_sentence_for_noise_and_json(tmp_path):
    path = write_dataset(make_dataset("seed-noise", n_train=200, n_test=0, seed=2), tmp_path / "noise.npz")
    result = run_sweep_cli("diagnose", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "signal check (" in result.stdout and "Signal found" not in result.stdout
    as_json = run_sweep_cli("diagnose", str(path), "--json", cwd=tmp_path)
    doc = json.loads(as_json.stdout)
    assert doc["signal"]["has_signal"] is False and doc["classes"][1]["train"] == 40
    assert list(tmp_path.iterdir()) == [path], "diagnose writes nothing"


def test_cli_bad_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    result = run_sweep_cli("diagnose", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ECG200", "MedicalImages", "Earthquakes"])
def test_real_data_with_signal_is_not_called_noise(name):
    """Published classifiers beat chance on these (see their JSON cards); the check must see it too.
    (p = 0.01 is the smallest value 99 shuffles can give: the real labels beat every one.)"""
    path = SHARED / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} not found (the shared datasets sit beside the repository)")
    d = diagnose(load_dataset(path))
    assert d.signal.has_signal and d.signal.baseline_balanced_accuracy > d.signal.shuffled_p95 + 0.03
    assert d.verdict.startswith("Signal found")
