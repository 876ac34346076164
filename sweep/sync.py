"""``sweep sync``: MLflow catches up with a study whose trials it missed (it was away)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sweep.errors import StudyError
from sweep.loop import count_finished
from sweep.records import best_of, stored_retraining, trial_records
from sweep.runner import importances, link_models
from sweep.storage import open_storage
from sweep.study import join_study, run_done
from sweep.summary import collapse_summary


@dataclass
class SyncResult:
    name: str
    tracking_uri: str
    logged: list[int]  # trials logged now, from what Optuna stored
    trials: int  # finished or failed trials the study holds (all now in MLflow)
    closed_parent: bool  # the study's run was ended now (its N trials, or its time budget, are done)


def sync_study(name: str, storage_url: str, *, tracking_uri: str | None = None) -> SyncResult:
    """Give every finished or failed trial of a study an ended MLflow run (``sweep sync``), and end the
    study's run if the study's run is over (its N trials, or its time budget's deadline passed with
    nothing running) but the MLflow run was left open (MLflow was away).

    Raises:
        StudyError: unknown study, or one without an MLflow run.
        SweepError: the MLflow store cannot be reached.
    """
    from sweep.errors import SweepError
    from sweep.tracking import MlflowTracker

    study = join_study(name, open_storage(storage_url, must_exist=True, heartbeat=False))
    attrs = study.user_attrs
    parent = attrs.get("mlflow_parent_run_id")
    if not parent:
        raise StudyError(f"study {name!r} has no MLflow run yet; start it with `sweep run DATA --study {name}` first")
    tracker = MlflowTracker(
        tracking_uri=tracking_uri or attrs.get("tracking_uri"), study_name=name,
        log_models=attrs.get("run_settings", {}).get("log_models", "best"), labels=list(attrs.get("labels", [])),
        timesteps=int(attrs.get("timesteps", 0)), features=int(attrs.get("features", 0)), mean=[], std=[],
    )
    tracker.attach(parent)
    link_models(study, tracker)  # a champion registered at the end records its version and digest
    trials = study.get_trials(deepcopy=False)
    try:
        logged = tracker.sync_trials(trials)
        closed = False
        running = sum(t.state.name == "RUNNING" for t in trials)
        over = run_done(attrs, finished=count_finished(study), running=running, now=time.time())
        if over and tracker.parent_status() == "RUNNING":
            records = trial_records(study)
            tracker.end_sweep(records, best_of(study), status="FINISHED", summary=collapse_summary(records),
                              importances=importances(study), retrained=stored_retraining(study))
            closed = True
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - store/HTTP errors vary
        text = str(exc).strip()
        raise SweepError(f"cannot log to the MLflow store {tracker.tracking_uri}: "
                         f"{text.splitlines()[0][:200] if text else type(exc).__name__}; is it up? "
                         "check --tracking-uri / MLFLOW_TRACKING_URI") from None
    counted = sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED", "FAIL")
                  and not str(t.user_attrs.get("fail_reason", "")).startswith("surplus"))
    return SyncResult(name=name, tracking_uri=tracker.tracking_uri, logged=logged, trials=counted,
                      closed_parent=closed)
