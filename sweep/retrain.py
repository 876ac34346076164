"""The top-k re-training at a sweep's end (k-fold over the training part), and the choice of the
configuration that ships (:mod:`sweep.selection`'s margin rule over the re-training's folds)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from objectives.records import RetrainRun
from sweep import ranking
from sweep.config import REFIT_SHIPS
from sweep.data import split_folds, split_stratified
from sweep.ensemble import FoldModel, enough_members, ship_fold_ensemble
from sweep.jobs import run_jobs
from sweep.prepared import OpenSweep, make_objective
from sweep.records import RetrainEntry, model_links, record_of, stored_retraining
from sweep.selection import MIN_SEEDS

_logger = logging.getLogger(__name__)

def split_seed(seed: int, run: int) -> int:
    """The seed of re-training run ``run``'s train/validation split (never the search's ``seed``);
    run 0's also shuffles the k folds."""
    return seed + 7919 * (run + 1)


def _architecture(opened: OpenSweep) -> Callable[[Any], Any]:
    """A trial's kind of model for the top-k's place for another architecture; None for a trial that
    could not ship (``--log-models best`` logged no model for it: never among the best when it ended)."""
    cfg, attrs = opened.prep.cfg, opened.study.user_attrs

    def family(trial: Any) -> Any:
        if cfg.log_models == "best" and model_links(trial, attrs)["model_uri"] is None:
            return None
        return trial.params.get("architecture")

    return family


def retrain_top(
    opened: OpenSweep, *, on_retrain: Callable[[RetrainEntry | None], None] | None = None,
) -> list[RetrainEntry]:
    """Train the study's top-k complete configurations again (the user's own process only, once the
    study holds its N trials); stored on the study as ``retrained``.

    With S seeds the training part is cut into S stratified folds (:func:`sweep.data.split_folds`)
    and run ``i`` of every configuration trains on the other folds and validates on fold ``i``
    (another seed each time; the test part is never touched). On a small set the search's
    validation split is a few dozen sequences, and a configuration that won on those by luck would
    win again on them with any seed: ECG200's stacked recipe scored 0.93 on its 20 validation
    sequences against LSTM-FCN's 0.89, 0.82 against 0.89-0.93 over 3 folds of all 100 training
    sequences, and 0.68 against 0.83-0.87 on the test part. All configurations share the folds, so
    the margin rule (:mod:`sweep.selection`) compares them fold by fold. Where a class has fewer
    than S sequences, run ``i`` validates on its own resampled split instead (:func:`split_seed`).

    The k configurations are the k best, except that when all of them are of the winner's
    architecture the last place goes to the best trial of another one that has a model to ship:
    near-copies of the winner (TPE exploits around it) cannot show that the search's split favoured
    its kind of model.

    Each entry: the trial, its search score, and per run the validation and test balanced accuracy
    (``runs``), with their mean and standard deviation. Done once per set of top trials and seeds:
    resuming a finished study does not train them again. ``on_retrain`` hears None when the
    re-training starts, then each entry as it is done.
    """
    cfg, study = opened.prep.cfg, opened.study
    if not opened.lead or cfg.retrain_top <= 0 or not opened.search_done():
        return []
    top = ranking.top_trials(study, cfg.retrain_top, family=_architecture(opened))
    if not top:
        return []
    folds = split_folds(opened.prep.data, k=cfg.retrain_seeds, seed=split_seed(cfg.seed, 0))
    key = {"trials": [t.number for t in top], "seeds": cfg.retrain_seeds,
           "validation": "k-fold" if folds is not None else "resampled"}
    stored = study.user_attrs.get("retrained")
    if stored and stored.get("key") == key:
        entries = stored_retraining(study) or []
        _select(opened, entries)
        return entries

    splits = run_splits(opened, folds)  # the runs' folds (or resampled splits), shared with --ship auto's check
    if on_retrain is not None:
        on_retrain(None)  # starting
    for attr in ("shipped", "length_check"):  # an earlier re-training's refit or ensemble; this one chooses again
        if study.user_attrs.get(attr):
            study.set_user_attr(attr, None)
    with tempfile.TemporaryDirectory(prefix="sweep-folds-") as keep:
        folder = Path(keep) if folds is not None and cfg.ship == "ensemble" else None
        results, fold_models = _retrain(opened, top, splits, folder, folded=folds is not None)
        study.set_user_attr("retrained", {"key": key, "results": [e.to_dict() for e in results]})
        _select(opened, results)
        if folder is not None:
            _ship(opened, fold_models, folds=cfg.retrain_seeds)
    if cfg.ship in REFIT_SHIPS:
        from sweep.refit import refit_champion

        # --ship auto: the refit ships unless, on the same folds, training that long falls behind the trial's
        # own length by more than the noise.
        refit_champion(opened, check=splits if cfg.ship == "auto" else None)
    if on_retrain is not None:
        for entry in results:
            on_retrain(entry)
    return results


@dataclass(frozen=True)
class _Job:
    """One re-training run: configuration ``trial`` on fold (or resampled split) ``index``."""

    trial: int
    index: int
    params: dict[str, Any]
    seed: int
    split_seed: int
    expected: float  # seconds, the search trial's training time (what must be left to start it)
    min_epochs: int  # a run the budget cut short is kept only after this many epochs (the search model's)


@dataclass(frozen=True)
class _Member:
    """A kept fold model, with its probabilities on its own fold and on the test part (for the
    ensemble's out-of-fold and test scores)."""

    model: FoldModel
    y_val: Any
    val_proba: Any
    test_proba: Any


def run_splits(opened: OpenSweep, folds: list[Any] | None) -> dict[int, tuple[int, Any]]:
    """Run ``i``'s split seed and split for every run index: fold ``i`` of the training part's k folds,
    or, where a class has too few sequences for k folds (``folds`` None), a resampled split of its own."""
    cfg, prep = opened.prep.cfg, opened.prep
    splits = {}
    for i in range(cfg.retrain_seeds):
        seed = split_seed(cfg.seed, 0 if folds is not None else i)
        splits[i] = (seed, folds[i] if folds is not None else split_stratified(
            prep.data, val_fraction=cfg.train.val_fraction, seed=seed))
    return splits


def _retrain(opened: OpenSweep, top: list[Any], splits: dict[int, tuple[int, Any]], folder: Path | None, *,
             folded: bool) -> tuple[list[RetrainEntry], dict[int, list[_Member]]]:
    """Train every top configuration on every fold (or resampled split), as time allows; with a
    ``folder``, keep each fold model that can join an ensemble (:func:`_keepable`).

    Without a time budget the order does not matter. With one, configuration by configuration from
    the search's winner down: the margin rule compares the winner with challengers that have two or
    more runs each, so when time runs short the top ones are complete and the last ones are skipped.
    With ``--workers`` W > 1 the runs train W at a time (:func:`sweep.jobs.run_jobs`)."""
    cfg, prep, deadline = opened.prep.cfg, opened.prep, opened.deadline
    jobs = []
    for trial in top:
        record = record_of(trial).result
        for i, (resplit, _) in splits.items():
            jobs.append(_Job(trial=trial.number, index=i, params=dict(trial.params),
                             seed=cfg.seed + 10_000 * (i + 1) + trial.number, split_seed=resplit,
                             expected=float(record.train_seconds or 0.0), min_epochs=int(record.epochs_run or 0)))
    # With --ship refit or auto the runs leave the refit its share of the reserve, or what it needs if more.
    stop_at = None
    if deadline is not None:
        from sweep.budget import runs_end_at
        from sweep.refit import seconds_needed

        checked = cfg.ship == "auto"
        need = seconds_needed(prep, top, check=checked) if cfg.ship in REFIT_SHIPS else 0.0
        stop_at = runs_end_at(deadline, refit_need=need, checked=checked)

    # The margin rule compares a challenger with the search's winner fold by fold: where the budget leaves
    # the winner fewer than 2 runs, a challenger's runs (often shorter: they fit where the winner's did not)
    # choose nothing, and their time goes to the refit instead.
    winner, needed = top[0].number, min(MIN_SEEDS, len(splits))
    started: dict[int, int] = {}

    def fits(job: _Job) -> bool:
        if stop_at is not None and stop_at - time.time() < max(1.0, job.expected):
            return False
        if job.trial != winner and started.get(winner, 0) < needed:
            return False
        started[job.trial] = started.get(job.trial, 0) + 1
        return True

    train = functools.partial(_train_job, prep, {i: split for i, (_, split) in splits.items()}, stop_at=stop_at,
                              folder=folder, folded=folded)
    done, skipped = run_jobs(cfg, jobs, train, fits=fits)
    if skipped:
        _logger.warning("time budget: %d of %d re-training runs did not fit and were skipped", skipped, len(jobs))
    runs: dict[int, list[RetrainRun]] = {t.number: [] for t in top}
    fold_models: dict[int, list[_Member]] = {t.number: [] for t in top}
    for job, run, member in sorted(done, key=lambda d: (d[0].trial, d[0].index)):
        runs[job.trial].append(run)
        if member is not None:
            fold_models[job.trial].append(member)
    results = [RetrainEntry(rank=rank, trial=trial.number, params=dict(trial.params), search_value=trial.value,
                            search_val_balanced_accuracy=record_of(trial).val_balanced_accuracy, runs=runs[trial.number])
               for rank, trial in enumerate(top, start=1)]
    return results, fold_models


def _train_job(prep: Any, splits: dict[int, Any], job: _Job, *, stop_at: float | None, folder: Path | None,
               folded: bool) -> tuple[_Job, RetrainRun, _Member | None]:
    """Train one re-training run (here or in a re-training process) on its split (``splits[job.index]``);
    with a ``folder``, save its model there when it can join an ensemble."""
    from objectives import model as lstm
    from objectives.search_space import LstmParams

    split = splits[job.index]
    run, model = make_objective(prep, split=split).train_once(LstmParams(**job.params), seed=job.seed, stop_at=stop_at)
    run = dataclasses.replace(run, split_seed=job.split_seed, fold=job.index if folded else None)
    member = None
    if folder is not None and _keepable(run, min_epochs=job.min_epochs):
        path = folder / f"trial-{job.trial}-fold-{job.index}.keras"
        model.save(path)
        test = lstm.predict_proba(model, split.X_test) if split.X_test is not None else None
        member = _Member(FoldModel(fold=job.index, path=path, val_balanced_accuracy=run.val_balanced_accuracy,
                                   epochs=run.epochs),
                         y_val=split.y_val, val_proba=lstm.predict_proba(model, split.X_val), test_proba=test)
    return job, run, member


def _keepable(run: RetrainRun, *, min_epochs: int) -> bool:
    """A fold model that may join the shipped ensemble: it did not (nearly) collapse, and it trained
    to its end, or, where the budget cut it short, for at least as many epochs as the search's model
    it would replace (a long series' fold runs rarely all reach their patience in a budget's reserve)."""
    if run.near_collapse or run.stopped_for_collapse:
        return False
    return not run.stopped_for_deadline or run.epochs >= max(1, min_epochs)


def _ship(opened: OpenSweep, fold_models: dict[int, list[_Member]], *, folds: int) -> None:
    """Ship the chosen configuration's fold models as one model (:mod:`sweep.ensemble`) when two or
    more of them can (:func:`_keepable`); stored on the study as ``shipped``."""
    import numpy as np

    from objectives.metrics import evaluate_averaged, evaluate_predictions

    chosen, _ = ranking.champion_trial(opened.study)
    members = fold_models.get(chosen.number, []) if chosen is not None else []
    if chosen is None or record_of(chosen).collapsed:
        return
    if not enough_members([m.model for m in members]):
        _logger.info("trial %d ships its own model: %d of its %d fold runs can join an ensemble", chosen.number,
                     len(members), folds)
        return
    n_classes = opened.prep.data.n_classes
    y = np.concatenate([m.y_val for m in members])
    oof = np.concatenate([m.val_proba for m in members]).argmax(axis=1)
    scores: dict[str, float | None] = {"oof_val_balanced_accuracy": evaluate_predictions(y, oof, n_classes).balanced_accuracy,
                                       "test_balanced_accuracy": None}
    if all(m.test_proba is not None for m in members) and opened.prep.split.y_test is not None:
        scores["test_balanced_accuracy"] = evaluate_averaged(opened.prep.split.y_test, [m.test_proba for m in members],
                                                             n_classes).balanced_accuracy
    shipped = ship_fold_ensemble(opened, chosen, [m.model for m in members], scores=scores)
    if shipped is not None:
        opened.study.set_user_attr("shipped", shipped)
        _logger.info("trial %d ships as the mean of its %d fold models (out-of-fold val balanced accuracy %.4f)",
                     chosen.number, folds, scores["oof_val_balanced_accuracy"])


def _select(opened: OpenSweep, results: list[RetrainEntry]) -> None:
    """Choose the configuration that ships (sweep.selection's margin rule) and store it on the study
    as ``champion``; :func:`sweep.records.best_of` (the summary, `sweep best`, the registry alias)
    then reports that trial."""
    from sweep.selection import choose_champion, validation_step

    winner = ranking.best_trial(opened.study)
    if winner is None:
        return
    # One validation sequence's step: over k folds every training sequence is validated on once (the
    # mean of the folds' scores moves by about one step of the whole training part); a resampled run
    # validates on as many sequences as the search's split.
    folded = any(r.fold is not None for e in results for r in e.runs)
    y_val = opened.prep.data.y_train if folded else opened.prep.split.y_val
    counts = [int((y_val == c).sum()) for c in range(opened.prep.data.n_classes)]
    choice = choose_champion([e.to_dict() for e in results], search_winner=winner.number,
                             step=validation_step(counts))
    opened.study.set_user_attr("champion", choice.to_dict())
    _logger.info("%s", choice.reason)
