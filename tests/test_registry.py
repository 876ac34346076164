"""The champion alias follows the study's best trial, whatever order racing workers registered in."""

from __future__ import annotations

import types
from pathlib import Path

from sweep.tracking import CHAMPION, MlflowTracker


def _tracker(tmp_path: Path, monkeypatch) -> MlflowTracker:
    """A tracker with a study run started, on an SQLite store in ``tmp_path`` (artifacts there too)."""
    monkeypatch.chdir(tmp_path)
    tracker = MlflowTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", study_name="s", log_models="best",
                            labels=[0, 1], timesteps=3, features=1, mean=[0.0], std=[1.0])
    tracker.start_sweep(params={}, tags={})
    return tracker


def test_sync_champion_moves_the_alias_to_the_best_trials_version(tmp_path: Path, monkeypatch):
    tracker = _tracker(tmp_path, monkeypatch)
    client = tracker.client
    client.create_registered_model("s")
    for number in (0, 1):  # two tied trials, both registered; trial 1 registered last but took the alias
        run = client.create_run(tracker.experiment_id)
        client.create_model_version("s", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                    tags={"sweep.trial_number": str(number)})
    client.set_registered_model_alias("s", CHAMPION, "2")

    assert tracker.registry.sync_champion(0) == "1"  # the version to record for trial 0
    assert str(client.get_model_version_by_alias("s", CHAMPION).version) == "1"
    assert tracker.registry.sync_champion(0) == "1"  # already right: nothing changes
    assert client.get_model_version_by_alias("s", CHAMPION).tags["sweep.trial_number"] == "0"
    assert tracker.registry.sync_champion(7, model_uri=None) is None  # a trial without a logged model: left alone
    assert str(client.get_model_version_by_alias("s", CHAMPION).version) == "1"
    # the re-training chose a trial whose model was logged but never registered: registered now
    run = client.create_run(tracker.experiment_id)
    assert tracker.registry.sync_champion(5, model_uri=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                          score=0.8) == "3"
    champion = client.get_model_version_by_alias("s", CHAMPION)
    assert champion.tags["sweep.trial_number"] == "5" and str(champion.version) == "3"
    assert client.get_registered_model("s").tags["sweep.champion_trial"] == "5"


def test_crown_moves_the_champion_to_a_tied_score_only_with_a_lower_validation_loss(tmp_path: Path, monkeypatch):
    tracker = _tracker(tmp_path, monkeypatch)
    client = tracker.client

    def crown(number: int, score: float, loss: float | None) -> str:
        run = client.create_run(tracker.experiment_id)
        tracker.registry.crown(f"runs:/{run.info.run_id}/model", model_id=None, trial_number=number, score=score, val_loss=loss)
        return client.get_model_version_by_alias("s", CHAMPION).tags["sweep.trial_number"]

    assert crown(0, 0.90, 0.40) == "0"
    assert crown(1, 0.90, 0.50) == "0"   # tied score, higher loss: stays
    assert crown(2, 0.90, 0.20) == "2"   # tied score, lower loss: moves
    assert crown(3, 0.85, 0.01) == "2"   # lower score: stays, whatever its loss
    assert crown(4, 0.95, None) == "4"   # higher score: moves


def test_a_crown_whose_alias_move_fails_still_returns_its_version(tmp_path: Path, monkeypatch, caplog):
    # Two workers finishing at the same moment both move the alias; on a SQL store one write can
    # fail. The version is registered all the same and must be recorded (sweep predict checks it).
    tracker = _tracker(tmp_path, monkeypatch)
    run = tracker.client.create_run(tracker.experiment_id)

    def collide(version, trial_number):
        raise RuntimeError("duplicate key value violates unique constraint \"registered_model_tag_pk\"")

    monkeypatch.setattr(tracker.registry, "point_champion", collide)
    version = tracker.registry.crown(f"runs:/{run.info.run_id}/model", model_id=None, trial_number=0, score=0.9)
    assert version == "1" and "champion alias not moved yet" in caplog.text


def _best(version, digest):
    return types.SimpleNamespace(number=0, model_uri="models:/m-1", mlflow_run_id="r", value=0.9,
                                 record=types.SimpleNamespace(model_version=version, model_digest=digest))


def test_the_sweeps_end_records_a_champion_version_the_study_lost():
    from sweep.report import sync_champion

    recorded = []
    registry = types.SimpleNamespace(sync_champion=lambda *a, **k: "2",
                                     model_links=lambda version, uri: {"model_version": version, "model_digest": "sha256:x"})
    for version, digest, expected in [(None, None, 1), ("2", None, 1), ("1", "sha256:old", 1), ("2", "sha256:x", 0)]:
        recorded.clear()
        sync_champion(registry, _best(version, digest), tracking_uri="file:x",
                      record_model=lambda number, links: recorded.append((number, links)))
        assert len(recorded) == expected
        if expected:
            assert recorded == [(0, {"model_version": "2", "model_digest": "sha256:x"})]
