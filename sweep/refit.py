"""``--ship refit``: the configuration the re-training chose (:mod:`sweep.selection`)
trained once more on the whole training part, nothing held out, its learning rate decaying to 0 on
a cosine over as many epochs as the time left allows (up to the epoch cap), and shipped in place of
the trial's own model, which trained on the search's 4/5 of the training part and stopped at its
patience with the learning rate still high.

Why: a search trial stops at its patience on a validation split of a few dozen sequences, where a
conv net's score still swings from epoch to epoch (Strawberry's LSTM-FCN: 0.53 to 0.96 test balanced
accuracy between epochs 25 and 100 of one run); the refit ends on settled weights and has a quarter
more data. Offline, the LSTM-FCN recipe trained this way on the whole training part scored 0.955-0.976
on Strawberry (the search's models: 0.90-0.94), 0.864-0.872 on ECG200 and 0.774 on MedicalImages
(benchmarks and BENCHMARKS.md for the sweep's own numbers).

Nothing is chosen on the test part, and nothing on the refit at all: the configuration was chosen
before it trained. The refit ships unless it predicts (nearly) one class on its own training
sequences, it fails, or fewer epochs fit than the trial's own model kept; the trial's model ships then.

``--ship auto`` tests the refit's length first: the configuration trains the refit's way on each
fold's training part of the re-training's folds (:func:`check_length`), once for the refit's length
and once for as many epochs as the trial's own model kept, both scored on the held-out fold; the
refit ships unless the long runs score lower by more than the difference's noise
(:func:`sweep.selection.check_length`); the trial's own model ships then. The same long training
that gains 0.02-0.04 on ECG200 and Strawberry loses 0.06 on the noisy demo set. Where the check does not
fit in the time left (a slow set in a short budget), on 2 of the folds either, or the clock stops it
before 2 folds compared, the refit trains ``UNTESTED_LENGTH`` times as long as the trial's own model
kept, untested: no refit that short lost.

The refit trains ``refit_seeds`` seeds (the first always, the others where the time left holds them,
``--workers`` at a time) and ships those that can as one model, their probabilities averaged.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import ranking
from sweep.budget import REFIT_SETUP_SECONDS, check_cost, refit_epochs
from sweep.data import whole_training
from sweep.errors import first_line
from sweep.jobs import run_jobs
from sweep.prepared import OpenSweep, make_objective
from sweep.records import record_of
from sweep.selection import MIN_SEEDS, LengthCheck
from sweep.selection import check_length as verdict
from sweep.selection import validation_step
from sweep.shipping import ship_models

_logger = logging.getLogger(__name__)

ROLE = "refit"  # the refit's run, beside the study's "parent", each "trial" and an "ensemble"
SEED_OFFSET = 50_000  # refit seed i: the sweep's seed + this + 1000 x i + the trial number (no search or fold run's)
CHECK_SEED_OFFSET = 60_000  # a length-check run's: the sweep's seed + this + 1000 x its fold + the trial number
# --ship auto where no length check fits: the refit trains this many times as long as the trial's own
# model kept, untested. Offline that length did not lose where a long one did: on the noisy demo set 1.25
# x its best 8 epochs scored 0.877-0.886 (3 seeds; its own model 0.881) where 100 epochs scored 0.796-0.823;
# on Strawberry three refits of 29-37 epochs (what fitted) scored 0.958-0.962, their trials' own models
# 0.940-0.956.
UNTESTED_LENGTH = 1.25


def _plan(prep: Any, trial: Any) -> tuple[float | None, int]:
    """Trial ``trial``'s configuration refit on the whole training part: its seconds per epoch (the
    trial's own, scaled to the larger training part; None if unmeasured) and the fewest epochs worth
    it (as many as the trial's own model kept)."""
    result = record_of(trial).result
    n_all, n_search = len(prep.data.y_train), len(prep.split.y_train)
    per_epoch = None
    if result.train_seconds and result.epochs_run:
        per_epoch = result.train_seconds / result.epochs_run * n_all / max(n_search, 1)
    return per_epoch, int(result.best_epoch or result.epochs_run or 1)


def _check_factor(prep: Any, splits: dict[int, tuple[int, Any]] | None) -> float:
    """The length check's cost in refit epochs per epoch of length (:func:`sweep.budget.check_cost`):
    ``splits`` (the re-training's, by run index) or, before they exist, k folds of the training part."""
    n_all = len(prep.data.y_train)
    if splits:
        folds, largest = len(splits), max(len(split.y_train) for _, split in splits.values())
    else:
        folds = prep.cfg.retrain_seeds
        largest = n_all * (folds - 1) // folds if folds > 1 else n_all  # one run: its own resampled split
    return check_cost(folds, workers=prep.cfg.workers, fraction=largest / max(n_all, 1))


def _length(prep: Any, *, per_epoch: float | None, at_least: int, left: float | None,
            check: dict[int, tuple[int, Any]] | None) -> tuple[int | None, dict[int, tuple[int, Any]] | None]:
    """The refit's length (:func:`sweep.budget.refit_epochs`; None: none long enough fits in ``left``
    seconds) and the folds its length check trains on (None: no check): all of ``check``'s, or, where
    after them no refit of ``at_least`` epochs fits, the first 2 or more with which one does (fewer
    folds, fewer runs: Strawberry's LSTM-FCN at 1.55 s an epoch)."""
    options: list[dict[int, tuple[int, Any]] | None] = [None]
    if check is not None:
        items = sorted(check.items())
        options = [dict(items[:n]) for n in range(len(items), min(len(items), MIN_SEEDS) - 1, -1)]
    for folds in options:
        factor = _check_factor(prep, folds) if folds is not None else 0.0
        room = left
        if room is not None and per_epoch is not None:
            room -= factor * at_least * per_epoch  # the check's short runs
        epochs = refit_epochs(prep.cfg.train.epochs, seconds_per_epoch=per_epoch, seconds_left=room,
                              at_least=at_least, check=factor)
        if epochs is not None:
            return epochs, folds
    return None, None


def _untested(opened: OpenSweep, chosen: Any, *, per_epoch: float | None, at_least: int, left: float | None,
              why: str, most: int | None = None, runs: list[dict[str, Any]] | None = None) -> int | None:
    """``--ship auto`` where the length check does not fit or finish (``why``; a slow set in a short
    budget): the refit's length untested, as long as the trial's own model kept times
    ``UNTESTED_LENGTH``, or what fits in ``left`` (and at most ``most``) if no shorter than its own.
    None: not even that fits. Stored on the study as ``length_check``, with the check's ``runs``."""
    cfg = opened.prep.cfg
    fit = refit_epochs(cfg.train.epochs, seconds_per_epoch=per_epoch, seconds_left=left, at_least=at_least)
    if fit is None:
        return None
    epochs = min(fit, most or fit, max(at_least, math.ceil(UNTESTED_LENGTH * at_least)))
    def n_epochs(n: int) -> str:
        return f"{n} epoch" if n == 1 else f"{n} epochs"

    reason = (f"trial {chosen.number} ships refit on the whole training part for {n_epochs(epochs)}, untested: "
              f"{why}, so it trains about as long as its own model's {n_epochs(at_least)}")
    result = LengthCheck(trial=chosen.number, epochs=epochs, short_epochs=at_least, lead=None, margin=None, folds=0,
                         refit=True, reason=reason)
    opened.study.set_user_attr("length_check", {**result.to_dict(), "runs": runs or []})
    _logger.info("%s", reason)
    return epochs


def seconds_needed(prep: Any, trials: list[Any], *, check: bool = False) -> float:
    """Time to keep for the refit of whichever of ``trials`` (the re-trained top k) ships: its setup
    and 1.5x the fewest epochs worth it, for the slowest of them; with ``check`` (``--ship auto``) its
    length check's runs as well (each fold trained that long and as long as the trial's model)."""
    factor = _check_factor(prep, None) if check else 0.0
    need = 0.0
    for trial in trials:
        per_epoch, at_least = _plan(prep, trial)
        if per_epoch is not None:
            need = max(need, REFIT_SETUP_SECONDS * (2 if check else 1) + 1.5 * at_least * per_epoch * (1 + 2 * factor))
    return need


@dataclass(frozen=True)
class _Job:
    """One training of the chosen configuration for ``epochs`` epochs: a length-check run on fold (or
    split) ``index``, or refit seed ``index`` on the whole training part."""

    index: int
    params: dict[str, Any]
    seed: int
    epochs: int
    expected: float  # seconds
    at_least: int = 0  # a refit the budget cut short ships only after this many epochs (the trial's own model's)


def _train_check(prep: Any, splits: dict[int, Any], job: _Job, *, stop_at: float | None) -> tuple[_Job, Any]:
    """Train one length-check run (here or in a process of its own) and score it on its held-out fold."""
    from objectives.search_space import LstmParams

    run, _ = make_objective(prep, split=splits[job.index]).refit(LstmParams(**job.params), seed=job.seed,
                                                                 epochs=job.epochs, stop_at=stop_at)
    return job, run


def check_length(opened: OpenSweep, chosen: Any, *, epochs: int, splits: dict[int, tuple[int, Any]],
                 stop_at: float | None) -> LengthCheck:
    """``--ship auto``: train ``chosen``'s configuration on each of the re-training's folds (``splits``)
    the refit's way for ``epochs`` epochs and for as many as its own model kept, score both on the
    held-out fold, and compare (:func:`sweep.selection.check_length`); stored on the study as
    ``length_check``, with the runs."""
    cfg, prep = opened.prep.cfg, opened.prep
    per_epoch, short = _plan(prep, chosen)
    n_all = len(prep.data.y_train)
    jobs = [_Job(index=i, params=dict(chosen.params), epochs=length,
                      seed=cfg.seed + CHECK_SEED_OFFSET + 1000 * i + chosen.number + (500 if length == short else 0),
                      expected=(per_epoch or 0.0) * length * len(split.y_train) / max(n_all, 1))
            for i, (_, split) in sorted(splits.items()) for length in (epochs, short) if epochs > short]

    # Fold by fold, both lengths of one fold before the next: where the clock stops the check, whole folds
    # are missing, not one length of every fold (Strawberry at e347d92: the 3 long runs and 1 short one
    # trained, 1 comparable fold, nothing learnt).
    def fits(job: _Job) -> bool:
        return stop_at is None or stop_at - time.time() >= max(1.0, job.expected)

    if jobs:
        _logger.info("testing the refit's length: trial %d's configuration for %d and for %d epochs on each of %d "
                     "folds", chosen.number, epochs, short, len(splits))
    train = functools.partial(_train_check, prep, {i: split for i, (_, split) in splits.items()}, stop_at=stop_at)
    done, _ = run_jobs(cfg, jobs, train, fits=fits)
    runs = [{"fold": job.index, "epochs": run.epochs, "planned_epochs": run.planned_epochs,
             "val_balanced_accuracy": run.val_balanced_accuracy, "stopped_for_deadline": run.stopped_for_deadline,
             "seed": run.seed, "test_balanced_accuracy": run.test_balanced_accuracy, "seconds": run.seconds}
            for job, run in sorted(done, key=lambda d: (-d[0].epochs, d[0].index))]
    # One sequence's step over the folds' held-out sequences together (all k folds: the whole training part).
    step = validation_step([sum(int((split.y_val == c).sum()) for _, split in splits.values())
                            for c in range(prep.data.n_classes)])
    result = verdict([r for r in runs if r["planned_epochs"] == short], [r for r in runs if r["planned_epochs"] == epochs],
                     trial=chosen.number, epochs=epochs, short_epochs=short, step=step)
    opened.study.set_user_attr("length_check", {**result.to_dict(), "runs": runs})
    _logger.info("%s", result.reason)
    return result


def refit_champion(opened: OpenSweep, *, check: dict[int, tuple[int, Any]] | None = None) -> dict[str, Any] | None:
    """Refit the configuration that ships on the whole training part and ship it (see the module);
    stored on the study as ``shipped``. Returns that record, or None when the trial's own model ships.

    ``check`` (``--ship auto``): the re-training's splits by run index; the refit's length is tested
    on them first (:func:`check_length`), unless it is no longer than the trial's own model's, or
    trained untested where no test fits or finishes (:func:`_untested`). Then ``cfg.refit_seeds``
    seeds as time allows (:func:`_train_refit`), averaged (:func:`_averaged`)."""
    cfg, prep, study, deadline = opened.prep.cfg, opened.prep, opened.study, opened.deadline
    chosen, _ = ranking.champion_trial(study)
    if chosen is None or record_of(chosen).collapsed:
        return None
    number, n_all = chosen.number, len(prep.data.y_train)
    per_epoch, at_least = _plan(prep, chosen)
    left = deadline.retrain_left() if deadline is not None else None
    epochs, folds = _length(prep, per_epoch=per_epoch, at_least=at_least, left=left, check=check)
    if epochs is None and check is not None:
        epochs = _untested(opened, chosen, per_epoch=per_epoch, at_least=at_least, left=left,
                           why=f"a longer refit and its test on the folds do not fit in the {left or 0.0:.0f} s left")
    if epochs is None:
        _logger.info("trial %d ships its own model: a refit of %d epochs or more does not fit in the %.0f s left",
                     number, at_least, left or 0.0)
        return None
    if folds is not None:
        if check is not None and len(folds) < len(check):
            _logger.info("the length check trains on %d of the %d folds: with all of them a refit longer than trial "
                         "%d's own model does not fit in the %.0f s left", len(folds), len(check), number, left or 0.0)
        # The check's runs leave the refit its estimated time.
        stop_at = (deadline.retrain_ends_at - REFIT_SETUP_SECONDS - epochs * (per_epoch or 0.0)
                   if deadline is not None else None)
        result = check_length(opened, chosen, epochs=epochs, splits=folds, stop_at=stop_at)
        if not result.refit and result.lead is None:
            # Fewer than 2 folds with runs of both lengths (the clock stopped the rest): no evidence either way.
            runs = (study.user_attrs.get("length_check") or {}).get("runs")
            epochs = _untested(opened, chosen, per_epoch=per_epoch, at_least=at_least, most=epochs, runs=runs,
                               left=deadline.retrain_left() if deadline is not None else None,
                               why="fewer than 2 folds finished runs of both lengths in its test on the folds")
            if epochs is None:
                return None
        elif not result.refit:
            return None
    seeds = cfg.refit_seeds
    expected = REFIT_SETUP_SECONDS + epochs * (per_epoch or 0.0)
    jobs = [_Job(index=i, params=dict(chosen.params), seed=cfg.seed + SEED_OFFSET + number + 1000 * i,
                      epochs=epochs, at_least=at_least, expected=expected) for i in range(seeds)]
    ends = deadline.retrain_ends_at if deadline is not None else None

    def fits(job: _Job) -> bool:  # the first was planned into the time left; more seeds where time allows
        return job.index == 0 or ends is None or ends - time.time() >= job.expected

    _logger.info("refitting trial %d's configuration on all %d training sequences for %d epochs (up to %d seeds)",
                 number, n_all, epochs, seeds)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweep-refit-") as keep:
        done, _ = run_jobs(cfg, jobs, functools.partial(_train_refit, prep, Path(keep), stop_at=ends), fits=fits)
        fitted = [f for _, f in sorted(done, key=lambda d: d[0].index)]
        kept = [f for f in fitted if f.path is not None]
        if not kept:
            _logger.warning("trial %d ships its own model: %s", number, fitted[0].why if fitted else "no refit ran")
            return None
        scores = _averaged(prep, kept)
        if scores is None:
            _logger.warning("trial %d ships its own model: its %d refits, averaged, predicted (nearly) one class on "
                            "their own training sequences", number, len(kept))
            return None
        trained = min(f.run.epochs for f in kept if f.run is not None)
        seconds = round(time.perf_counter() - started, 1)
        averaged = f", {len(kept)} seeds averaged" if len(kept) > 1 else ""
        links = ship_models(
            opened, chosen, [f.path for f in kept if f.path is not None], role=ROLE,
            run_name=f"champion · trial-{number:03d} · refit on all training data",
            metrics=[(f"result/{k}", v, 0) for k, v in scores.items() if isinstance(v, float)]
            + [("refit_epochs", float(trained), 0), ("refit_seconds", seconds, 0), ("refit_seeds", float(len(kept)), 0)]
            + [("refit_seed_test_balanced_accuracy", f.run.test_balanced_accuracy, i) for i, f in enumerate(kept)
               if f.run is not None and f.run.test_balanced_accuracy is not None],
            tags={"sweep.refit_of": f"trial {number}'s configuration, {n_all} training sequences, {trained} epochs"
                                    f"{averaged}"},
            metadata={"refit": f"{n_all} training sequences, {trained} epochs{averaged}, nothing held out"},
            note="refit on the whole training part",
            description=(f"Trial {number}'s configuration trained on all {n_all} training sequences for {trained} "
                         "epochs (cosine decay, nothing held out) after the re-training chose it"
                         + (f"; {len(kept)} seeds, their probabilities averaged" if len(kept) > 1 else "")),
            what=f"trial {number}'s refit")
    if links is None:
        return None
    shipped = {"trial": number, "kind": "refit", "sequences": n_all, "epochs": trained, "planned_epochs": epochs,
               "seeds": len(kept), "seconds": seconds, **links, **scores}
    study.set_user_attr("shipped", shipped)
    _logger.info("trial %d ships as its refit (%d epochs%s, %.0f s)", number, trained, averaged, seconds)
    return shipped


@dataclass(frozen=True)
class _Fitted:
    """A refit seed's outcome: its saved model and probabilities, or (``path`` None) why it cannot ship."""

    run: Any  # objectives.records.RefitRun; None when it failed
    path: Path | None = None
    train_proba: Any = None
    test_proba: Any = None
    why: str = ""


def _train_refit(prep: Any, folder: Path, job: _Job, *, stop_at: float | None) -> tuple[_Job, _Fitted]:
    """Train one seed of the refit (here or in a process of its own); save it under ``folder`` with
    its probabilities on the training and test parts, unless it cannot ship: it failed, predicted
    (nearly) one class on its own training sequences, or the budget stopped it before ``at_least``."""
    from objectives import model as lstm
    from objectives.search_space import LstmParams

    split = whole_training(prep.data)
    try:
        run, model = make_objective(prep, split=split).refit(LstmParams(**job.params), seed=job.seed,
                                                             epochs=job.epochs, stop_at=stop_at)
    except lstm.NonFiniteLoss as exc:
        return job, _Fitted(run=None, why=f"its refit failed ({first_line(exc)})")
    if run.near_collapse or run.epochs < job.at_least:
        return job, _Fitted(run=run, why="it predicted (nearly) one class on its own training sequences"
                            if run.near_collapse else
                            f"the time budget stopped it after {run.epochs} of {run.planned_epochs} epochs")
    path = folder / f"refit-{job.index}.keras"
    model.save(path)
    test = lstm.predict_proba(model, split.X_test) if split.X_test is not None else None
    return job, _Fitted(run=run, path=path, train_proba=lstm.predict_proba(model, split.X_train), test_proba=test)


def _averaged(prep: Any, kept: list[_Fitted]) -> dict[str, Any] | None:
    """The shipped model's scores: the kept seeds' probabilities averaged (what the pyfunc predicts),
    on the training part and the test part (reported only), and each seed's test score. None if the
    average predicts (nearly) one class on the training part."""
    from objectives.metrics import evaluate_averaged

    n_classes = prep.data.n_classes
    own = evaluate_averaged(prep.data.y_train, [f.train_proba for f in kept], n_classes)
    if own.penalty > 0:
        return None
    test = None
    if prep.data.y_test is not None and all(f.test_proba is not None for f in kept):
        test = evaluate_averaged(prep.data.y_test, [f.test_proba for f in kept], n_classes).balanced_accuracy
    return {"train_balanced_accuracy": own.balanced_accuracy, "test_balanced_accuracy": test,
            "seed_test_balanced_accuracy": [f.run.test_balanced_accuracy for f in kept]}
