"""One trial's MLflow run (:meth:`sweep.tracking.MlflowTracker.start_trial`): per-epoch metrics in
batches, the end results under ``result/``, the confusion matrix and learning curve, the model of
each trial among the best (logged as a pyfunc, a new best registered as the study's champion);
made from what Optuna stored when MLflow was away (:meth:`TrialRun.from_optuna`)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from objectives.records import worker_id
from objectives.search_space import LstmParams, describe
from sweep import plots
from sweep.errors import first_line
from sweep.records import record_of
from sweep.redact import redact

if TYPE_CHECKING:  # the objective imports TensorFlow; `sweep run --create-only` needs none of it
    from objectives.objective import TrialOutcome
    from sweep.tracking import MlflowTracker

_logger = logging.getLogger(__name__)

TAG_STUDY = "sweep.study"
TAG_ROLE = "sweep.role"
TAG_TRIAL = "sweep.trial_number"
TAG_WORKER = "sweep.worker"  # host:pid of the process that ran the trial
TAG_STATE = "sweep.trial_state"
END_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def pip_requirements() -> list[str]:
    reqs = []
    for dist in ("tensorflow-cpu", "tensorflow", "keras"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


class TrialRun:
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
                          TAG_STATE: "RUNNING", TAG_WORKER: worker_id(),
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
                self.tracker.note_outage(f"trial {self.number}: epoch metrics postponed", exc)
                return
        # Earlier trials still waiting for MLflow: one try between epochs, at most every few seconds.
        tracker = self.tracker
        if tracker.catch_up_due():
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
        status = "KILLED" if outcome.reason == "interrupted" else END_STATUS[outcome.state]
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
        record = record_of(trial)
        r, state, reason = record.result, record.state, record.reason
        now = int(time.time() * 1000)
        metrics = [Metric("val_score", float(v), now, int(step)) for step, v in sorted(trial.intermediate_values.items())]
        values = {"val_score": r.val_score, "val_balanced_accuracy": r.val_balanced_accuracy, "val_accuracy": r.val_accuracy,
                  "val_macro_f1": r.val_macro_f1, "test_balanced_accuracy": r.test_balanced_accuracy,
                  "test_accuracy": r.test_accuracy, "test_macro_f1": r.test_macro_f1, "best_epoch": r.best_epoch,
                  "val_penalty": r.penalty}
        results = {f"result/{k}": v for k, v in values.items() if v is not None}
        if r.val_score is not None:  # an evaluated trial (a failed one stores no collapse flag)
            results["result/collapsed"] = float(r.collapsed)
        metrics += [Metric(k, float(v), now, 0) for k, v in results.items()]
        existing = client.get_run(run_id)
        params = [Param(k, str(v)) for k, v in trial.params.items() if k not in existing.data.params]
        title = [f"trial-{trial.number:03d}"]
        if r.val_balanced_accuracy is not None:
            title.append(f"{r.val_balanced_accuracy:.3f}")
        if state != "COMPLETE":
            title.append(str(reason or state.lower()).split(":")[0][:20])
        tags = {TAG_STATE: state, "mlflow.runName": " · ".join(title), "sweep.logged_from": "optuna"}
        if reason:
            tags["sweep.reason"] = redact(str(reason), self.tracker.tracking_uri)[:250]
        for i in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[i:i + 900])
        client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, status=END_STATUS.get(state, "FAILED"))
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
        title = f"trial {self.number} ({outcome.state.lower()}): {describe(outcome.params)}"
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
                tracker.note_outage(f"trial {number}: plots postponed", exc)
                tracker.postpone(_PlotJob(number, render))
                tracker.start_background_catch_up()

        tracker.submit_plot(render_or_queue)

    def _log_model(self, outcome: TrialOutcome) -> dict[str, str]:
        """Log the trained model as a pyfunc (raw sequences in, the user's labels out); a new best
        is registered under the study's name and takes the ``champion`` alias.

        Returns the trial attributes to store in the Optuna study: ``model_uri``, and for a
        registered model ``model_version`` and ``model_digest`` (checked before it is ever loaded)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sweep-model-") as tmp:
            keras_path = Path(tmp) / "model.keras"
            outcome.model.save(keras_path)
            info = log_pyfunc(self.tracker, self.run_id, [keras_path], trial_number=self.number)
            attrs = {"model_uri": info.model_uri}
        # A collapsed model is never the champion: when every trial so far collapsed there is none.
        if outcome.is_new_best and not outcome.val.collapsed:
            try:
                version = self.tracker.registry.crown(info.model_uri, model_id=info.model_id, trial_number=self.number,
                                                      score=outcome.val.score, val_loss=outcome.val_loss, run_id=self.run_id)
                attrs.update(self.tracker.registry.model_links(version, self.tracker.tracking_uri))
            except Exception as exc:  # noqa: BLE001 - a store without a registry must not fail the trial
                _logger.warning("trial %d: model logged (%s) but not registered: %s", self.number,
                                info.model_uri, redact(first_line(exc)))
        return attrs


def log_pyfunc(tracker: MlflowTracker, run_id: str, keras_models: list[Path], *, trial_number: int,
               metadata: dict[str, Any] | None = None) -> Any:
    """Log saved Keras models into ``run_id`` as one pyfunc (``sweep/pyfunc_model.py``: raw sequences
    in, the user's labels out; several models predict the mean of their probabilities), with the
    data's preprocessing record. Returns MLflow's ModelInfo."""
    import tempfile

    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    labels = tracker.labels
    example_out = pd.DataFrame({"label": [labels[0]], **{f"proba_{label}": [0.5] for label in labels}})
    signature = infer_signature(np.zeros((1, tracker.timesteps, tracker.features), np.float32), example_out)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    with tempfile.TemporaryDirectory(prefix="sweep-model-") as tmp, mlflow.start_run(run_id=run_id):
        labels_path = Path(tmp) / "labels.json"
        labels_path.write_text(json.dumps({"labels": labels}))
        artifacts = {"labels": str(labels_path)}
        for i, path in enumerate(keras_models):
            artifacts["keras_model" if i == 0 else f"keras_model_{i}"] = str(path)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_MODEL_CODE), artifacts=artifacts,
            signature=signature, pip_requirements=pip_requirements(),
            metadata={"labels": json.dumps(labels), "preprocessing": "standardize layer inside the model",
                      "study": tracker.study_name, "trial_number": trial_number, **(metadata or {})},
        )
        mlflow.log_dict(tracker.preprocessing, "model_preprocessing.json")
    return info


class _PlotJob:
    """A trial's plots that could not be uploaded; drawn again by the catch-up."""

    def __init__(self, number: int, render: Any) -> None:
        self.number, self.run = number, render

    def release(self) -> None:
        return None


def _run_title(number: int, outcome: TrialOutcome) -> str:
    """``trial-004 · 0.912`` (complete; its val balanced accuracy), ``trial-002 · 0.500 · collapse``
    (pruned, and why), ``trial-003 · nan_loss`` (failed): short, the runs table cuts long names."""
    parts = [f"trial-{number:03d}"]
    if outcome.val is not None:
        parts.append(f"{outcome.val.balanced_accuracy:.3f}")
    if outcome.state != "COMPLETE":
        parts.append((outcome.reason or outcome.state.lower()).split(":")[0][:20])
    return " · ".join(parts)
