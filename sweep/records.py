"""A study's trials as typed records, made in one place from Optuna's trials.

:func:`trial_records` and :func:`best_of` are the only readers of what a trial stores (its
``result`` record, :class:`objectives.records.TrialResult`, and its links to MLflow); the CLI, the
plots, the diagnosis, the tracking and the benchmarks read these records. ``to_dict`` gives the
JSON that ``sweep status --json``, ``sweep best --json``, ``sweep export`` and MLflow's
``best_trial.json`` show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.records import RESULT_ATTR, WORKER_ATTR, RetrainRun, TrialResult
from sweep.ranking import champion_trial
from sweep.redact import mask_url, redact

FINISHED_STATES = ("COMPLETE", "PRUNED")
# Where a trial's MLflow run and model are. A model is logged after Optuna stored the trial (which is
# then final), so these may sit on the study as ``<key>.<number>`` instead of on the trial.
MODEL_LINKS = ("model_uri", "model_digest", "model_version", "mlflow_run_id")
# The fail reason of a trial that got a number past the study's N slots (sweep.loop).
SURPLUS = "surplus: another worker took the study's last slot (this trial never trained)"


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, whatever its state: what `status`, `export`, the plots and the
    diagnosis show.

    ``collapsed``: the kept model predicts one class (the stored flag). ``near_collapse``: the
    trial predicted (nearly) one class: it was stopped for it, or its kept model pays a collapse
    penalty (every collapsed trial is a near-collapse; the diagnosis counts these).
    """

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: dict[str, Any]
    result: TrialResult = field(default_factory=TrialResult)
    reason: str | None = None  # why it was pruned or failed
    duration_s: float | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None
    model_digest: str | None = None
    model_version: str | None = None
    surplus: bool = False  # lost the race for the study's last slot: never trained, not a failure
    retry_of: int | None = None  # the dead worker's trial whose parameters it runs again
    baseline: bool = False  # the recipe queued as a new study's trial 0
    worker: str | None = None  # the process that ran it, host:pid

    @property
    def score(self) -> float | None:
        return self.result.val_score if self.result.val_score is not None else self.value

    @property
    def val_balanced_accuracy(self) -> float | None:
        return self.result.val_balanced_accuracy

    @property
    def test_balanced_accuracy(self) -> float | None:
        return self.result.test_balanced_accuracy

    @property
    def collapsed(self) -> bool:
        return self.result.collapsed

    @property
    def near_collapse(self) -> bool:
        return str(self.reason or "").startswith("collapse") or (self.result.penalty or 0) > 0

    @property
    def epochs_run(self) -> int | None:
        return self.result.epochs_run

    @property
    def stopped(self) -> str | None:
        """"deadline": a time budget's search ended it (still COMPLETE)."""
        return self.result.stopped

    @property
    def finished(self) -> bool:
        """Complete or pruned: it holds one of the study's N slots for good."""
        return self.state in FINISHED_STATES and not self.surplus

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "number": self.number, "state": self.state, "value": self.value, "score": self.score,
            "val_balanced_accuracy": r.val_balanced_accuracy, "test_balanced_accuracy": r.test_balanced_accuracy,
            "collapsed": r.collapsed, "near_collapse": self.near_collapse, "gradient_trouble": r.gradient_trouble,
            "penalty": r.penalty, "top_class_share": r.top_class_share, "best_epoch": r.best_epoch,
            "epochs_run": r.epochs_run, "stopped": r.stopped, "duration_s": self.duration_s, "params": dict(self.params),
            "mlflow_run_id": self.mlflow_run_id, "model_uri": self.model_uri, "reason": self.reason,
            "surplus": self.surplus, "retry_of": self.retry_of, "baseline": self.baseline, "worker": self.worker,
        }


def model_links(trial: FrozenTrial, study_attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Trial ``trial``'s :data:`MODEL_LINKS`: its own attributes, else the study's ``<key>.<number>``."""
    own, shared = trial.user_attrs, study_attrs or {}
    return {k: own.get(k) if own.get(k) is not None else shared.get(f"{k}.{trial.number}") for k in MODEL_LINKS}


def record_of(trial: FrozenTrial, *, retried_as: Mapping[int, int] | None = None,
              study_attrs: Mapping[str, Any] | None = None) -> TrialRecord:
    """The typed record of one Optuna trial (``retried_as``: failed trial number -> its retry;
    ``study_attrs``: the study's user attributes, where late model links are kept)."""
    attrs = trial.user_attrs
    links = model_links(trial, study_attrs)
    worker = attrs.get(WORKER_ATTR)
    result = TrialResult.from_attr(attrs.get(RESULT_ATTR))
    reason = result.prune_reason or attrs.get("fail_reason")
    if trial.state == TrialState.FAIL and reason is None:
        # Failed by a heartbeat check: its worker died (kill -9, lost machine).
        retry = (retried_as or {}).get(trial.number)
        who = f" ({worker})" if worker else ""
        reason = f"no heartbeat: its worker{who} died" + (f"; retried as trial {retry}" if retry is not None else "")
    reason = redact(reason) if reason is not None else None  # an exception's text may quote a URL
    duration = None
    if trial.datetime_complete and trial.datetime_start:
        duration = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
    return TrialRecord(
        number=trial.number, state=trial.state.name, value=trial.value, params=dict(trial.params), result=result,
        reason=reason, duration_s=duration, mlflow_run_id=links["mlflow_run_id"], model_uri=links["model_uri"],
        model_digest=links["model_digest"], model_version=links["model_version"],
        surplus=attrs.get("fail_reason") == SURPLUS, retry_of=trial.system_attrs.get("failed_trial"),
        baseline=bool(attrs.get("baseline")), worker=worker,
    )


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study``, in trial-number order."""
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    study_attrs = study.user_attrs
    return [record_of(t, retried_as=retried_as, study_attrs=study_attrs) for t in trials]


def finished(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The complete and pruned trials (surplus trials never trained and are left out)."""
    return [r for r in records if r.finished]


@dataclass(frozen=True)
class BestTrial:
    """The trial that ships (:func:`sweep.ranking.champion_trial`) with what the study knows
    around it: the labels, where its model and runs are, the data's planted Bayes rate."""

    study: str
    record: TrialRecord
    selection: dict[str, Any] | None = None  # the re-training's margin rule, when it chose (sweep.selection)
    shipped: dict[str, Any] | None = None  # the model that ships when it is not the trial's own (sweep.ensemble)
    length_check: dict[str, Any] | None = None  # --ship auto's test of the refit's length (sweep.refit)
    labels: list[Any] | None = None
    tracking_uri: str | None = None
    data_path: str | None = None
    bayes_balanced_accuracy: float | None = None
    bayes_balanced_accuracy_test: float | None = None

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def value(self) -> float:
        return float(self.record.value if self.record.value is not None else float("nan"))

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def result(self) -> TrialResult:
        return self.record.result

    @property
    def model_uri(self) -> str | None:
        return self.record.model_uri

    @property
    def mlflow_run_id(self) -> str | None:
        return self.record.mlflow_run_id

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "study": self.study, "number": self.number, "selection": self.selection, "shipped": self.shipped,
            "length_check": self.length_check,
            "value": self.value,
            "params": dict(self.params),
            "val_balanced_accuracy": r.val_balanced_accuracy, "val_accuracy": r.val_accuracy,
            "val_macro_f1": r.val_macro_f1, "penalty": r.penalty, "test_balanced_accuracy": r.test_balanced_accuracy,
            "test_accuracy": r.test_accuracy, "test_macro_f1": r.test_macro_f1,
            "val_balanced_accuracy_adjusted": r.val_balanced_accuracy_adjusted,
            "test_balanced_accuracy_adjusted": r.test_balanced_accuracy_adjusted,
            "decision_offsets": r.decision_offsets, "collapsed": r.collapsed, "val_confusion": r.val_confusion,
            "test_confusion": r.test_confusion, "best_epoch": r.best_epoch, "labels": self.labels,
            "mlflow_run_id": self.mlflow_run_id, "model_uri": self.model_uri, "tracking_uri": self.tracking_uri,
            "data_path": self.data_path, "bayes_balanced_accuracy": self.bayes_balanced_accuracy,
            "bayes_balanced_accuracy_test": self.bayes_balanced_accuracy_test,
        }


def best_of(study: optuna.Study) -> BestTrial | None:
    """The trial that ships (:func:`sweep.ranking.champion_trial`: the search's best complete trial
    unless the re-training chose another) as a :class:`BestTrial` (None while no trial completed),
    with the fold ensemble that ships in its place, if any (study attribute ``shipped``)."""
    best, choice = champion_trial(study)
    if best is None:
        return None
    attrs = study.user_attrs
    shipped, check = attrs.get("shipped"), attrs.get("length_check")
    return BestTrial(
        study=study.study_name, record=record_of(best, study_attrs=attrs), selection=choice, labels=attrs.get("labels"),
        shipped=shipped if shipped and shipped.get("trial") == best.number else None,
        length_check=check if check and check.get("trial") == best.number else None,
        # Stored credential-free since the secrets change; older studies may hold a password.
        tracking_uri=mask_url(attrs["tracking_uri"]) if attrs.get("tracking_uri") else None,
        data_path=attrs.get("data_path"),
        bayes_balanced_accuracy=attrs.get("bayes_balanced_accuracy"),
        bayes_balanced_accuracy_test=attrs.get("bayes_balanced_accuracy_test"),
    )


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation of the values that are not None; (None, None) if none."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None, None
    mean = sum(clean) / len(clean)
    return mean, (sum((v - mean) ** 2 for v in clean) / len(clean)) ** 0.5


@dataclass(frozen=True)
class RetrainEntry:
    """One of the top-k configurations trained again after the search (a fold and a new seed per run)."""

    rank: int
    trial: int
    params: dict[str, Any]
    search_value: float | None
    search_val_balanced_accuracy: float | None
    runs: list[RetrainRun]

    @property
    def val_balanced_accuracy_mean(self) -> float | None:
        return mean_std(r.val_balanced_accuracy for r in self.runs)[0]

    @property
    def val_balanced_accuracy_std(self) -> float | None:
        return mean_std(r.val_balanced_accuracy for r in self.runs)[1]

    @property
    def test_balanced_accuracy_mean(self) -> float | None:
        return mean_std(r.test_balanced_accuracy for r in self.runs)[0]

    @property
    def test_balanced_accuracy_std(self) -> float | None:
        return mean_std(r.test_balanced_accuracy for r in self.runs)[1]

    @property
    def near_collapse_runs(self) -> int:
        return sum(1 for r in self.runs if r.near_collapse)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "trial": self.trial, "params": dict(self.params), "search_value": self.search_value,
            "search_val_balanced_accuracy": self.search_val_balanced_accuracy,
            "val_balanced_accuracy_mean": self.val_balanced_accuracy_mean,
            "val_balanced_accuracy_std": self.val_balanced_accuracy_std,
            "test_balanced_accuracy_mean": self.test_balanced_accuracy_mean,
            "test_balanced_accuracy_std": self.test_balanced_accuracy_std,
            "near_collapse_runs": self.near_collapse_runs, "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> RetrainEntry:
        return cls(rank=int(stored["rank"]), trial=int(stored["trial"]), params=dict(stored["params"]),
                   search_value=stored.get("search_value"),
                   search_val_balanced_accuracy=stored.get("search_val_balanced_accuracy"),
                   runs=[RetrainRun.from_dict(r) for r in stored.get("runs", [])])


def stored_retraining(study: optuna.Study) -> list[RetrainEntry] | None:
    """The re-training results stored on the study (None if it was not re-trained)."""
    stored = (study.user_attrs.get("retrained") or {}).get("results")
    return None if stored is None else [RetrainEntry.from_dict(e) for e in stored]


def steadiest(entries: Sequence[RetrainEntry]) -> RetrainEntry:
    """The re-trained configuration with the highest mean validation balanced accuracy over seeds."""
    return max(entries, key=lambda e: e.val_balanced_accuracy_mean or 0.0)

