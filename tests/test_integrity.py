"""`sweep predict` / `sweep serve` load only the champion the sweep registered, with the files it registered."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from helpers import SWEEP, clean_env

from sweep.errors import ModelIntegrityError
from sweep.integrity import champion_record, tree_digest


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_tree_digest_depends_on_every_name_and_byte_but_not_on_where_the_tree_is(tmp_path):
    files = {"MLmodel": b"flavors: {}\n", "artifacts/model.keras": b"\x00weights", "code/pyfunc_model.py": b"x = 1\n"}
    a = tree_digest(_tree(tmp_path / "a", files))
    assert a.startswith("sha256:") and a == tree_digest(_tree(tmp_path / "b", files))
    for name, change in [("c", {**files, "code/pyfunc_model.py": b"x = 2\n"}),
                         ("d", {**files, "extra.py": b""}),
                         ("e", {k.replace("MLmodel", "MLmodel2"): v for k, v in files.items()}),
                         ("f", {k: v for k, v in files.items() if k != "MLmodel"})]:
        assert tree_digest(_tree(tmp_path / name, change)) != a, name
    link = _tree(tmp_path / "g", files)
    (link / "evil.py").symlink_to(tmp_path / "a" / "MLmodel")
    with pytest.raises(ModelIntegrityError, match="symbolic link"):
        tree_digest(link)


def _study(**attrs) -> optuna.Study:
    study = optuna.create_study(study_name="s", direction="maximize")
    dist = {"units": optuna.distributions.IntDistribution(8, 64)}
    study.add_trial(optuna.trial.create_trial(value=0.7, params={"units": 8}, distributions=dist))
    study.add_trial(optuna.trial.create_trial(value=0.9, params={"units": 16}, distributions=dist, user_attrs=attrs))
    return study


def test_the_champion_is_the_best_trials_recorded_version_and_digest():
    record = champion_record(_study(model_version="3", model_digest="sha256:ab"))
    assert (record.trial, record.version, record.digest) == (1, "3", "sha256:ab")
    study = _study()
    study.set_user_attr("model_version.1", "4")  # stored on the study once the trial had finished
    study.set_user_attr("model_digest.1", "sha256:cd")
    assert champion_record(study).version == "4"
    with pytest.raises(ModelIntegrityError, match="no registered model with a recorded digest"):
        champion_record(_study(model_uri="models:/m-1"))
    with pytest.raises(ModelIntegrityError, match="no completed trial"):
        champion_record(optuna.create_study())


# -- the real registry (SQLite store, no TensorFlow) -------------------------------------------------
import mlflow  # noqa: E402 - this half of the file needs MLflow, the first half does not


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _register(tracker, number: int) -> str:
    """Log a tiny pyfunc model in a trial run and register it the way a sweep does; returns its version."""
    with mlflow.start_run(experiment_id=tracker.experiment_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
        version = tracker.registry.crown(info.model_uri, model_id=info.model_id, trial_number=number, score=0.5 + number,
                                val_loss=None)
    return str(version)


def _tracker(tmp_path: Path) -> tuple[Any, str]:
    """The study's tracker on an MLflow SQLite store in ``tmp_path``, its parent run started; and the store's URI."""
    from sweep.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(tracking_uri=uri, study_name="s", log_models="best", labels=[0, 1], timesteps=3,
                            features=1, mean=[0.0], std=[1.0])
    tracker.start_sweep(params={}, tags={})
    return tracker, uri


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A study's MLflow store with one registered champion, and the Optuna study that recorded it."""
    monkeypatch.chdir(tmp_path)
    tracker, uri = _tracker(tmp_path)
    version = _register(tracker, 1)
    storage = f"sqlite:///{tmp_path}/sweep.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dist = {"units": optuna.distributions.IntDistribution(8, 64)}
    study.add_trial(optuna.trial.create_trial(
        value=0.9, params={"units": 16}, distributions=dist,
        user_attrs={"model_version": version, "model_digest": tracker.registry.model_digest(version, tracker.tracking_uri)}))
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 3, 1), np.float32))
    return tracker, study, uri, storage


def _model_files(tracker, version: str) -> Path:
    source = tracker.client.get_model_version("s", version).source
    location = tracker.client.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def test_fetch_returns_the_verified_files_and_refuses_tampered_ones(registered, tmp_path):
    from sweep.tracking import fetch_champion

    tracker, study, uri, _ = registered
    record = champion_record(study)
    local = fetch_champion(record, uri, tmp_path / "ok")
    assert (local / "MLmodel").exists() and tree_digest(local) == record.digest
    with (_model_files(tracker, record.version) / "python_model.pkl").open("ab") as fh:
        fh.write(b"# one more byte of code")
    with pytest.raises(ModelIntegrityError, match="not the ones the sweep registered"):
        fetch_champion(record, uri, tmp_path / "tampered")


def test_fetch_refuses_a_champion_alias_moved_to_another_version(registered, tmp_path):
    from sweep.tracking import fetch_champion

    tracker, study, uri, _ = registered
    other = _register(tracker, 7)  # a higher score: crown moves the alias, as an intruder could
    assert other != champion_record(study).version
    with pytest.raises(ModelIntegrityError, match=f"points at model version {other}"):
        fetch_champion(champion_record(study), uri, tmp_path / "moved")


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_predict_and_serve_refuse_a_tampered_champion_with_one_line(registered, tmp_path, command):
    tracker, study, uri, storage = registered
    with (_model_files(tracker, champion_record(study).version) / "MLmodel").open("a") as fh:
        fh.write("# tampered\n")
    args = ["predict", "s", "d.npz", "--out", "p.csv"] if command == "predict" else ["serve", "s"]
    r = subprocess.run([SWEEP, *args, "--storage", storage, "--tracking-uri", uri], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "refusing to load" in lines[0], r.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_champion_the_retraining_chose_is_registered_with_its_digest_and_verifies(tmp_path, monkeypatch):
    """The margin rule may ship a configuration that was never a new best, so never registered: the
    sweep's end registers it, points the alias at it and records its version and digest in the
    study, and `sweep predict` / `sweep serve` then accept it (they once refused the README's own
    demo study)."""
    from sweep.records import best_of, trial_records
    from sweep.runner import link_models
    from sweep.tracking import fetch_champion

    monkeypatch.chdir(tmp_path)
    tracker, uri = _tracker(tmp_path)
    winner_version = _register(tracker, 0)
    with mlflow.start_run(experiment_id=tracker.experiment_id) as run:
        chosen_uri = mlflow.pyfunc.log_model(name="model", python_model=Echo()).model_uri
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/sweep.db", direction="maximize")
    dist = {"units": optuna.distributions.IntDistribution(8, 64)}
    study.add_trial(optuna.trial.create_trial(value=0.9, params={"units": 16}, distributions=dist, user_attrs={
        "model_version": winner_version, "model_digest": tracker.registry.model_digest(winner_version, uri)}))
    study.add_trial(optuna.trial.create_trial(value=0.85, params={"units": 32}, distributions=dist, user_attrs={
        "model_uri": chosen_uri, "mlflow_run_id": run.info.run_id}))
    study.set_user_attr("champion", {"trial": 1, "search_winner": 0, "reason": "re-trained mean beyond the spread"})
    link_models(study, tracker)

    tracker.end_sweep(trial_records(study), best_of(study), status="FINISHED")

    record = champion_record(study)
    assert record.trial == 1 and record.version != winner_version
    assert tracker.client.get_model_version_by_alias("s", "champion").version == int(record.version)
    local = fetch_champion(record, uri, tmp_path / "chosen")
    assert tree_digest(local) == record.digest
