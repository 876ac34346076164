"""The Optuna objective: suggest -> build -> train -> evaluate -> score, one trial at a time.

This is the one place that decides what a trial's end means: COMPLETE returns the penalized
validation score; the pruner's verdict becomes PRUNED; an error or Ctrl-C becomes FAIL. The result
is stored on the Optuna trial first; the tracker hears how the trial ended only once Optuna has
committed it (:meth:`Objective.end_logs`, an Optuna callback), so a tracking outage can never cost
a trained trial its result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import optuna

from objectives import model as lstm
from objectives.detectors import collapsed_epochs, gradient_summary
from objectives.decision import fit_decision_rule
from objectives.imbalance import steps_per_epoch
from objectives.metrics import (
    MIN_WARMUP_STEPS, WARMUP_FRACTION, CollapseWatch, Evaluation, cross_entropy, evaluate_predictions,
    warmup_epochs,
)
from objectives.preprocessing import is_padded, standardization
from objectives.records import RESULT_ATTR, WORKER_ATTR, RefitRun, RetrainRun, TrialResult, worker_id
from objectives.search_space import LstmParams, SearchSpace, suggest_params

_logger = logging.getLogger(__name__)

NAN_LOSS = "nan_loss"  # the fail reason of a trial whose training loss became NaN or infinite


@dataclass
class TrialOutcome:
    """How a trial ended, with everything worth logging about it."""

    number: int
    params: LstmParams
    state: str  # COMPLETE, PRUNED or FAIL
    history: list[lstm.EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    val: Evaluation | None = None
    test: Evaluation | None = None
    model: Any = None
    is_new_best: bool = False
    reason: str | None = None
    # With adjust_decision: the fitted offsets and balanced accuracy after them (val fitted, test honest).
    adjusted: dict[str, Any] | None = None
    seconds: float = 0.0
    val_loss: float | None = None  # validation cross-entropy of the kept epoch (breaks ties in the score)
    stopped: str | None = None  # "deadline": the time budget's search ended during the trial (still COMPLETE)
    # Among the study's `keep_top` best complete trials when it ended: its model is logged (with
    # log_models=best), so the re-training's choice of champion always has a model to ship.
    in_top: bool = False


class Split(Protocol):
    """The arrays a trial trains and scores on (``sweep.data.Split`` is one)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None


# "How many complete trials of the study rank at or above this one?", asked once a trial completed,
# with its trial, score and validation loss (0: a new best). The study layer answers it
# (sweep.ranking.ranked_ahead); without one a trial is a new best (a lone trial, e.g. FixedTrial).
RankJudge = Callable[[optuna.trial.BaseTrial, float, "float | None"], int]


def _no_stop() -> None:
    return None


class TrialLog(Protocol):
    def log_epoch(self, record: lstm.EpochRecord) -> None:
        """Record one epoch (best-effort: never raises into training)."""
        ...

    def link(self) -> dict[str, str]:
        """Attributes to store on the trial with its result (e.g. the tracking run's id)."""
        ...

    def end(self, outcome: TrialOutcome) -> None:
        """Finish the trial's record, after Optuna stored the trial (best-effort: never raises)."""
        ...


class Tracker(Protocol):
    def start_trial(self, number: int, params: LstmParams) -> TrialLog: ...


class NullTracker:
    """Tracks nothing (for tests and benchmarks of the bare objective)."""

    class _Log:
        def log_epoch(self, record: lstm.EpochRecord) -> None:
            return None

        def link(self) -> dict[str, str]:
            return {}

        def end(self, outcome: TrialOutcome) -> None:
            outcome.model = None

    def start_trial(self, number: int, params: LstmParams) -> TrialLog:
        return self._Log()


class Objective:
    """Callable for ``study.optimize``; returns the penalized validation score (higher is better)."""

    def __init__(
        self, split: Split, *, n_classes: int, space: SearchSpace, epochs: int, patience: int, seed: int,
        tracker: Tracker | None = None, collapse_warmup: int = 2, collapse_patience: int = 2,
        adjust_decision: bool = False, warmup_steps: int = MIN_WARMUP_STEPS,
        warmup_fraction: float = WARMUP_FRACTION, search_ends_at: float | None = None, keep_top: int = 1,
        ranked_ahead: RankJudge | None = None, check_interrupt: Callable[[], None] = _no_stop,
    ) -> None:
        """``check_interrupt`` is called at every epoch and raises to stop the trial (the sweep passes
        ``sweep.interrupt.check``); ``ranked_ahead`` see :data:`RankJudge`."""
        self.ranked_ahead = ranked_ahead
        self.check_interrupt = check_interrupt
        self.keep_top = keep_top
        # Wall-clock time (time.time()) at which a running trial stops at its next epoch boundary
        # and keeps its best epoch: the time budget's search deadline (sweep.budget); None: never.
        self.search_ends_at = search_ends_at
        self.warmup_steps = warmup_steps
        self.warmup_fraction = warmup_fraction
        self.adjust_decision = adjust_decision
        self.collapse_warmup, self.collapse_patience = collapse_warmup, collapse_patience
        self.split = split
        self.n_classes = n_classes
        self.space = space
        self.epochs = epochs
        self.patience = patience
        self.seed = seed
        self.tracker = tracker or NullTracker()
        self.mean, self.std = standardization(split.X_train)
        self.padded = is_padded(split.X_train)  # masking is searched only on padded data
        self._ended: list[tuple[TrialLog, TrialOutcome]] = []  # stored in Optuna, not yet told to the tracker

    def end_logs(self, *_: Any) -> None:
        """Tell the tracker how the trials stored since the last call ended. An Optuna callback
        (``study.optimize(..., callbacks=[objective.end_logs])``): it runs once Optuna committed the
        trial's state; the next trial's start calls it too."""
        while self._ended:
            log, outcome = self._ended.pop(0)
            try:
                log.end(outcome)
            except Exception as exc:  # noqa: BLE001 - the result is stored; a tracking error must not fail the sweep
                _logger.warning("trial %d: could not log its end to the tracker: %s", outcome.number,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                outcome.model = None

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        self.end_logs()
        number = getattr(trial, "number", 0)
        params = suggest_params(trial, self.space, padded=self.padded, features=self.split.X_train.shape[2],
                                timesteps=self.split.X_train.shape[1])
        trial.set_user_attr(WORKER_ATTR, worker_id())  # after its parameters: a retry runs all of them
        log = self.tracker.start_trial(number, params)
        outcome = TrialOutcome(number=number, params=params, state="FAIL")
        t0 = time.perf_counter()
        training = None

        study = getattr(trial, "study", None)
        # A queued recipe (trial 0 / 1 of a new study) is the reference the search starts from: it
        # trains to its cap or its patience. Asked at Hyperband's first rung (5 epochs), LSTM-FCN's
        # recipe, whose cosine schedule is still at full rate then, was stopped for a stacked LSTM's
        # quicker start. A recipe that collapses is still stopped.
        recipe = bool(getattr(trial, "user_attrs", {}).get("baseline"))
        prunes = study is not None and not recipe and not isinstance(study.pruner, optuna.pruners.NopPruner)

        warmup, min_epochs = self._warmup(params), self._min_epochs(params)
        watch = CollapseWatch(warmup=warmup, patience=self.collapse_patience, chance=1 / self.n_classes)

        def on_epoch(record: lstm.EpochRecord) -> None:
            self.check_interrupt()
            log.log_epoch(record)
            trial.report(record.val_score, record.epoch)
            # Collapse first: it names the cause, where the median pruner only says "worse".
            if watch.update(record.epoch, record.val_penalty, record.val_balanced_accuracy):
                raise optuna.TrialPruned(watch.reason())
            if prunes and record.epoch > min_epochs and trial.should_prune():
                kind = "hyperband" if isinstance(study.pruner, optuna.pruners.HyperbandPruner) else "median"
                why = "not in the best third at its rung" if kind == "hyperband" else "below the median of earlier trials"
                raise optuna.TrialPruned(f"{kind}: {why} at epoch {record.epoch}")
            if self.search_ends_at is not None and time.time() >= self.search_ends_at:
                raise _DeadlineReached()

        try:
            seed = self.seed + number
            training = lstm.start_training(
                params, X_train=self.split.X_train, y_train=self.split.y_train, X_val=self.split.X_val,
                y_val=self.split.y_val, n_classes=self.n_classes, mean=self.mean, std=self.std,
                patience=self.patience, seed=seed, on_epoch=on_epoch, min_epochs=min_epochs,
            )
            outcome.history = training.history
            try:
                try:
                    lstm.fit(training, params, X_train=self.split.X_train, y_train=self.split.y_train,
                             n_classes=self.n_classes, epochs=self.epochs, seed=seed)
                except _DeadlineReached:
                    # Its best epoch's weights are a model like any other, scored on the same
                    # validation split: the trial is complete, with fewer epochs than it might have had.
                    outcome.stopped = "deadline"
                outcome.state = "COMPLETE"
            except optuna.TrialPruned as exc:
                outcome.state, outcome.reason = "PRUNED", str(exc) or "pruned"
            self._evaluate(training, outcome)
            if outcome.state == "COMPLETE":
                ahead = self.ranked_ahead(trial, outcome.val.score, outcome.val_loss) if self.ranked_ahead else 0
                outcome.is_new_best, outcome.in_top = ahead == 0, ahead < self.keep_top
            outcome.seconds = time.perf_counter() - t0
            self._store(trial, outcome, log.link())
            self._ended.append((log, outcome))  # logged after Optuna commits the trial (end_logs)
            _logger.info("trial %d: %s val_balanced_accuracy=%.4f (collapsed: %s)", number, outcome.state,
                         outcome.val.balanced_accuracy, "yes" if outcome.val.collapsed else "no")
            if outcome.state == "PRUNED":
                raise optuna.TrialPruned(outcome.reason)
            return outcome.val.score
        except optuna.TrialPruned:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure must close the trial's record
            outcome.state = "FAIL"
            if isinstance(exc, KeyboardInterrupt):
                outcome.reason = "interrupted"
            elif isinstance(exc, lstm.NonFiniteLoss):
                outcome.reason = f"{NAN_LOSS}: {exc}"  # these parameters diverge; the search goes on
            else:
                outcome.reason = f"{type(exc).__name__}: {exc}"
            outcome.seconds = time.perf_counter() - t0
            try:
                trial.set_user_attr("fail_reason", outcome.reason[:500])
                if outcome.history:
                    failed = TrialResult(epochs_run=len(outcome.history), **gradient_summary(outcome.history))
                    trial.set_user_attr(RESULT_ATTR, failed.to_attr())
                for key, value in log.link().items():
                    trial.set_user_attr(key, value)
            except Exception as store_exc:  # noqa: BLE001 - never mask the original error
                _logger.warning("trial %d: could not record the failure reason: %s", number,
                                str(store_exc).splitlines()[0] if str(store_exc) else type(store_exc).__name__)
            outcome.model = None
            self._ended.append((log, outcome))
            raise
        finally:
            del training

    def train_once(self, params: LstmParams, seed: int, *, stop_at: float | None = None) -> tuple[RetrainRun, Any]:
        """Train ``params`` once more with another seed, exactly as a trial trains (patience, best
        epoch kept, collapse stopping), outside Optuna; returns its validation and test scores and
        the trained model (the best epoch's weights).
        ``stop_at`` (wall-clock): stop at the first epoch boundary past it, keeping the best epoch."""
        warmup = self._warmup(params)
        watch = CollapseWatch(warmup=warmup, patience=self.collapse_patience, chance=1 / self.n_classes)

        def on_epoch(record: lstm.EpochRecord) -> None:
            self.check_interrupt()
            if watch.update(record.epoch, record.val_penalty, record.val_balanced_accuracy):
                raise _Collapsed()
            if stop_at is not None and time.time() >= stop_at:
                raise _DeadlineReached()

        training = lstm.start_training(
            params, X_train=self.split.X_train, y_train=self.split.y_train, X_val=self.split.X_val,
            y_val=self.split.y_val, n_classes=self.n_classes, mean=self.mean, std=self.std,
            patience=self.patience, seed=seed, on_epoch=on_epoch, min_epochs=self._min_epochs(params),
        )
        stopped = deadline = False
        try:
            lstm.fit(training, params, X_train=self.split.X_train, y_train=self.split.y_train,
                     n_classes=self.n_classes, epochs=self.epochs, seed=seed)
        except _Collapsed:
            stopped = True
        except _DeadlineReached:
            deadline = True
        outcome = TrialOutcome(number=-1, params=params, state="COMPLETE")
        self._evaluate(training, outcome)
        val, test = outcome.val, outcome.test
        return RetrainRun(
            seed=seed, epochs=len(training.history), stopped_for_collapse=stopped, stopped_for_deadline=deadline,
            val_score=val.score, val_balanced_accuracy=val.balanced_accuracy, near_collapse=val.penalty > 0,
            test_balanced_accuracy=test.balanced_accuracy if test is not None else None,
        ), training.model

    def refit(self, params: LstmParams, seed: int, *, epochs: int, stop_at: float | None = None) -> tuple[RefitRun, Any]:
        """Train ``params`` on the split's training arrays for ``epochs`` epochs
        (:func:`objectives.model.fit_fixed`: a cosine decay to 0, no early stopping; its validation
        arrays are not watched); returns its scores on those same sequences (a collapse check), on
        the validation arrays if any, and on the test part (reported only), and the model.
        ``stop_at`` (wall-clock): stop at the first epoch boundary past it."""
        started = time.perf_counter()

        def stop(done: int) -> bool:
            self.check_interrupt()
            return stop_at is not None and time.time() >= stop_at

        model, done = lstm.fit_fixed(params, X_train=self.split.X_train, y_train=self.split.y_train,
                                     n_classes=self.n_classes, mean=self.mean, std=self.std, epochs=epochs,
                                     seed=seed, stop=stop)
        own = self._scored(model, self.split.X_train, self.split.y_train)
        val = test = None
        if len(self.split.y_val):
            val = self._scored(model, self.split.X_val, self.split.y_val).balanced_accuracy
        if self.split.X_test is not None and self.split.y_test is not None:
            test = self._scored(model, self.split.X_test, self.split.y_test).balanced_accuracy
        return RefitRun(seed=seed, epochs=done, planned_epochs=epochs, train_balanced_accuracy=own.balanced_accuracy,
                        near_collapse=own.penalty > 0, test_balanced_accuracy=test, val_balanced_accuracy=val,
                        seconds=round(time.perf_counter() - started, 1)), model

    def _warmup(self, params: LstmParams) -> int:
        """Epochs before a trial may be stopped for collapse: the configured warm-up epochs, and
        enough epochs for ``warmup_steps`` optimizer steps (small sets need more epochs)."""
        steps = steps_per_epoch(self.split.y_train, params.class_weight, params.batch_size)
        return warmup_epochs(self.collapse_warmup, steps, min_steps=self.warmup_steps)

    def _min_epochs(self, params: LstmParams) -> int:
        """Epochs before a trial may be stopped for a flat or below-median score: the collapse
        warm-up, and ``warmup_fraction`` of the epoch budget (slow starters). A model that predicts
        one class is still stopped after the shorter warm-up."""
        steps = steps_per_epoch(self.split.y_train, params.class_weight, params.batch_size)
        return warmup_epochs(self.collapse_warmup, steps, min_steps=self.warmup_steps, epochs=self.epochs,
                             fraction=self.warmup_fraction)

    def _scored(self, model: Any, X: np.ndarray, y: np.ndarray) -> Evaluation:
        """``model``'s predicted classes on ``X`` scored against ``y``."""
        return evaluate_predictions(y, lstm.predict_proba(model, X).argmax(axis=1), self.n_classes)

    def _evaluate(self, training: lstm.Training, outcome: TrialOutcome) -> None:
        outcome.best_epoch = training.best_epoch
        outcome.model = training.model
        val_probs = lstm.predict_proba(training.model, self.split.X_val)
        outcome.val = evaluate_predictions(self.split.y_val, val_probs.argmax(axis=1), self.n_classes)
        outcome.val_loss = cross_entropy(self.split.y_val, val_probs)
        test_probs = None
        if self.split.X_test is not None:
            test_probs = lstm.predict_proba(training.model, self.split.X_test)
            outcome.test = evaluate_predictions(self.split.y_test, test_probs.argmax(axis=1), self.n_classes)
        if self.adjust_decision and outcome.state == "COMPLETE":
            rule = fit_decision_rule(val_probs, self.split.y_val)
            outcome.adjusted = {
                "decision_offsets": rule.offsets,
                "val_balanced_accuracy_adjusted": evaluate_predictions(
                    self.split.y_val, rule.predict(val_probs), self.n_classes).balanced_accuracy,
            }
            if test_probs is not None:
                outcome.adjusted["test_balanced_accuracy_adjusted"] = evaluate_predictions(
                    self.split.y_test, rule.predict(test_probs), self.n_classes).balanced_accuracy

    def _result(self, outcome: TrialOutcome) -> TrialResult:
        """The typed record of a trial that was evaluated (complete or pruned)."""
        val, test, adjusted = outcome.val, outcome.test, outcome.adjusted or {}
        assert val is not None
        return TrialResult(
            val_score=val.score, val_loss=outcome.val_loss, val_balanced_accuracy=val.balanced_accuracy,
            val_accuracy=val.accuracy, val_macro_f1=val.macro_f1, penalty=val.penalty, collapsed=val.collapsed,
            top_class_share=val.top_class_share, val_histogram=val.histogram, val_confusion=val.confusion,
            best_epoch=outcome.best_epoch, epochs_run=len(outcome.history), train_seconds=round(outcome.seconds, 3),
            collapse_epochs=collapsed_epochs(outcome.history, warmup=self.collapse_warmup),
            **gradient_summary(outcome.history),
            test_balanced_accuracy=test.balanced_accuracy if test else None,
            test_accuracy=test.accuracy if test else None, test_macro_f1=test.macro_f1 if test else None,
            test_collapsed=test.collapsed if test else None, test_confusion=test.confusion if test else None,
            decision_offsets=adjusted.get("decision_offsets"),
            val_balanced_accuracy_adjusted=adjusted.get("val_balanced_accuracy_adjusted"),
            test_balanced_accuracy_adjusted=adjusted.get("test_balanced_accuracy_adjusted"),
            prune_reason=outcome.reason or None, stopped=outcome.stopped,
        )

    def _store(self, trial: optuna.trial.BaseTrial, outcome: TrialOutcome, attrs: dict[str, str]) -> None:
        # One write for the whole record (each user attribute is its own database transaction);
        # the links to MLflow stay top-level attributes, where other tools look for them.
        trial.set_user_attr(RESULT_ATTR, self._result(outcome).to_attr())
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


class _Collapsed(Exception):
    """Stops a re-training run that collapsed (:meth:`Objective.train_once`)."""



class _DeadlineReached(Exception):
    """Stops a trial or re-training run at an epoch boundary once its time is up (best epoch kept)."""
