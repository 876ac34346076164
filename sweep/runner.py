"""A whole sweep: validate everything first, then create or resume the study and run it.

Order matters for the promise "bad input changes nothing": the data, the config and the storage
URL are checked before any database or MLflow store is written.
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

from objectives.records import RetrainRun
from objectives.search_space import SearchSpace, recipe_trials
from sweep.budget import Deadline
from sweep import __version__, interrupt, ranking
from sweep.config import SweepConfig, TrainSettings
from sweep.data import Dataset, Split, is_padded, load_dataset, split_stratified, standardization
from sweep.errors import DataError, StudyError, first_line
from sweep.summary import collapse_summary
from sweep.preflight import check_tracking_store, resolve_tracking_uri
from sweep.redact import credential_free, mask_url
from sweep.records import BestTrial, RetrainEntry, TrialRecord, best_of, record_of, stored_retraining, trial_records
from sweep.loop import budget_stop, count_finished, reap_stale_trials, run_trials
from sweep.storage import check_url, open_storage
from sweep.study import create_or_resume, default_study_name, join_study

_logger = logging.getLogger(__name__)


@dataclass
class PreparedSweep:
    """Everything validated, nothing written yet."""

    cfg: SweepConfig
    name: str
    data: Dataset
    split: Split
    test_path: str | None = None


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


def prepare(cfg: SweepConfig, data_path: str | Path, *, test_path: str | Path | None = None) -> PreparedSweep:
    """Load and validate the data and split it (raises DataError); writes nothing."""
    check_url(cfg.storage)
    data = load_dataset(data_path, test_path=test_path)
    split = split_stratified(data, val_fraction=cfg.train.val_fraction, seed=cfg.seed)
    return PreparedSweep(cfg=cfg, name=cfg.study or default_study_name(data_path), data=data, split=split,
                         test_path=str(Path(test_path).resolve()) if test_path is not None else None)


def study_identity(prep: PreparedSweep) -> dict[str, Any]:
    data = prep.data
    return {
        "data_path": str(Path(data.source).resolve()),
        "data_fingerprint": data.fingerprint(),
        "test_path": prep.test_path,
        "settings": prep.cfg.identity(),
        "labels": list(data.labels),
        "timesteps": data.timesteps,
        "features": data.features,
        "n_classes": data.n_classes,
        "has_test": data.has_test,
        "bayes_balanced_accuracy": data.meta.get("bayes_balanced_accuracy"),
        "bayes_balanced_accuracy_test": data.meta.get("bayes_balanced_accuracy_test"),
        "created_with": f"lstm-sweep {__version__}",
    }


def _tracker(prep: PreparedSweep) -> Any:
    from sweep.tracking import MlflowTracker

    data = prep.data
    mean, std = standardization(prep.split.X_train)
    return MlflowTracker(
        tracking_uri=prep.cfg.tracking_uri, study_name=prep.name, log_models=prep.cfg.log_models,
        labels=list(data.labels), timesteps=data.timesteps, features=data.features, mean=mean, std=std,
    )


@dataclass
class OpenSweep:
    """A study ready for workers: created or resumed, with its MLflow parent run."""

    prep: PreparedSweep
    study: Any
    resumed: bool
    tracker: Any
    parent_run_id: str
    lead: bool = True  # the process the user started (not a `sweep worker`): it re-trains the top-k at the end
    deadline: Deadline | None = None  # the time budget of the invocation (sweep.budget); None: no time box
    started: float | None = None  # when the command started (time.time()), for the budget's clock

    def search_done(self) -> bool:
        """The study holds its N trials, or the time budget's search is over."""
        if self.deadline is not None and self.deadline.search_over():
            return True
        return count_finished(self.study) >= self.prep.cfg.n_trials
    objective: Any = None  # set by work(): holds trial ends not yet told to the tracker


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
    first = (recipe_trials(cfg.space, padded=is_padded(prep.split.X_train), features=prep.split.X_train.shape[2])
             [:cfg.n_trials] if cfg.baseline else [])
    study, resumed = create_or_resume(
        cfg, name=prep.name, storage=storage, identity=study_identity(prep), allow_changes=allow_changes,
        first_trials=first,
    )
    tracker = _tracker(prep)
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
        tags={"n_trials_target": str(cfg.n_trials), "optuna.storage": mask_url(cfg.storage),
              "optuna.study": prep.name, "data_path": str(Path(data.source).resolve())},
    )
    study.set_user_attr("mlflow_parent_run_id", parent)
    # Credential-free: a worker or `sweep predict` adds its own credentials from its environment.
    study.set_user_attr("tracking_uri", credential_free(tracker.tracking_uri))
    study.set_user_attr("deadline", None)
    _link_models(study, tracker)
    _close_dead_trials(study, tracker)
    return OpenSweep(prep=prep, study=study, resumed=resumed, tracker=tracker, parent_run_id=parent)


def start_clock(opened: OpenSweep, *, started: float, workers: int = 1) -> Deadline | None:
    """Start the time budget (``cfg.budget``) of a command that began at ``started``: store its
    deadline on the study, where every worker that joins reads it. None without a budget (or,
    with local workers, not yet: :func:`sweep.workers.run_workers` starts it once they are ready).

    Start-up (imports, opening the stores, TensorFlow) is not charged to the budget, up to
    ``STARTUP_SECONDS`` after ``started``: the command ends within its budget plus that minute.
    """
    from sweep.budget import STARTUP_SECONDS

    cfg = opened.prep.cfg
    opened.started = started
    if cfg.budget is None:
        return None
    if workers > 1:
        opened.study.set_user_attr("deadline", {"pending": True})  # workers wait for it after their start-up
        return None
    import objectives.model  # noqa: F401 - TensorFlow's import is start-up, not search

    return set_deadline(opened, now=min(time.time(), started + STARTUP_SECONDS))


def set_deadline(opened: OpenSweep, *, now: float) -> Deadline:
    """Start the budget's clock at ``now`` and store the deadline on the study."""
    cfg = opened.prep.cfg
    assert cfg.budget is not None
    opened.deadline = Deadline.start(cfg.budget, retrain_top=cfg.retrain_top, now=now)
    opened.study.set_user_attr("deadline", opened.deadline.to_dict())
    return opened.deadline


READY_DIR = "SWEEP_READY_DIR"  # set by `sweep run --workers` for its own workers: where they say they are ready
DEADLINE_WAIT_SECONDS = 180.0


def await_deadline(opened: OpenSweep) -> None:
    """For a worker started by ``sweep run --workers N --budget D``: load TensorFlow, tell the
    coordinator it is ready (a file in ``$SWEEP_READY_DIR``), and wait until the coordinator has
    started the budget's clock; then keep to that deadline."""
    import os

    attrs = opened.study.user_attrs
    if not (attrs.get("deadline") or {}).get("pending"):
        return
    import objectives.model  # noqa: F401 - start-up, before the clock runs

    ready = os.environ.get(READY_DIR)
    if ready:
        Path(ready, str(os.getpid())).touch()
    until = time.monotonic() + DEADLINE_WAIT_SECONDS
    while time.monotonic() < until:
        from sweep import interrupt

        interrupt.check()
        stored = load_deadline(opened.study)
        if stored is not None:
            opened.deadline = stored
            return
        if not (opened.study.user_attrs.get("deadline") or {}).get("pending"):
            return  # the coordinator went away without starting the clock
        time.sleep(0.3)
    raise StudyError(f"study {opened.prep.name!r} waits for a time budget that its `sweep run` never started; "
                     "run the sweep again")


def load_deadline(study: Any) -> Deadline | None:
    """The study's stored time-budget deadline (None: no budget, or its clock has not started)."""
    d = study.user_attrs.get("deadline")
    return Deadline.from_dict(d) if d and "ends_at" in d else None


def _link_models(study: Any, tracker: Any) -> None:
    """Keep a logged model's links on the study (``model_uri.<number>``, ...): the model is logged
    after Optuna stored the trial, and Optuna refuses attributes on a finished trial."""
    def link(number: int, links: dict[str, str]) -> None:
        for key, value in links.items():
            study.set_user_attr(f"{key}.{number}", value)

    tracker.on_model = link


def _close_dead_trials(study: Any, tracker: Any, *, reap: bool = True) -> None:
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
    objective = _objective(prep, tracker=tracker, adjust_decision=cfg.adjust_decision, deadline=opened.deadline,
                           keep_top=keep_top)
    opened.objective = objective

    def after_trial(study_: Any, trial: FrozenTrial) -> None:
        objective.end_logs()  # Optuna has stored the trial: now MLflow hears of it
        if on_trial_end is not None:
            on_trial_end(record_of(trial), best_of(study_))

    def after_reap(numbers: list[int]) -> None:
        _logger.warning("trials %s had no heartbeat (worker gone) and were failed; retrying with their parameters",
                        numbers)
        _close_dead_trials(study, tracker, reap=False)

    if on_start is not None:
        on_start(count_finished(study), cfg.n_trials)
    return run_trials(study, objective, n_trials=cfg.n_trials, on_trial_end=after_trial, on_wait=on_wait,
                      on_reap=after_reap, should_stop=budget_stop(opened.deadline) if opened.deadline else None)


def _objective(prep: PreparedSweep, *, tracker: Any = None, adjust_decision: bool = False,
               deadline: Deadline | None = None, keep_top: int = 1) -> Any:
    """The objective with the sweep's data and training settings (imports TensorFlow)."""
    from objectives.objective import Objective

    cfg = prep.cfg
    return Objective(
        prep.split, n_classes=prep.data.n_classes, space=cfg.space, epochs=cfg.train.epochs,
        patience=cfg.train.patience, seed=cfg.seed, tracker=tracker,
        collapse_warmup=cfg.train.collapse_warmup, collapse_patience=cfg.train.collapse_patience,
        warmup_steps=cfg.train.warmup_steps, warmup_fraction=cfg.train.warmup_fraction,
        adjust_decision=adjust_decision, search_ends_at=deadline.search_ends_at if deadline is not None else None,
        keep_top=keep_top, ranked_ahead=ranking.ranked_ahead, check_interrupt=interrupt.check,
    )


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
    done = opened.search_done()
    if opened.deadline is not None and not opened.lead and status == "FINISHED":
        done = False  # under a time budget the user's own process re-trains, selects and ends the parent run
    if synced is None or tracker.backlog:
        _logger.warning(
            "the MLflow store %s could not be reached: some trials are not in MLflow yet (their results are in the "
            "Optuna study); run `sweep sync %s` once it is back", tracker.tracking_uri, opened.prep.name)
    elif status != "FINISHED" or done:
        try:
            tracker.end_sweep(records, best, status=status, summary=summary, importances=_importances(study),
                              retrained=stored_retraining(study))
        except Exception as exc:  # noqa: BLE001 - the study is complete in Optuna; `sweep sync` ends the run later
            _logger.warning("could not close the study's MLflow run (%s); run `sweep sync %s` to do it",
                            first_line(exc), opened.prep.name)
    return records, best


def _importances(study: Any) -> dict[str, float] | None:
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
    return _result(opened, ran=ran, records=records, best=best)


def retrain_top(
    opened: OpenSweep, *, on_retrain: Callable[[RetrainEntry | None], None] | None = None,
) -> list[RetrainEntry]:
    """Train the study's top-k complete configurations again with other seeds (the user's own
    process only, once the study holds its N trials); stored on the study as ``retrained``.

    Each entry: the trial, its search score, and per seed the validation and test balanced
    accuracy (``runs``), with their mean and standard deviation. Done once per set of top trials
    and seeds: resuming a finished study does not train them again. ``on_retrain`` hears None
    when the re-training starts, then each entry as it is done.
    """
    cfg, study = opened.prep.cfg, opened.study
    if not opened.lead or cfg.retrain_top <= 0 or not opened.search_done():
        return []
    top = ranking.top_trials(study, cfg.retrain_top)
    if not top:
        return []
    key = {"trials": [t.number for t in top], "seeds": cfg.retrain_seeds}
    stored = study.user_attrs.get("retrained")
    if stored and stored.get("key") == key:
        entries = stored_retraining(study) or []
        _select(opened, entries)
        return entries

    from objectives import model as lstm
    from objectives.search_space import LstmParams

    if on_retrain is not None:
        on_retrain(None)  # starting
    lstm.configure_threads(cfg.threads)
    objective = _objective(opened.prep)
    deadline = opened.deadline
    runs: dict[int, list[RetrainRun]] = {t.number: [] for t in top}
    skipped = 0
    # Without a time budget the order does not matter. With one, configuration by configuration from
    # the search's winner down: the margin rule compares the winner with challengers that have two or
    # more runs each, so when time runs short the top ones are complete and the last ones are skipped.
    for trial in top:
        for i in range(cfg.retrain_seeds):
            if deadline is not None:
                expected = float(record_of(trial).result.train_seconds or 0.0)
                if deadline.retrain_left() < max(1.0, expected):
                    skipped += 1
                    continue
            runs[trial.number].append(objective.train_once(
                LstmParams(**trial.params), seed=cfg.seed + 10_000 * (i + 1) + trial.number,
                stop_at=deadline.retrain_ends_at if deadline else None))
    if skipped:
        _logger.warning("time budget: %d of %d re-training runs did not fit and were skipped", skipped,
                        len(top) * cfg.retrain_seeds)
    results = []
    for rank, trial in enumerate(top, start=1):
        entry = RetrainEntry(rank=rank, trial=trial.number, params=dict(trial.params), search_value=trial.value,
                             search_val_balanced_accuracy=record_of(trial).val_balanced_accuracy,
                             runs=runs[trial.number])
        results.append(entry)
        if on_retrain is not None:
            on_retrain(entry)
    study.set_user_attr("retrained", {"key": key, "results": [e.to_dict() for e in results]})
    _select(opened, results)
    return results


def _select(opened: OpenSweep, results: list[RetrainEntry]) -> None:
    """Choose the configuration that ships (sweep.selection's margin rule) and store it on the study
    as ``champion``; :func:`sweep.records.best_of` (the summary, `sweep best`, the registry alias)
    then reports that trial."""
    from sweep.selection import choose_champion, validation_step

    winner = ranking.best_trial(opened.study)
    if winner is None:
        return
    split = opened.prep.split
    counts = [int((split.y_val == c).sum()) for c in range(opened.prep.data.n_classes)]
    choice = choose_champion([e.to_dict() for e in results], search_winner=winner.number,
                             step=validation_step(counts))
    opened.study.set_user_attr("champion", choice.to_dict())
    _logger.info("%s", choice.reason)


def _result(opened: OpenSweep, *, ran: int, records: list[TrialRecord], best: BestTrial | None) -> SweepResult:
    return SweepResult(
        name=opened.prep.name, n_trials=opened.prep.cfg.n_trials, ran=ran, resumed=opened.resumed, best=best,
        records=records, parent_run_id=opened.parent_run_id, tracking_uri=opened.tracker.tracking_uri,
        experiment_id=opened.tracker.experiment_id,
        retrained=stored_retraining(opened.study) if opened.lead else None,
    )


# -- workers: join a study another process created ---------------------------------------------
def join(
    name: str, storage_url: str, *, data_path: str | Path | None = None, tracking_uri: str | None = None,
    threads: int | None = None,
) -> OpenSweep:
    """Join an existing study as a worker (``sweep worker``): rebuild its settings, check its data.

    Raises:
        StudyError: unknown study, or one without an MLflow parent run.
        DataError: the data file is missing or is not the file the study was created on.
    """
    storage = open_storage(storage_url)
    study = join_study(name, storage)  # reads only; the tracking store is checked before this worker writes
    check_tracking_store(resolve_tracking_uri(tracking_uri or study.user_attrs.get("tracking_uri")))
    attrs = study.user_attrs
    cfg = config_from_study(attrs, name=name, storage=storage_url, tracking_uri=tracking_uri, threads=threads)
    source = Path(data_path) if data_path is not None else Path(attrs["data_path"])
    if not source.exists():
        raise DataError(
            f"study {name!r} was created on {attrs['data_path']}, which is not on this machine; "
            "copy the file here and pass --data PATH"
        )
    test_path = attrs.get("test_path")
    if test_path is not None and data_path is not None:
        test_path = str(source.with_name(Path(test_path).name))
    data = load_dataset(source, test_path=test_path)
    if data.fingerprint() != attrs["data_fingerprint"]:
        raise DataError(
            f"{source} is not the data study {name!r} was created on (fingerprint {data.fingerprint()}, "
            f"study has {attrs['data_fingerprint']} from {attrs['data_path']}); pass --data with that same file"
        )
    split = split_stratified(data, val_fraction=cfg.train.val_fraction, seed=cfg.seed)
    prep = PreparedSweep(cfg=cfg, name=name, data=data, split=split)
    parent = attrs.get("mlflow_parent_run_id")
    if not parent:
        raise StudyError(f"study {name!r} has no MLflow run yet; start it with `sweep run DATA --study {name}` first")
    tracker = _tracker(prep)
    tracker.join_sweep(parent)
    _link_models(study, tracker)
    _close_dead_trials(study, tracker)
    opened = OpenSweep(prep=prep, study=study, resumed=True, tracker=tracker, parent_run_id=parent, lead=False,
                       deadline=load_deadline(study))
    await_deadline(opened)
    return opened


def config_from_study(
    attrs: dict[str, Any], *, name: str, storage: str, tracking_uri: str | None, threads: int | None,
) -> SweepConfig:
    """The SweepConfig a study was created with (its identity is then identical by construction)."""
    settings = attrs["settings"]
    run = attrs.get("run_settings", {})
    return SweepConfig(
        study=name, storage=storage, n_trials=int(attrs.get("n_trials", 20)), seed=int(settings["seed"]),
        tracking_uri=tracking_uri or attrs.get("tracking_uri"), log_models=run.get("log_models", "best"),
        pruner=run.get("pruner", "median"), adjust_decision=bool(run.get("adjust_decision", False)),
        retrain_top=0, threads=threads, train=TrainSettings(**settings["train"]),
        space=SearchSpace.from_dict(settings["search_space"]),
    )


def run_worker(
    opened: OpenSweep, *,
    on_trial_end: Callable[[TrialRecord, BestTrial | None], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> SweepResult:
    """Work on a joined study until it holds its N trials; the last one out ends the parent run."""
    return run_opened(opened, on_trial_end=on_trial_end, on_wait=on_wait)


# -- sync: MLflow catches up with the study ------------------------------------------------------
@dataclass
class SyncResult:
    name: str
    tracking_uri: str
    logged: list[int]  # trials logged now, from what Optuna stored
    trials: int  # finished or failed trials the study holds (all now in MLflow)
    closed_parent: bool  # the study's run was ended now (the study holds its N trials)


def sync_study(name: str, storage_url: str, *, tracking_uri: str | None = None) -> SyncResult:
    """Give every finished or failed trial of a study an ended MLflow run (``sweep sync``), and end the
    study's run if the study holds its N trials but the run was left open (MLflow was away).

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
    trials = study.get_trials(deepcopy=False)
    try:
        logged = tracker.sync_trials(trials)
        closed = False
        if count_finished(study) >= int(attrs.get("n_trials", 0)) and tracker.parent_status() == "RUNNING":
            records = trial_records(study)
            tracker.end_sweep(records, best_of(study), status="FINISHED", summary=collapse_summary(records),
                              importances=_importances(study), retrained=stored_retraining(study))
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
