"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

The only module that imports MLflow. The default store is MLflow's own default
(``sqlite:///mlflow.db`` in the working directory, artifacts under ``./mlruns``), so a plain
``mlflow ui`` started in the same directory shows everything.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the sweep's output

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from objectives.metrics import rank_key  # noqa: E402
from objectives.search_space import LstmParams  # noqa: E402
from sweep import plots, sqlite  # noqa: E402
from sweep.errors import SweepError  # noqa: E402
from sweep.preflight import DEFAULT_TRACKING_URI, resolve_tracking_uri  # noqa: E402,F401 - re-exported
from sweep.redact import mask_url, redact  # noqa: E402
from sweep.study import creation_lock  # noqa: E402

if TYPE_CHECKING:  # the objective imports TensorFlow; `sweep run --create-only` needs none of it
    from objectives.objective import TrialOutcome

_logger = logging.getLogger(__name__)
for _name in ("mlflow", "alembic", "urllib3"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# MLflow logs a lost database connection with its traceback before raising it; the sweep catches
# the error, says so in one line and logs the trial later.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", module="mlflow")

TAG_STUDY = "sweep.study"
TAG_ROLE = "sweep.role"
TAG_TRIAL = "sweep.trial_number"
TAG_STATE = "sweep.trial_state"
_END_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
CHAMPION = "champion"  # the registry alias of a study's best model
PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("tensorflow-cpu", "tensorflow", "keras"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


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
        self.client = self._open_store()
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
                                links.get("model_uri"), _first_line(exc))

    def flush(self) -> None:
        """Wait for the trial plots still rendering on the background thread."""
        self._flush_plots()

    def _flush_plots(self) -> None:
        for job in self._pending:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - a lost plot must not fail the sweep
                _logger.warning("could not log a trial plot: %s", _first_line(exc)[:200])
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
                f"cannot use MLflow tracking store {mask_url(self.tracking_uri)}: {_first_line(exc)}; "
                "check --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None
        return self.parent_run_id

    def schedule(self) -> None:
        """Mark the parent run SCHEDULED: the study exists and waits for `sweep worker` processes."""
        if self.parent_run_id is not None:
            self.client.update_run(self.parent_run_id, status="SCHEDULED")

    def attach(self, parent_run_id: str) -> None:
        """Use the study's parent run as it is (``sweep sync``): no status change."""
        try:
            run = self.client.get_run(parent_run_id)
        except Exception as exc:  # noqa: BLE001 - store/HTTP errors vary
            raise SweepError(
                f"cannot find the study's MLflow run {parent_run_id} in {self.tracking_uri}: "
                f"{_first_line(exc)[:200]}; pass the --tracking-uri the study was started with"
            ) from None
        self.experiment_id = run.info.experiment_id
        self.parent_run_id = parent_run_id

    def parent_status(self) -> str | None:
        return self.client.get_run(self.parent_run_id).info.status if self.parent_run_id else None

    def join_sweep(self, parent_run_id: str) -> None:
        """Log this worker's trials under a parent run another process created (``sweep worker``)."""
        try:
            run = self.client.get_run(parent_run_id)
            if run.info.status != "RUNNING":
                self.client.update_run(parent_run_id, status="RUNNING")
        except Exception as exc:  # noqa: BLE001 - store/HTTP errors vary
            raise SweepError(
                f"cannot find the study's MLflow run {parent_run_id} in {mask_url(self.tracking_uri)}: "
                f"{_first_line(exc)}; pass the --tracking-uri the study was started with"
            ) from None
        self.experiment_id = run.info.experiment_id
        self.parent_run_id = parent_run_id

    def end_sweep(
        self, rows: list[dict[str, Any]], best: dict[str, Any] | None, *, status: str,
        summary: dict[str, Any] | None = None, importances: dict[str, float] | None = None,
        retrained: list[dict[str, Any]] | None = None,
    ) -> None:
        """Log the optimization history, the collapse summary and the best trial on the parent; end it."""
        self._flush_plots()
        if self.parent_run_id is None:
            return
        run_id, client = self.parent_run_id, self.client
        try:
            while mlflow.active_run() is not None:
                mlflow.end_run(status="KILLED")
            fig = plots.history_figure(rows, title=f"{self.study_name}: optimization history")
            client.log_figure(run_id, fig, "plots/optimization_history.png")
            finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
            metrics = {
                "trials_finished": len(finished),
                "trials_failed": sum(1 for r in rows if r["state"] == "FAIL" and not r.get("surplus")),
            }
            tags: dict[str, str] = {}
            if any(r.get("val_balanced_accuracy") is not None for r in finished):
                client.log_figure(run_id, plots.score_by_choice_figure(
                    rows, "class_weight", title=f"{self.study_name}: balanced accuracy by class-weight strategy"),
                    "plots/balanced_accuracy_by_class_weight.png")
            if importances:
                client.log_dict(run_id, importances, "parameter_importances.json")
                client.log_figure(run_id, plots.importance_figure(
                    importances, title=f"{self.study_name}: parameter importances"), "plots/parameter_importances.png")
            if retrained:
                client.log_dict(run_id, retrained, "retrained_top_k.json")
                for entry in retrained:
                    for split in ("val", "test"):
                        for stat in ("mean", "std"):
                            value = entry[f"{split}_balanced_accuracy_{stat}"]
                            if value is not None:
                                metrics[f"retrain_rank{entry['rank']}_{split}_balanced_accuracy_{stat}"] = value
                steady = max(retrained, key=lambda e: e["val_balanced_accuracy_mean"] or 0.0)
                tags["retrain.best_trial_number"] = str(steady["trial"])
            if best is not None and best.get("val_confusion"):
                panels = [(f"best trial {best['number']}: validation", best["val_confusion"])]
                if best.get("test_confusion"):
                    panels.append((f"best trial {best['number']}: test (not used for selection)", best["test_confusion"]))
                client.log_figure(run_id, plots.confusion_figure(panels, self.labels), "plots/best_confusion_matrix.png")
            if summary is not None:
                client.log_dict(run_id, summary, "collapse_summary.json")
                if summary["trials_finished"]:
                    client.log_figure(run_id, plots.collapse_by_parameter_figure(summary, title=self.study_name),
                                      "plots/collapse_by_parameter.png")
                metrics.update({f"trials_{k}": v for k, v in summary["outcomes"].items()})
                metrics.update({f"trials_{k}_gradients": v for k, v in summary["gradient_trouble"].items()})
                metrics["trials_collapsed"] = summary["trials_collapsed"]
                if summary["collapse_rate"] is not None:
                    metrics["collapse_rate"] = summary["collapse_rate"]
            if best is not None and best.get("model_uri") and not best.get("collapsed"):
                try:
                    self.sync_champion(best)
                except Exception as exc:  # noqa: BLE001 - a store without a registry must not fail the sweep
                    _logger.warning("could not point the champion alias at trial %s: %s", best["number"], _first_line(exc))
            if best is not None:
                client.log_dict(run_id, best, "best_trial.json")
                metrics.update({f"best_{k}": best[k] for k in (
                    "value", "val_balanced_accuracy", "test_balanced_accuracy", "val_balanced_accuracy_adjusted",
                    "test_balanced_accuracy_adjusted") if best.get(k) is not None})
                tags.update({
                    "best.trial_number": str(best["number"]),
                    "best.run_id": best.get("mlflow_run_id") or "",
                    "best.model_uri": best.get("model_uri") or "",
                    **{f"best.{k}": str(v) for k, v in best["params"].items()},
                })
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
        finally:
            client.set_terminated(run_id, status=status)

    def crown(self, model_uri: str, *, model_id: str | None, trial_number: int, score: float,
              val_loss: float | None = None) -> str:
        """Register a new best model under the study's name and move the ``champion`` alias to it,
        unless another worker's champion ranks higher already (score, then validation loss).
        Returns the registered version."""
        name = self.study_name
        try:
            self.client.create_registered_model(name, tags={TAG_STUDY: name}, description=(
                f"Best models of the lstm-sweep study {name}; the alias '{CHAMPION}' marks the best so far."))
        except Exception:  # noqa: BLE001 - it exists (another trial or worker registered it first)
            pass
        run_id = mlflow.active_run().info.run_id if mlflow.active_run() else None
        version = self.client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id, tags={
            "sweep.trial_number": str(trial_number), "sweep.val_score": repr(score),
            "sweep.val_loss": repr(val_loss)})
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
            loss = current.tags.get("sweep.val_loss", "None")
            held = rank_key(float(current.tags.get("sweep.val_score", "-inf")), None if loss == "None" else float(loss))
        except Exception:  # noqa: BLE001 - no champion yet
            held = (float("-inf"), float("-inf"))
        if rank_key(score, val_loss) > held:
            self._point_champion(version.version, trial_number)
        return str(version.version)

    def model_digest(self, version: str) -> str:
        """:func:`sweep.integrity.tree_digest` of a registered version's files, as the store serves them
        (what `sweep predict` will download and check against the study's record)."""
        import tempfile

        from sweep.integrity import tree_digest

        with tempfile.TemporaryDirectory(prefix="sweep-digest-") as tmp:
            return tree_digest(_download_version(self.client, self.tracking_uri, self.study_name, version, Path(tmp)))

    def sync_champion(self, best: dict[str, Any]) -> None:
        """At the sweep's end, point ``champion`` at the best trial's model: two workers that finish
        tied trials at the same moment may both have registered theirs (the first to register holds
        the alias, while the study's best is the first to finish)."""
        name, number = self.study_name, str(best["number"])
        versions = self.client.search_model_versions(f"name = '{name}'")
        mine = [v for v in versions if v.tags.get("sweep.trial_number") == number]
        if not mine:
            # The re-training chose a configuration that was never a new best: register its model now.
            uri = best.get("model_uri")
            if not uri:
                return
            model_id = uri.split("/", 1)[1] if uri.startswith("models:/m-") else None
            mine = [self.client.create_model_version(
                name, uri, run_id=best.get("mlflow_run_id"), model_id=model_id,
                tags={"sweep.trial_number": number, "sweep.val_score": repr(best.get("value")),
                      "sweep.selected_by": "re-training (mean over seeds beyond their spread)"})]
        version = str(max(mine, key=lambda v: int(v.version)).version)  # an int from SQL stores, a str over REST
        try:
            current = str(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except Exception:  # noqa: BLE001 - no alias yet
            current = None
        if current != version:
            self._point_champion(version, best["number"])

    def _point_champion(self, version: str | int, trial_number: int) -> None:
        self.client.set_registered_model_alias(self.study_name, CHAMPION, str(version))
        self.client.set_registered_model_tag(self.study_name, "sweep.champion_trial", str(trial_number))

    # -- trial level ---------------------------------------------------------------------------
    def start_trial(self, number: int, params: LstmParams) -> _TrialRun:
        """The trial's MLflow run; if the store cannot be reached the run is made later (catch-up)."""
        log = _TrialRun(self, None, number, params)
        try:
            log.ensure_run()
        except Exception as exc:  # noqa: BLE001 - an MLflow outage never fails a trial
            self._note_outage(f"trial {number}: no MLflow run yet", exc)
        return log

    def end_trial(self, log: _TrialRun, outcome: TrialOutcome) -> None:
        """Log how a trial ended (after Optuna stored it): a few quick tries, else it waits in the
        backlog for :meth:`catch_up`. Never raises."""
        with self._backlog_lock:
            self._backlog.append(_Pending(log, outcome))
        if self.catch_up(seconds=TRIAL_END_RETRY_SECONDS):
            self._start_background_catch_up()

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
                self._note_outage(f"trial {job.number}: MLflow logging postponed", exc)
                return
            with self._backlog_lock:
                self._backlog.remove(job)
            job.release()
        if background and not self.backlog and self._outage_since is not None:
            _logger.warning("MLflow store is back: every trial is logged (%.0f s after it went away)",
                            time.monotonic() - self._outage_since)
            self._outage_since = None

    def _start_background_catch_up(self) -> None:
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

    def _note_outage(self, what: str, exc: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            _logger.warning("%s: %s (the result is safe in the Optuna study; logging is retried)", what,
                            _first_line(exc)[:200])
        else:
            _logger.info("%s: %s", what, _first_line(exc)[:200])

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
            log = _TrialRun(self, None, trial.number, None)
            log.from_optuna(trial)
            done.append(trial.number)
        return done


TRIAL_END_RETRY_SECONDS = 2.0  # a trial's end is tried again for this long before it waits in the backlog
BACKGROUND_RETRY_SECONDS = 3.0  # the background catch-up's pace while MLflow is away
CATCH_UP_EVERY_SECONDS = 5.0  # while trials wait in the backlog, the next trial's epochs retry them this often


def _should_log(trial: Any) -> bool:
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED", "FAIL") and not str(trial.user_attrs.get("fail_reason", "")).startswith("surplus")


def _logged(run: Any, state: str) -> bool:
    return run is not None and run.info.status != "RUNNING" and run.data.tags.get(TAG_STATE) == state


class _Pending:
    """A trial end waiting to be logged (the outcome keeps the model while it waits, if it is to be logged)."""

    def __init__(self, log: _TrialRun, outcome: TrialOutcome) -> None:
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


class _TrialRun:
    """One trial's MLflow run. Every call is best-effort: what fails is kept and sent on the next try
    (per-epoch metrics) or by the tracker's catch-up (the trial's end); nothing raises into training.

    The end is logged in steps (run, params, curves, results, plots, model, end); a retry resumes
    at the step that failed, so nothing is logged twice."""

    # Per-epoch metrics are sent in batches, at most every FLUSH_SECONDS (and at the trial's end):
    # one MLflow write per epoch cost ~12 ms, ~2% of a short trial. The UI's live curves lag by
    # at most this much.
    FLUSH_SECONDS = 2.0

    def __init__(self, tracker: MlflowTracker, run_id: str | None, number: int, params: LstmParams | None) -> None:
        self.tracker, self.run_id, self.number, self.params = tracker, run_id, number, params
        self.ended = False
        self._buffer: list[Metric] = []
        self._flushed_at = time.monotonic()
        self._done: set[str] = set()
        self.attrs: dict[str, str] = {}

    def link(self) -> dict[str, str]:
        """Attributes to store on the Optuna trial with its result (its MLflow run, once there is one)."""
        return {"mlflow_run_id": self.run_id} if self.run_id else {}

    def ensure_run(self) -> str:
        """Create the run (or find the one another process made for this trial) and log its params."""
        client = self.tracker.client
        if self.run_id is None:
            existing = client.search_runs(
                [self.tracker.experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
                filter_string=f"tags.`{TAG_ROLE}` = 'trial' and tags.`{TAG_TRIAL}` = '{self.number}'",
            ) if self.tracker.experiment_id is not None else []
            if existing:
                self.run_id = existing[0].info.run_id
            else:
                run = client.create_run(
                    self.tracker.experiment_id, run_name=f"trial-{self.number:03d}",
                    tags={TAG_STUDY: self.tracker.study_name, TAG_ROLE: "trial", TAG_TRIAL: str(self.number),
                          TAG_STATE: "RUNNING",
                          # the parent is another process's run: name it instead of nesting under an active run
                          **({"mlflow.parentRunId": self.tracker.parent_run_id} if self.tracker.parent_run_id else {})},
                )
                self.run_id = run.info.run_id
        if "params" not in self._done and self.params is not None:
            client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in self.params.to_dict().items()])
        self._done.add("params")
        return self.run_id

    def log_epoch(self, record: Any) -> None:
        now = int(time.time() * 1000)
        values = {
            "loss": record.loss,
            "val_loss": record.val_loss,
            "val_balanced_accuracy": record.val_balanced_accuracy,
            "val_score": record.val_score,
            "val_top_class_share": record.val_top_class_share,
            "val_predicted_classes": record.val_predicted_classes,
            "learning_rate": record.learning_rate,
            "epoch_seconds": record.seconds,
        }
        # Mean L2 norm of the loss gradient per training step: near zero = vanishing, huge = exploding.
        if record.grad_norm_first is not None:
            values["grad_norm_first_layer"] = record.grad_norm_first
        if record.grad_norm_last is not None:
            values["grad_norm_last_layer"] = record.grad_norm_last
        self._buffer.extend(Metric(key, float(value), now, record.epoch) for key, value in values.items())
        if time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS or len(self._buffer) >= 700:  # MLflow: <= 1000 per batch
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - kept in the buffer, sent with the next batch or at the end
                self._flushed_at = time.monotonic()
                self.tracker._note_outage(f"trial {self.number}: epoch metrics postponed", exc)
                return
        # Earlier trials still waiting for MLflow: one try between epochs, at most every few seconds.
        tracker = self.tracker
        if tracker.backlog and time.monotonic() - tracker._tried_at >= CATCH_UP_EVERY_SECONDS:
            tracker.catch_up(seconds=0)

    def _flush(self) -> None:
        if self.run_id is None:
            self.ensure_run()
        while self._buffer:
            batch = self._buffer[:900]
            self.tracker.client.log_batch(self.run_id, metrics=batch)
            del self._buffer[:len(batch)]
        self._flushed_at = time.monotonic()

    def end(self, outcome: TrialOutcome) -> None:
        """Log the trial's end (called once Optuna has stored it); queued for catch-up if MLflow is away."""
        self.tracker.end_trial(self, outcome)

    def end_steps(self, outcome: TrialOutcome) -> None:
        """Log the trial's end, resuming after the steps a failed try already did (raises on failure)."""
        client = self.tracker.client
        self.ensure_run()
        run_id = self.run_id
        self._flush()
        status = "KILLED" if outcome.reason == "interrupted" else _END_STATUS[outcome.state]
        if "results" not in self._done and outcome.val is not None:
            self._log_results(outcome)
        self._done.add("results")
        if "plots" not in self._done and outcome.val is not None:
            self._log_plots(outcome)
        self._done.add("plots")
        if "model" not in self._done and outcome.val is not None and outcome.model is not None \
                and self.wants_model(outcome):
            self.attrs.update(self._log_model(outcome))
        self._done.add("model")
        tags = {TAG_STATE: outcome.state,
                **({"sweep.reason": redact(outcome.reason, self.tracker.tracking_uri)[:250]} if outcome.reason else {}),
                # The runs table shows names, not metrics, until columns are picked: the
                # name carries the val balanced accuracy (and why a trial stopped).
                "mlflow.runName": _run_title(self.number, outcome)}
        if "model_uri" in self.attrs:
            tags["sweep.model_uri"] = self.attrs["model_uri"]
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, status=status)
        self.ended = True
        if self.attrs.get("model_uri"):
            self.tracker.record_model(self.number, self.attrs)

    def from_optuna(self, trial: Any) -> None:
        """Log a finished trial from what the Optuna study holds (no model: it was not kept)."""
        client = self.tracker.client
        self.ensure_run()
        run_id = self.run_id
        state = trial.state.name
        attrs = {**trial.user_attrs, **trial.user_attrs.get("result", {})}
        reason = attrs.get("prune_reason") or attrs.get("fail_reason")
        if state == "FAIL" and reason is None:
            reason = "no heartbeat: its worker died"
        now = int(time.time() * 1000)
        metrics = [Metric("val_score", float(v), now, int(step)) for step, v in sorted(trial.intermediate_values.items())]
        results = {f"result/{k}": attrs[k] for k in (
            "val_score", "val_balanced_accuracy", "val_accuracy", "val_macro_f1", "test_balanced_accuracy",
            "test_accuracy", "test_macro_f1", "best_epoch") if isinstance(attrs.get(k), (int, float))}
        if "penalty" in attrs and isinstance(attrs["penalty"], (int, float)):
            results["result/val_penalty"] = attrs["penalty"]
        if isinstance(attrs.get("collapsed"), bool):
            results["result/collapsed"] = float(attrs["collapsed"])
        metrics += [Metric(k, float(v), now, 0) for k, v in results.items()]
        existing = client.get_run(run_id)
        params = [Param(k, str(v)) for k, v in trial.params.items() if k not in existing.data.params]
        title = [f"trial-{trial.number:03d}"]
        if attrs.get("val_balanced_accuracy") is not None:
            title.append(f"{attrs['val_balanced_accuracy']:.3f}")
        if state != "COMPLETE":
            title.append(str(reason or state.lower()).split(":")[0][:20])
        tags = {TAG_STATE: state, "mlflow.runName": " · ".join(title), "sweep.logged_from": "optuna"}
        if reason:
            tags["sweep.reason"] = redact(str(reason), self.tracker.tracking_uri)[:250]
        for i in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[i:i + 900])
        client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, status=_END_STATUS.get(state, "FAILED"))
        self.ended = True

    def wants_model(self, outcome: TrialOutcome) -> bool:
        policy = self.tracker.log_models
        return outcome.state == "COMPLETE" and (
            policy == "all" or (policy == "best" and (outcome.is_new_best or outcome.in_top)))

    def _log_results(self, outcome: TrialOutcome) -> None:
        val, test = outcome.val, outcome.test
        client, run_id = self.tracker.client, self.run_id
        # The trial's end results (one value each) under "result/": the MLflow UI charts each
        # prefix in its own section, so the per-epoch curves are not buried among single bars.
        metrics = {
            "result/val_score": val.score,
            "result/val_balanced_accuracy": val.balanced_accuracy,
            "result/val_accuracy": val.accuracy,
            "result/val_macro_f1": val.macro_f1,
            "result/val_penalty": val.penalty,
            "result/val_top_class_share": val.top_class_share,
            "result/collapsed": float(val.collapsed),
            "result/best_epoch": float(outcome.best_epoch or 0),
            "result/trial_seconds": outcome.seconds,
        }
        if test is not None:
            metrics.update({"result/test_balanced_accuracy": test.balanced_accuracy, "result/test_accuracy": test.accuracy,
                            "result/test_macro_f1": test.macro_f1})
        if outcome.adjusted:
            metrics.update({f"result/{k}": v for k, v in outcome.adjusted.items() if k.endswith("_adjusted")})
            client.log_dict(run_id, {"decision_offsets": outcome.adjusted["decision_offsets"], "labels": self.tracker.labels,
                                     "rule": "predict argmax over classes of log(probability) + offset"},
                            "decision_rule.json")
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.log_dict(run_id, {"validation": val.to_dict(), "test": test.to_dict() if test else None,
                                 "labels": self.tracker.labels}, "evaluation.json")

    def _log_plots(self, outcome: TrialOutcome) -> None:
        val, test = outcome.val, outcome.test
        panels = [("validation", val.confusion)] + ([("test (not used for selection)", test.confusion)] if test else [])
        title = f"trial {self.number} ({outcome.state.lower()}): {_describe(outcome.params)}"
        history, best_epoch = list(outcome.history), outcome.best_epoch
        tracker, run_id, number = self.tracker, self.run_id, self.number
        # Every run's per-epoch metrics are charted by the MLflow UI itself; the learning-curve
        # figure (with the kept epoch marked) is drawn for each new best trial only, which saves
        # ~0.2 s of CPU per trial that would compete with the next trial's training.
        curve = outcome.is_new_best

        def render() -> None:
            tracker.client.log_figure(run_id, plots.confusion_figure(panels, tracker.labels), "plots/confusion_matrix.png")
            if curve:
                tracker.client.log_figure(run_id, plots.learning_curve_figure(history, title=title, best_epoch=best_epoch),
                                          "plots/learning_curve.png")

        def render_or_queue() -> None:
            try:
                render()
            except Exception as exc:  # noqa: BLE001 - drawn again by the catch-up
                tracker._note_outage(f"trial {number}: plots postponed", exc)
                with tracker._backlog_lock:
                    tracker._backlog.append(_PlotJob(number, render))
                tracker._start_background_catch_up()

        tracker._pending.append(tracker._plotter.submit(render_or_queue))

    def _log_model(self, outcome: TrialOutcome) -> dict[str, str]:
        """Log the trained model as a pyfunc (raw sequences in, the user's labels out); a new best
        is registered under the study's name and takes the ``champion`` alias.

        Returns the trial attributes to store in the Optuna study: ``model_uri``, and for a
        registered model ``model_version`` and ``model_digest`` (checked before it is ever loaded)."""
        import tempfile

        import numpy as np
        import pandas as pd
        from mlflow.models import infer_signature

        labels = self.tracker.labels
        t, f = self.tracker.timesteps, self.tracker.features
        example_out = pd.DataFrame({"label": [labels[0]], **{f"proba_{label}": [0.5] for label in labels}})
        signature = infer_signature(np.zeros((1, t, f), np.float32), example_out)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        with tempfile.TemporaryDirectory(prefix="sweep-model-") as tmp, mlflow.start_run(run_id=self.run_id):
            keras_path, labels_path = Path(tmp) / "model.keras", Path(tmp) / "labels.json"
            outcome.model.save(keras_path)
            labels_path.write_text(json.dumps({"labels": labels}))
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_MODEL_CODE),
                artifacts={"keras_model": str(keras_path), "labels": str(labels_path)},
                signature=signature, pip_requirements=_pip_requirements(),
                metadata={"labels": json.dumps(labels), "preprocessing": "standardize layer inside the model",
                          "study": self.tracker.study_name, "trial_number": self.number},
            )
            mlflow.log_dict(self.tracker.preprocessing, "model_preprocessing.json")
            attrs = {"model_uri": info.model_uri}
            # A collapsed model is never the champion: when every trial so far collapsed there is none.
            if outcome.is_new_best and not outcome.val.collapsed:
                try:
                    version = self.tracker.crown(info.model_uri, model_id=info.model_id, trial_number=self.number,
                                                 score=outcome.val.score, val_loss=outcome.val_loss)
                    attrs.update(model_version=version, model_digest=self.tracker.model_digest(version))
                except Exception as exc:  # noqa: BLE001 - a store without a registry must not fail the trial
                    _logger.warning("trial %d: model logged (%s) but not registered: %s", self.number, info.model_uri,
                                    _first_line(exc))
        return attrs


class _PlotJob:
    """A trial's plots that could not be uploaded; drawn again by the catch-up."""

    def __init__(self, number: int, render: Any) -> None:
        self.number, self.run = number, render

    def release(self) -> None:
        return None


def _first_line(exc: BaseException) -> str:
    """An exception's first message line (MLflow's REST errors run to pages), or its type; secrets masked."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def _run_title(number: int, outcome: TrialOutcome) -> str:
    """``trial-004 · 0.912`` (complete; its val balanced accuracy), ``trial-002 · 0.500 · collapse``
    (pruned, and why), ``trial-003 · nan_loss`` (failed): short, the runs table cuts long names."""
    parts = [f"trial-{number:03d}"]
    if outcome.val is not None:
        parts.append(f"{outcome.val.balanced_accuracy:.3f}")
    if outcome.state != "COMPLETE":
        parts.append((outcome.reason or outcome.state.lower()).split(":")[0][:20])
    return " · ".join(parts)


def _describe(params: LstmParams) -> str:
    p = asdict(params)
    prefix = "LSTM-FCN (FCN 128/256/128 beside, on the dimension-shuffled series) " if p["architecture"] == "lstm_fcn" else ""
    return (f"{prefix}{p['layers']}x LSTM({p['units']}), dropout {p['dropout']:.2f}, lr {p['learning_rate']:.1e}, "
            f"class weight {p['class_weight']}, batch {p['batch_size']}, clipnorm {p['clipnorm']:g}, "
            f"{p['lr_schedule']} schedule")


def log_diagnosis(tracking_uri: str, run_id: str, *, markdown: str, record: dict[str, Any]) -> None:
    """Attach `sweep diagnose --study`'s report to the study's parent run (replacing an older one)."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    client.log_text(run_id, markdown, "diagnosis.md")
    client.log_dict(run_id, record, "diagnosis.json")
    client.set_tag(run_id, "sweep.diagnosis", record.get("headline", "")[:250])


def load_model(model_uri: str, tracking_uri: str | None) -> Any:
    """Load a logged model as MLflow pyfunc (``predict`` gives ``label`` and ``proba_*`` columns)."""
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    return mlflow.pyfunc.load_model(model_uri)


def _download_version(client: MlflowClient, tracking_uri: str, name: str, version: str, dst: Path) -> str:
    """A registered version's files, downloaded into ``dst`` through ``client``'s own registry (a
    ``models:/`` URI would go to the process's default registry, which may be another store)."""
    source = client.get_model_version_download_uri(name, str(version))
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri)


def fetch_champion(record: Any, tracking_uri: str | None, dst: Path) -> Path:
    """Download the study's champion into ``dst`` after checking it is the model the sweep registered
    (:class:`sweep.integrity.ChampionRecord`): the alias points at the recorded version, and the files
    hash to the recorded digest. Returns the local copy; load or serve that, not the registry's.

    Raises:
        ModelIntegrityError: the alias moved or the files changed.
        SweepError: the store or the model cannot be reached.
    """
    from sweep.integrity import verify

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    try:
        alias = str(client.get_model_version_by_alias(record.study, CHAMPION).version)
    except Exception as exc:  # noqa: BLE001 - registry/store errors vary
        raise SweepError(f"no champion model for study {record.study!r} in the MLflow store {mask_url(uri)} "
                         f"({_first_line(exc)[:160]}); pass the --tracking-uri the study logged to") from None
    if alias == record.version:
        try:
            local = _download_version(client, uri, record.study, record.version, dst)
        except Exception as exc:  # noqa: BLE001 - registry/store errors vary
            raise SweepError(f"cannot download the champion of study {record.study!r} from {mask_url(uri)} "
                             f"({_first_line(exc)[:160]})") from None
    else:
        local = str(dst)  # verify() refuses the moved alias before anything is downloaded
    verify(record, alias_version=alias, files=local)
    return Path(local)


def champion_uri(study_name: str) -> str:
    return f"models:/{study_name}@{CHAMPION}"


def model_input_shape(model_uri: str, tracking_uri: str | None) -> tuple[int, int]:
    """(timesteps, features) a logged model takes, read from its signature (no TensorFlow needed).

    Raises:
        SweepError: the model or the store cannot be found.
    """
    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    try:
        info = mlflow.models.get_model_info(model_uri)
    except Exception as exc:  # noqa: BLE001 - registry/store errors vary
        raise SweepError(f"no model {model_uri} in the MLflow store {mask_url(uri)} ({_first_line(exc)[:160]}); a study's champion is "
                         "registered when a sweep logs its best model (--log-models best or all)") from None
    shape = info.signature.inputs.inputs[0].shape if info.signature is not None else None
    if not shape or len(shape) != 3:
        raise SweepError(f"model {model_uri} has no [n, timesteps, features] input signature; was it logged by lstm-sweep?")
    return int(shape[1]), int(shape[2])
