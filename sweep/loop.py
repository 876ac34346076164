"""The exact-N trial loop: run trials until the study holds N finished ones, with any number of
workers on one study (slots by trial number), dead workers' trials reaped and retried, and (under a
time budget) no trial started that cannot reach its first rung."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.records import RESULT_ATTR, TrialResult
from sweep import interrupt
from sweep.errors import StudyError
from sweep.records import SURPLUS as SURPLUS

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that hold one of the study's N slots: finished, being run, or queued for a retry.
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_CONSECUTIVE_FAILURES = 3
MAX_CONSECUTIVE_DIVERGED = 10  # nan_loss failures: the search goes on, up to this many in a row
POLL_SECONDS = 2.0

_logger = logging.getLogger(__name__)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class _Surplus(Exception):
    """The trial got a number past the study's N slots (another worker took the last one)."""


def slot_is_free(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether trial ``number`` is within the study's ``n_trials`` slots.

    Slots go by trial number: a trial may run only if fewer than ``n_trials`` trials with a lower
    number are finished, running or queued. Two workers racing for the last slot get different
    numbers from the storage, so exactly one of them wins, on any database.
    """
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < number)
    return ahead < n_trials


def run_trials(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], *, n_trials: int,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
    on_reap: Callable[[list[int]], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
    should_stop: Callable[[optuna.Study], bool] | None = None,
) -> int:
    """Run trials until the study holds ``n_trials`` finished (complete or pruned) ones.

    Safe with any number of workers on one study: a trial runs only in a free slot
    (:func:`slot_is_free`), so the study never ends with more than ``n_trials`` finished trials.
    While the last slots are taken by trials running elsewhere, the worker waits and reaps: if
    one of them stops sending heartbeats it is failed and re-queued with its parameters, and a
    waiting worker runs it.

    A failed trial does not count and is replaced; after ``MAX_CONSECUTIVE_FAILURES`` failures
    in a row in this worker the sweep stops with the last error. A trial whose loss diverged
    (fail reason ``nan_loss``) does not count as such a failure, only ``MAX_CONSECUTIVE_DIVERGED``
    of them in a row stop the sweep. Ctrl-C propagates (the trial is
    marked FAIL).

    Args:
        on_trial_end: after each trial this worker ran.
        on_wait: called with the number of trials running elsewhere when this worker starts waiting.
        on_reap: called with the numbers of trials reaped (failed for lack of heartbeat).
        should_stop: asked before each trial (a time budget: :func:`budget_stop`); True ends the loop.

    Returns:
        The number of trials this call ran.
    """
    ran = 0
    failures = diverged_in_a_row = 0
    mine: dict[str, Any] = {}

    def remember(study_: optuna.Study, trial: FrozenTrial) -> None:
        mine["frozen"] = trial

    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [remember]
    if on_trial_end is not None:
        callbacks.append(lambda s, t: None if t.user_attrs.get("fail_reason") == SURPLUS else on_trial_end(s, t))

    def guarded(trial: optuna.Trial) -> float:
        if not slot_is_free(study, trial.number, n_trials):
            trial.set_user_attr("fail_reason", SURPLUS)
            raise _Surplus(SURPLUS)
        return objective(trial)

    waiting = False
    while True:
        interrupt.check()
        trials = study.get_trials(deepcopy=False)
        finished = sum(1 for t in trials if t.state in FINISHED)
        if finished >= n_trials or (should_stop is not None and should_stop(study)):
            break
        queued = sum(1 for t in trials if t.state == TrialState.WAITING)
        live = sum(1 for t in trials if t.state in LIVE)
        if live >= n_trials and not queued:
            if not waiting and on_wait is not None:
                on_wait(sum(1 for t in trials if t.state == TrialState.RUNNING))
            waiting = True
            reaped = reap_stale_trials(study)
            if reaped and on_reap is not None:
                on_reap(reaped)
            if not reaped:
                _sleep(poll_seconds)
            continue
        waiting = False
        mine.clear()
        try:
            study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
        except (ValueError, AssertionError) as exc:
            if not _reaped_under_us(exc):
                raise
            # This worker's heartbeats were late by more than the grace period (a stalled machine),
            # so another worker failed its trial and queued it again: that retry counts, not this.
            _logger.warning("a trial of this worker was failed by a heartbeat check while it ran (heartbeats "
                            "late by more than the grace period); its retry runs in another worker")
            continue
        last = mine.get("frozen")  # this worker's trial as Optuna closed it (None: it failed before the objective)
        if last is not None and last.user_attrs.get("fail_reason") == SURPLUS:
            continue
        ran += 1
        diverged = last is not None and str(last.user_attrs.get("fail_reason", "")).startswith("nan_loss")
        if diverged:
            # The parameters diverged (a fact about them, not a broken set-up): the search goes on,
            # unless divergence is all it finds.
            diverged_in_a_row += 1
            if diverged_in_a_row >= MAX_CONSECUTIVE_DIVERGED:
                raise StudyError(
                    f"{diverged_in_a_row} trials in a row diverged (training loss NaN or infinite; last: trial "
                    f"{last.number}); narrow learning_rate to lower values or add clipnorm in the search space"
                )
        elif last is None or last.state == TrialState.FAIL:
            diverged_in_a_row = 0
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                reason = last.user_attrs.get("fail_reason", "see the log") if last else "see the log"
                raise StudyError(
                    f"{failures} trials in a row failed (last: {f'trial {last.number}: ' if last else ''}{reason}); "
                    "fix the cause and run the same command again to resume"
                )
        else:
            failures = diverged_in_a_row = 0
    return ran


def _reaped_under_us(exc: BaseException) -> bool:
    """Whether Optuna could not end the trial because another worker had failed it (Optuna 5.0
    raises "Cannot tell a FAIL trial", then an AssertionError from its own logging of it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ValueError) and str(seen).startswith("Cannot tell a FAIL trial"):
            return True
        seen = seen.__context__
    return False


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        interrupt.check()
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail trials whose worker stopped sending heartbeats; returns their numbers."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - after)


def budget_stop(deadline: Any) -> Callable[[optuna.Study], bool]:
    """``should_stop`` for :func:`run_trials` under a time budget (a :class:`sweep.budget.Deadline`):
    stop once the search time is over, or when a new trial could not reach its first
    successive-halving rung in the time left, at the epoch times the study's trials measured."""
    from sweep.budget import MIN_RESOURCE, can_start_trial

    def stop(study: optuna.Study) -> bool:
        per_epoch = []
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            result = TrialResult.from_attr(t.user_attrs.get(RESULT_ATTR))
            if result.epochs_run and result.train_seconds is not None:
                per_epoch.append(float(result.train_seconds) / int(result.epochs_run))
        return not can_start_trial(deadline, epoch_seconds=per_epoch, setup_seconds=0.0, first_rung=MIN_RESOURCE)

    return stop
