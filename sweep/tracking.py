"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

The only module that imports MLflow. The default store is MLflow's own default
(``sqlite:///mlflow.db`` in the working directory, artifacts under ``./mlruns``), so a plain
``mlflow ui`` started in the same directory shows everything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


import mlflow
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from objectives.search_space import LstmParams
from sweep import sqlite
from sweep.errors import SweepError, first_line
from sweep.preflight import DEFAULT_TRACKING_URI, mlflow_defaults, resolve_tracking_uri  # noqa: F401 - re-exported
from sweep.registry import CHAMPION as CHAMPION
from sweep.registry import Registry
from sweep.registry import champion_uri as champion_uri
from sweep.registry import load_model as load_model
from sweep.registry import fetch_champion as fetch_champion
from sweep.registry import model_input_shape as model_input_shape
from sweep.records import BestTrial, RetrainEntry, TrialRecord
from sweep.redact import mask_url, redact
from sweep.storage import creation_lock
from sweep.trial_run import END_STATUS, PYFUNC_MODEL_CODE, TAG_ROLE, TAG_STATE, TAG_STUDY, TAG_TRIAL, TrialRun  # noqa: F401

if TYPE_CHECKING:  # the objective imports TensorFlow; `sweep run --create-only` needs none of it
    from objectives.objective import TrialOutcome
    from sweep.summary import CollapseSummary

_logger = logging.getLogger(__name__)

class MlflowTracker:
    """Logs a sweep to MLflow. Use :meth:`start_sweep` first and :meth:`end_sweep` last."""

    def __init__(
        self, *, tracking_uri: str | None, study_name: str, log_models: str, labels: list[Any],
        timesteps: int, features: int, mean: Any, std: Any,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.study_name = study_name
        self.log_models = log_models
        self.labels = labels
        self.timesteps, self.features = timesteps, features
        self.preprocessing = {
            "labels": labels,
            "timesteps": timesteps,
            "features": features,
            # (x - centre) / scale per feature: mean and std, or median and IQR / 1.349 where a feature
            # is heavy-tailed (sweep.data.standardization).
            "standardization": {"centre": [float(v) for v in mean], "scale": [float(v) for v in std]},
            "note": "standardization is built into the model (its 'standardize' layer); feed raw sequences. "
            "Output column i is the probability of labels[i].",
        }
        mlflow_defaults()
        self.client = self._open_store()
        self.registry = Registry(self.client, study_name)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        # Trial plots render and upload here while the next trial trains (~0.5 s saved per trial).
        self._plotter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-plots")
        self._pending: list[Future] = []
        # Trial ends (and plots) that could not be logged yet: sent again by catch_up().
        self._backlog: list[Any] = []
        self._backlog_lock = threading.Lock()
        self._outage_since: float | None = None
        self._tried_at = 0.0
        self._pass_lock = threading.Lock()
        self._catcher: threading.Thread | None = None
        self.outages = 0  # MLflow outages this process rode out (for tests and benchmarks)
        # Called with (trial number, {"model_uri": ...}) once a trial's model is logged: Optuna refuses
        # attributes on a finished trial, so the runner keeps the links on the study.
        self.on_model: Callable[[int, dict[str, str]], None] | None = None

    def record_model(self, number: int, links: dict[str, str]) -> None:
        if self.on_model is not None:
            try:
                self.on_model(number, links)
            except Exception as exc:  # noqa: BLE001 - the model is in MLflow; only the study's link is missing
                _logger.warning("trial %d: model %s logged, but not linked in the study: %s", number,
                                links.get("model_uri"), redact(first_line(exc)))

    def flush(self) -> None:
        """Wait for the trial plots still rendering on the background thread."""
        self._flush_plots()

    def _flush_plots(self) -> None:
        for job in self._pending:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - a lost plot must not fail the sweep
                _logger.warning("could not log a trial plot: %s", redact(first_line(exc))[:200])
        self._pending.clear()

    # -- sweep level -------------------------------------------------------------------------
    def _experiment(self) -> str:
        experiment = self.client.get_experiment_by_name(self.study_name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(self.study_name, tags={TAG_STUDY: self.study_name})
        except Exception:  # noqa: BLE001 - another worker created it first
            experiment = self.client.get_experiment_by_name(self.study_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _lock(self) -> contextlib.AbstractContextManager:
        """Serializes store and experiment creation across processes for database stores: MLflow,
        like Optuna, crashes when several processes create its tables (or one experiment) at once."""
        database = self.tracking_uri.startswith(("sqlite:", "postgresql", "mysql"))
        return creation_lock(self.tracking_uri) if database else contextlib.nullcontext()

    def _open_store(self) -> MlflowClient:
        """The client; a local SQLite store is created in WAL mode (workers in several processes write to it)."""
        mlflow.set_tracking_uri(self.tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            path = Path(self.tracking_uri.removeprefix("sqlite:///"))
            if not path.parent.exists():
                raise SweepError(f"MLflow store {mask_url(self.tracking_uri)}: folder {path.parent} does not exist; create it first")
            sqlite.tune_connections()
        try:
            with self._lock():
                if self.tracking_uri.startswith("sqlite:///"):
                    sqlite.use_wal(path)
                return MlflowClient(self.tracking_uri)
        except SweepError:
            raise
        except Exception as exc:  # noqa: BLE001 - store/driver errors vary
            raise SweepError(
                f"cannot open MLflow tracking store {mask_url(self.tracking_uri)}: "
                f"{redact((str(exc).strip() or type(exc).__name__).splitlines()[-1], self.tracking_uri)}; "
                "check --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None

    def start_sweep(self, *, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Create or reuse the study's experiment and parent run (left RUNNING until end_sweep)."""
        with self._lock():
            return self._start_sweep(params, tags)

    def _start_sweep(self, params: dict[str, Any], tags: dict[str, str]) -> str:
        try:
            self.experiment_id = self._experiment()
            # Classifies the experiment for MLflow 3's UI. (Its GenAI/Model-training switch is a browser
            # setting and still defaults to GenAI: the summary links straight to the runs page.)
            self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'parent'", max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            if runs:
                self.parent_run_id = runs[0].info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
            else:
                run = self.client.create_run(
                    self.experiment_id, run_name=f"{self.study_name} (study)",
                    tags={TAG_STUDY: self.study_name, TAG_ROLE: "parent"},
                )
                self.parent_run_id = run.info.run_id
                self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)) for k, v in params.items()])
                self.client.log_dict(self.parent_run_id, self.preprocessing, "label_mapping_and_preprocessing.json")
            self.client.log_batch(self.parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:  # noqa: BLE001 - store/HTTP errors vary
            raise SweepError(
                f"cannot use MLflow tracking store {mask_url(self.tracking_uri)}: {redact(first_line(exc))}; "
                "check --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None
        return self.parent_run_id

    def schedule(self) -> None:
        """Mark the parent run SCHEDULED: the study exists and waits for `sweep worker` processes."""
        if self.parent_run_id is not None:
            self.client.update_run(self.parent_run_id, status="SCHEDULED")

    def attach(self, parent_run_id: str) -> None:
        """Use the study's parent run as it is (``sweep sync``): no status change."""
        self._attach(parent_run_id)

    def parent_status(self) -> str | None:
        return self.client.get_run(self.parent_run_id).info.status if self.parent_run_id else None

    def join_sweep(self, parent_run_id: str) -> None:
        """Log this worker's trials under a parent run another process created (``sweep worker``)."""
        self._attach(parent_run_id, running=True)

    def _attach(self, parent_run_id: str, *, running: bool = False) -> None:
        try:
            run = self.client.get_run(parent_run_id)
            if running and run.info.status != "RUNNING":
                self.client.update_run(parent_run_id, status="RUNNING")
        except Exception as exc:  # noqa: BLE001 - store/HTTP errors vary
            raise SweepError(
                f"cannot find the study's MLflow run {parent_run_id} in {mask_url(self.tracking_uri)}: "
                f"{redact(first_line(exc))[:200]}; pass the --tracking-uri the study was started with"
            ) from None
        self.experiment_id = run.info.experiment_id
        self.parent_run_id = parent_run_id

    def end_sweep(
        self, records: list[TrialRecord], best: BestTrial | None, *, status: str,
        summary: CollapseSummary | None = None, importances: dict[str, float] | None = None,
        retrained: list[RetrainEntry] | None = None,
    ) -> None:
        """Log the study's end report on the parent run (:func:`sweep.report.log_report`); end it."""
        self._flush_plots()
        if self.parent_run_id is None:
            return
        from sweep.report import log_report

        try:
            while mlflow.active_run() is not None:
                mlflow.end_run(status="KILLED")
            log_report(self.client, self.parent_run_id, study_name=self.study_name, labels=self.labels,
                       registry=self.registry, records=records, best=best, summary=summary,
                       importances=importances, retrained=retrained, tracking_uri=self.tracking_uri,
                       record_model=self.record_model)
        finally:
            self.client.set_terminated(self.parent_run_id, status=status)

    # -- trial level ---------------------------------------------------------------------------
    def start_trial(self, number: int, params: LstmParams) -> TrialRun:
        """The trial's MLflow run; if the store cannot be reached the run is made later (catch-up)."""
        log = TrialRun(self, None, number, params)
        try:
            log.ensure_run()
        except Exception as exc:  # noqa: BLE001 - an MLflow outage never fails a trial
            self.note_outage(f"trial {number}: no MLflow run yet", exc)
        return log

    def end_trial(self, log: TrialRun, outcome: TrialOutcome) -> None:
        """Log how a trial ended (after Optuna stored it): a few quick tries, else it waits in the
        backlog for :meth:`catch_up`. Never raises."""
        with self._backlog_lock:
            self._backlog.append(_Pending(log, outcome))
        if self.catch_up(seconds=TRIAL_END_RETRY_SECONDS):
            self.start_background_catch_up()

    @property
    def backlog(self) -> int:
        """How many trials (or trial plots) are waiting to be logged."""
        return len(self._backlog)

    def catch_up(self, *, seconds: float) -> int:
        """Log what the backlog holds, trying again with backoff for up to ``seconds``; returns what
        is left. Never raises."""
        deadline = time.monotonic() + seconds
        delay = 0.5
        while True:
            self._tried_at = time.monotonic()
            with self._pass_lock:  # one pass at a time (this thread or the background one)
                self._one_pass(background=False)
            left = self.backlog
            if not left:
                if self._outage_since is not None:
                    _logger.warning("MLflow store is back: every trial is logged (%.0f s after it went away)",
                                    time.monotonic() - self._outage_since)
                    self._outage_since = None
                return 0
            if time.monotonic() + delay > deadline:
                return left
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _one_pass(self, *, background: bool) -> None:
        with self._backlog_lock:
            pending = list(self._backlog)
        for job in pending:
            if background and getattr(job, "holds_model", False):
                continue  # a model is saved by the training thread (TensorFlow), at its next epoch or trial end
            try:
                job.run()
            except Exception as exc:  # noqa: BLE001 - the store is still away; try again later
                self.note_outage(f"trial {job.number}: MLflow logging postponed", exc)
                return
            with self._backlog_lock:
                self._backlog.remove(job)
            job.release()
        if background and not self.backlog and self._outage_since is not None:
            _logger.warning("MLflow store is back: every trial is logged (%.0f s after it went away)",
                            time.monotonic() - self._outage_since)
            self._outage_since = None

    def start_background_catch_up(self) -> None:
        """While the backlog holds trials, a daemon thread retries it every few seconds, so MLflow
        catches up soon after it is back even when epochs are long."""
        if self._catcher is not None and self._catcher.is_alive():
            return

        def loop() -> None:
            while self.backlog:
                time.sleep(BACKGROUND_RETRY_SECONDS)
                if self._pass_lock.acquire(blocking=False):
                    try:
                        self._one_pass(background=True)
                    finally:
                        self._pass_lock.release()

        self._catcher = threading.Thread(target=loop, daemon=True, name="sweep-mlflow-catch-up")
        self._catcher.start()

    def submit_plot(self, render: Callable[[], None]) -> None:
        """Render and upload a trial's figures on the background thread (:meth:`flush` waits for them)."""
        self._pending.append(self._plotter.submit(render))

    def postpone(self, job: Any) -> None:
        """Keep ``job`` (a trial's plots that could not be uploaded) for the catch-up."""
        with self._backlog_lock:
            self._backlog.append(job)

    def catch_up_due(self) -> bool:
        """Whether earlier trials wait for MLflow and the last try is CATCH_UP_EVERY_SECONDS old."""
        return bool(self.backlog) and time.monotonic() - self._tried_at >= CATCH_UP_EVERY_SECONDS

    def note_outage(self, what: str, exc: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            _logger.warning("%s: %s (the result is safe in the Optuna study; logging is retried)", what,
                            redact(first_line(exc))[:200])
        else:
            _logger.info("%s: %s", what, redact(first_line(exc))[:200])

    def missing_trials(self, trials: list[Any]) -> list[Any]:
        """The finished or failed Optuna trials (``FrozenTrial``) that MLflow does not hold as ended runs."""
        if self.experiment_id is None:
            return [t for t in trials if _should_log(t)]
        runs = self._trial_runs()
        return [t for t in trials if _should_log(t) and not _logged(runs.get(t.number), t.state.name)]

    def _trial_runs(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'trial'",
                                           max_results=1000, page_token=token)
            for run in page:
                number = int(run.data.tags.get(TAG_TRIAL, "-1"))
                if number not in out or run.info.start_time < out[number].info.start_time:
                    out[number] = run  # the first run of a trial number is its run
            token = page.token
            if not token:
                return out

    def sync_trials(self, trials: list[Any]) -> list[int]:
        """Give every finished or failed trial of the study (``FrozenTrial``) an ended MLflow run, from
        what Optuna stored (params, results, per-epoch scores); returns the trial numbers logged now.
        The trials this process still holds in its backlog are logged in full first."""
        self.catch_up(seconds=0)
        done = []
        for trial in self.missing_trials(trials):
            log = TrialRun(self, None, trial.number, None)
            log.from_optuna(trial)
            done.append(trial.number)
        return done


BACKGROUND_RETRY_SECONDS = 3.0  # the background catch-up's pace while MLflow is away
TRIAL_END_RETRY_SECONDS = 2.0  # a trial's end is tried again for this long before it waits in the backlog
CATCH_UP_EVERY_SECONDS = 5.0  # while trials wait in the backlog, the next trial's epochs retry them this often


def _should_log(trial: Any) -> bool:
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED", "FAIL") and not str(trial.user_attrs.get("fail_reason", "")).startswith("surplus")


def _logged(run: Any, state: str) -> bool:
    return run is not None and run.info.status != "RUNNING" and run.data.tags.get(TAG_STATE) == state


class _Pending:
    """A trial end waiting to be logged (the outcome keeps the model while it waits, if it is to be logged)."""

    def __init__(self, log: TrialRun, outcome: TrialOutcome) -> None:
        self.log, self.outcome, self.number = log, outcome, log.number
        if outcome.model is not None and not log.wants_model(outcome):
            outcome.model = None

    @property
    def holds_model(self) -> bool:
        return self.outcome.model is not None

    def run(self) -> None:
        self.log.end_steps(self.outcome)

    def release(self) -> None:
        self.outcome.model = None


def log_diagnosis(tracking_uri: str, run_id: str, *, markdown: str, record: dict[str, Any]) -> None:
    """Attach `sweep diagnose --study`'s report to the study's parent run (replacing an older one)."""
    mlflow_defaults()
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    client.log_text(run_id, markdown, "diagnosis.md")
    client.log_dict(run_id, record, "diagnosis.json")
    client.set_tag(run_id, "sweep.diagnosis", record.get("headline", "")[:250])


