"""The top-k re-training at a sweep's end (k-fold over the training part), and the choice of the
configuration that ships (:mod:`sweep.selection`'s margin rule over the re-training's folds)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from objectives.records import RetrainRun
from sweep import ranking
from sweep.data import split_folds, split_stratified
from sweep.prepared import OpenSweep, make_objective
from sweep.records import RetrainEntry, model_links, record_of, stored_retraining

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

    from objectives import model as lstm
    from objectives.search_space import LstmParams

    if on_retrain is not None:
        on_retrain(None)  # starting
    lstm.configure_threads(cfg.threads)
    objectives: dict[int, Any] = {}  # run index -> the objective on that run's split (made when first needed)
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
            resplit = split_seed(cfg.seed, 0 if folds is not None else i)
            if i not in objectives:
                split = folds[i] if folds is not None else split_stratified(
                    opened.prep.data, val_fraction=cfg.train.val_fraction, seed=resplit)
                objectives[i] = make_objective(opened.prep, split=split)
            run = objectives[i].train_once(LstmParams(**trial.params), seed=cfg.seed + 10_000 * (i + 1) + trial.number,
                                           stop_at=deadline.retrain_ends_at if deadline else None)
            runs[trial.number].append(dataclasses.replace(run, split_seed=resplit,
                                                          fold=i if folds is not None else None))
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
