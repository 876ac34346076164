"""A whole sweep in this process: create or resume the study (:func:`open_sweep`), run its trials
(:func:`work`), re-train the top-k (:mod:`sweep.retrain`), and close its records (:func:`finish`).

The inputs were validated by :func:`sweep.prepared.prepare` before anything is written.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from optuna.trial import FrozenTrial

from objectives.search_space import recipe_trials
from sweep.data import is_padded
from sweep.errors import first_line
from sweep.loop import budget_stop, count_finished, reap_stale_trials, run_trials
from sweep.preflight import check_tracking_store, resolve_tracking_uri
from sweep.prepared import OpenSweep, PreparedSweep, make_objective, make_tracker, study_identity
from sweep.records import BestTrial, RetrainEntry, TrialRecord, best_of, record_of, stored_retraining, trial_records
from sweep.redact import credential_free, mask_url
from sweep.retrain import retrain_top
from sweep.storage import open_storage
from sweep.study import create_or_resume, run_target
from sweep.summary import collapse_summary

_logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    name: str
    n_trials: int
    ran: int
    resumed: bool
    best: BestTrial | None
    records: list[TrialRecord]
    parent_run_id: str | None
    tracking_uri: str
    experiment_id: str | None
    retrained: list[RetrainEntry] | None = None


def open_sweep(prep: PreparedSweep, *, allow_changes: bool = False) -> OpenSweep:
    """Create or resume the study (once, before any worker starts) and its MLflow parent run.

    A time budget's deadline left on the study by an earlier invocation is cleared
    (:func:`start_clock` sets this one's).

    The storage is opened before TensorFlow or MLflow is imported, so a wrong or unreachable
    URL fails in about a second.
    """
    cfg, data = prep.cfg, prep.data
    check_tracking_store(resolve_tracking_uri(cfg.tracking_uri))  # before anything is written, Optuna included
    storage = open_storage(cfg.storage)
    # No more recipes than the sweep runs: a queued one past N would stay WAITING in the study.
    X = prep.split.X_train
    first = (recipe_trials(cfg.space, padded=is_padded(X), features=X.shape[2], timesteps=X.shape[1])[:cfg.n_trials]
             if cfg.baseline else [])
    study, resumed = create_or_resume(
        cfg, name=prep.name, storage=storage, identity=study_identity(prep), allow_changes=allow_changes,
        first_trials=first,
    )
    tracker = make_tracker(prep)
    n_trials, _ = run_target(study.user_attrs)  # None: a time budget alone, no trial limit
    parent = tracker.start_sweep(
        params={
            "data": Path(data.source).name,
            "data_fingerprint": data.fingerprint(),
            "n_classes": data.n_classes,
            "timesteps": data.timesteps,
            "features": data.features,
            "n_train": len(prep.split.y_train),
            "n_val": len(prep.split.y_val),
            "n_test": 0 if prep.split.y_test is None else len(prep.split.y_test),
            "epochs": cfg.train.epochs,
            "patience": cfg.train.patience,
            "val_fraction": cfg.train.val_fraction,
            "seed": cfg.seed,
            "pruner": cfg.pruner,
            **({"budget_seconds": cfg.budget} if cfg.budget is not None else {}),
        },
        tags={**({"n_trials_target": str(n_trials)} if n_trials is not None else {}), "optuna.storage": mask_url(cfg.storage),
              "optuna.study": prep.name, "data_path": str(Path(data.source).resolve())},
    )
    study.set_user_attr("mlflow_parent_run_id", parent)
    # Credential-free: a worker or `sweep predict` adds its own credentials from its environment.
    study.set_user_attr("tracking_uri", credential_free(tracker.tracking_uri))
    study.set_user_attr("deadline", None)
    link_models(study, tracker)
    close_dead_trials(study, tracker)
    return OpenSweep(prep=prep, study=study, resumed=resumed, tracker=tracker, parent_run_id=parent)


def link_models(study: Any, tracker: Any) -> None:
    """Keep a logged model's links on the study (``model_uri.<number>``, ...): the model is logged
    after Optuna stored the trial, and Optuna refuses attributes on a finished trial."""
    def link(number: int, links: dict[str, str]) -> None:
        for key, value in links.items():
            study.set_user_attr(f"{key}.{number}", value)

    tracker.on_model = link


def close_dead_trials(study: Any, tracker: Any, *, reap: bool = True) -> None:
    """Fail trials whose worker stopped sending heartbeats, and give every trial Optuna no longer
    runs an ended MLflow run (``reap=False``: the trials were just reaped). Best-effort for MLflow."""
    if reap:
        reaped = reap_stale_trials(study)
        if reaped:
            _logger.warning("trials %s had no heartbeat and were marked failed", reaped)
    sync_tracking(study, tracker, seconds=0)


CATCH_UP_SECONDS = 60.0  # at a sweep's end, how long trials not yet in MLflow are retried


def sync_tracking(study: Any, tracker: Any, *, seconds: float) -> list[int] | None:
    """Log to MLflow what it lacks: this process's postponed trial ends (tried again for up to
    ``seconds``), then every finished or failed trial of the study MLflow holds no ended run for
    (from what Optuna stored). Returns the trial numbers logged from Optuna, None if MLflow could
    not be reached (nothing raised: the results are safe in the study)."""
    tracker.catch_up(seconds=seconds)
    try:
        return tracker.sync_trials(study.get_trials(deepcopy=False))
    except Exception as exc:  # noqa: BLE001 - MLflow still away; `sweep sync` or the next run catches up
        tracker.note_outage("MLflow sync postponed", exc)
        return None


def work(
    opened: OpenSweep, *,
    on_start: Callable[[int, int], None] | None = None,
    on_trial_end: Callable[[TrialRecord, BestTrial | None], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> int:
    """Run trials in this process until the study holds its N finished trials; returns how many ran."""
    from objectives import model as lstm

    prep, study, tracker = opened.prep, opened.study, opened.tracker
    cfg = prep.cfg
    lstm.configure_threads(cfg.threads)
    # Models of the trials the re-training may choose from are logged (a worker reads k from the study).
    keep_top = max(1, int(study.user_attrs.get("run_settings", {}).get("retrain_top", cfg.retrain_top)))
    objective = make_objective(prep, tracker=tracker, adjust_decision=cfg.adjust_decision, deadline=opened.deadline,
                           keep_top=keep_top)
    opened.objective = objective

    def after_trial(study_: Any, trial: FrozenTrial) -> None:
        objective.end_logs()  # Optuna has stored the trial: now MLflow hears of it
        if on_trial_end is not None:
            on_trial_end(record_of(trial), best_of(study_))

    def after_reap(numbers: list[int]) -> None:
        _logger.warning("trials %s had no heartbeat (worker gone) and were failed; retrying with their parameters",
                        numbers)
        close_dead_trials(study, tracker, reap=False)

    if on_start is not None:
        on_start(count_finished(study), cfg.n_trials)
    return run_trials(study, objective, n_trials=cfg.n_trials, on_trial_end=after_trial, on_wait=on_wait,
                      on_reap=after_reap, should_stop=budget_stop(opened.deadline) if opened.deadline else None)


def finish(opened: OpenSweep, *, status: str) -> tuple[list[TrialRecord], BestTrial | None]:
    """Reap dead trials, close their MLflow runs, write the study summary; end the parent run.

    ``status`` FINISHED ends the parent run only if the study holds its N trials (a worker that
    stops early leaves it RUNNING for the others); KILLED/FAILED always end it.
    """
    study, tracker = opened.study, opened.tracker
    if opened.objective is not None:
        opened.objective.end_logs()  # e.g. the trial Ctrl-C stopped: Optuna stored it as failed
    reap_stale_trials(study)
    tracker.flush()
    seconds = float(os.environ.get("SWEEP_MLFLOW_CATCHUP_SECONDS", CATCH_UP_SECONDS))
    synced = sync_tracking(study, tracker, seconds=seconds if status == "FINISHED" else min(seconds, 5.0))
    records = trial_records(study)
    best = best_of(study)
    summary = collapse_summary(records)
    study.set_user_attr("summary", summary.to_dict())
    if opened.deadline is not None and opened.lead:
        # `sweep status` shows a budget's time left only while its run lasts; most runs end before the deadline.
        study.set_user_attr("deadline", {**opened.deadline.to_dict(), "ended_at": time.time()})
    done = opened.search_done()
    if opened.deadline is not None and not opened.lead and status == "FINISHED":
        done = False  # under a time budget the user's own process re-trains, selects and ends the parent run
    if synced is None or tracker.backlog:
        _logger.warning(
            "the MLflow store %s could not be reached: some trials are not in MLflow yet (their results are in the "
            "Optuna study); run `sweep sync %s` once it is back", tracker.tracking_uri, opened.prep.name)
    elif status != "FINISHED" or done:
        try:
            tracker.end_sweep(records, best, status=status, summary=summary, importances=importances(study),
                              retrained=stored_retraining(study))
        except Exception as exc:  # noqa: BLE001 - the study is complete in Optuna; `sweep sync` ends the run later
            _logger.warning("could not close the study's MLflow run (%s); run `sweep sync %s` to do it",
                            first_line(exc), opened.prep.name)
    return records, best


def importances(study: Any) -> dict[str, float] | None:
    """Optuna's parameter importances over the complete trials, by its default evaluator (PED-ANOVA in
    Optuna 5); None below 3 complete trials."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3 or not any(len({t.params.get(k) for t in complete}) > 1 for k in complete[0].params):
        return None
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" when every trial scores alike
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as exc:  # e.g. a parameter with a single value everywhere
        _logger.warning("no parameter importances: %s", exc)
        return None


def run_sweep(
    prep: PreparedSweep, *, allow_changes: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_trial_end: Callable[[TrialRecord, BestTrial | None], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> SweepResult:
    """Create or resume the study and run it to ``n_trials`` finished trials in this process.

    Args:
        prep: the validated sweep from :func:`prepare`.
        allow_changes: resume even if the stored data/space/settings differ.
        on_start: called with (finished so far, target) once the study is open.
        on_trial_end: called after each trial with its row and the best trial so far.
        on_wait: called when the last trials run in other processes and this one waits.
    """
    opened = open_sweep(prep, allow_changes=allow_changes)
    return run_opened(opened, on_start=on_start, on_trial_end=on_trial_end, on_wait=on_wait)


def run_opened(
    opened: OpenSweep, *, on_retrain: Callable[[RetrainEntry | None], None] | None = None, **callbacks: Any,
) -> SweepResult:
    """Work on an opened (or joined) study in this process, re-train its top-k, then :func:`finish` it."""
    status = "FAILED"
    ran = 0
    failed = False
    try:
        ran = work(opened, **callbacks)
        retrain_top(opened, on_retrain=on_retrain)
        status = "FINISHED"
    except KeyboardInterrupt:
        status, failed = "KILLED", True
        raise
    except BaseException:
        failed = True
        raise
    finally:
        try:
            records, best = finish(opened, status=status)
        except Exception as exc:
            if not failed:
                raise
            # Cleanup never hides the error that stopped the sweep.
            _logger.warning("could not close the sweep's records after the error: %s",
                            first_line(exc))
    return sweep_result(opened, ran=ran, records=records, best=best)


def sweep_result(opened: OpenSweep, *, ran: int, records: list[TrialRecord], best: BestTrial | None) -> SweepResult:
    return SweepResult(
        name=opened.prep.name, n_trials=opened.prep.cfg.n_trials, ran=ran, resumed=opened.resumed, best=best,
        records=records, parent_run_id=opened.parent_run_id, tracking_uri=opened.tracker.tracking_uri,
        experiment_id=opened.tracker.experiment_id,
        retrained=stored_retraining(opened.study) if opened.lead else None,
    )
