"""``--ship ensemble``: the chosen configuration's k models from the top-k re-training
(:mod:`sweep.retrain`), each trained on k-1 folds of the training part to its patience, logged as
one pyfunc that predicts the mean of their class probabilities, registered under the study's name
and given the ``champion`` alias.

Why one might: a budgeted search stops most trials early and trains each on one split. Offline on
Strawberry the search's 25-epoch model scored 0.904 test balanced accuracy, the configuration's 3
fold models 0.922-0.956, their average 0.946. Why it is not the default: in a quick 10-minute run
(BENCHMARKS.md) the shipped ensembles against their trials' own models were +0.008 (ECG200),
-0.002 (Strawberry) and -0.030 (MedicalImages): a fold model trains on 2/3 of the training part,
the search's on 4/5. The test split is never looked at to decide: the ensemble ships whenever two
or more of the chosen configuration's fold runs trained without collapsing, each to its end or,
where the budget cut it, for at least as many epochs as the search's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.shipping import ship_models

ROLE = "ensemble"  # the ensemble's run, beside the study's "parent" and each "trial" (sweep.trial_run.TAG_ROLE)


@dataclass(frozen=True)
class FoldModel:
    """One fold model of a re-trained configuration, saved as a ``.keras`` file."""

    fold: int
    path: Path
    val_balanced_accuracy: float
    epochs: int


MIN_MEMBERS = 2  # two models trained without different folds have seen the whole training part together


def enough_members(members: list[FoldModel]) -> bool:
    """At least :data:`MIN_MEMBERS` fold models, each of another fold."""
    folds = [m.fold for m in members]
    return len(folds) >= MIN_MEMBERS and len(set(folds)) == len(folds)


def ship_fold_ensemble(opened: Any, trial: Any, members: list[FoldModel], *,
                       scores: dict[str, float | None]) -> dict[str, Any] | None:
    """Ship ``members`` (trial ``trial``'s fold models) as one model (:func:`sweep.shipping.ship_models`).
    ``scores``: the ensemble's out-of-fold validation and (reported only) test balanced accuracy.

    Returns the record stored on the study as ``shipped`` (None when MLflow refused: the trial's own
    model then stays the champion, and a warning says why)."""
    number, folds = trial.number, len(members)
    oof = scores.get("oof_val_balanced_accuracy")
    metrics = [("fold_val_balanced_accuracy", m.val_balanced_accuracy, m.fold) for m in members]
    metrics += [("fold_epochs", float(m.epochs), m.fold) for m in members]
    metrics += [(f"result/{k}", float(v), 0) for k, v in scores.items() if v is not None]
    links = ship_models(
        opened, trial, [m.path for m in sorted(members, key=lambda m: m.fold)], role=ROLE,
        run_name=f"champion · trial-{number:03d} · {folds}-fold ensemble", metrics=metrics,
        tags={"sweep.ensemble_of": f"trial {number}'s configuration, {folds} fold models"},
        metadata={"ensemble": f"{folds} fold models, mean probability"},
        note=f"{folds}-fold ensemble of the re-training",
        description=(f"Trial {number}'s configuration as the mean of its {folds} fold models from the re-training"
                     + (f" (out-of-fold val balanced accuracy {oof:.4f})" if oof is not None else "")),
        what=f"trial {number}'s {folds} fold models as one model")
    if links is None:
        return None
    return {"trial": number, "kind": "fold ensemble", "folds": folds, **links, **scores}
