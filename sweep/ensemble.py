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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import first_line
from sweep.redact import redact

_logger = logging.getLogger(__name__)

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
    """Log ``members`` (trial ``trial``'s fold models) as one pyfunc in a run of its own under the
    sweep's run, register it and point ``champion`` at it; link it in the study as the trial's model
    (what `sweep predict`, `sweep serve` and the integrity check load). ``scores``: the ensemble's
    out-of-fold validation and (reported only) test balanced accuracy.

    Returns the record stored on the study as ``shipped`` (None when MLflow refused: the trial's own
    model then stays the champion, and a warning says why)."""
    from mlflow.entities import Metric, Param, RunTag

    from sweep.trial_run import TAG_ROLE, TAG_STUDY, TAG_TRIAL, log_pyfunc

    tracker, number = opened.tracker, trial.number
    client = tracker.client
    folds = len(members)
    try:
        run = client.create_run(
            tracker.experiment_id, run_name=f"champion · trial-{number:03d} · {folds}-fold ensemble",
            tags={TAG_STUDY: tracker.study_name, TAG_ROLE: ROLE, TAG_TRIAL: str(number),
                  **({"mlflow.parentRunId": opened.parent_run_id} if opened.parent_run_id else {})})
        run_id = run.info.run_id
        metrics = [Metric("fold_val_balanced_accuracy", m.val_balanced_accuracy, 0, m.fold) for m in members]
        metrics += [Metric("fold_epochs", float(m.epochs), 0, m.fold) for m in members]
        metrics += [Metric(f"result/{k}", float(v), 0, 0) for k, v in scores.items() if v is not None]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial.params.items()],
                         tags=[RunTag("sweep.ensemble_of", f"trial {number}'s configuration, {folds} fold models")])
        info = log_pyfunc(tracker, run_id, [m.path for m in sorted(members, key=lambda m: m.fold)],
                          trial_number=number, metadata={"ensemble": f"{folds} fold models, mean probability"})
        oof = scores.get("oof_val_balanced_accuracy")
        version = tracker.registry.ship(
            info.model_uri, model_id=info.model_id, run_id=run_id, trial_number=number,
            note=f"{folds}-fold ensemble of the re-training",
            description=(f"Trial {number}'s configuration as the mean of its {folds} fold models from the re-training"
                         + (f" (out-of-fold val balanced accuracy {oof:.4f})" if oof is not None else "")))
        links = {"model_uri": info.model_uri, **tracker.registry.model_links(version, tracker.tracking_uri)}
        client.set_terminated(run_id, status="FINISHED")
    except Exception as exc:  # noqa: BLE001 - the trial's own model stays the champion
        _logger.warning("could not ship trial %d's %d fold models as one model (%s); its own model stays the "
                        "champion", number, folds, redact(first_line(exc), tracker.tracking_uri)[:200])
        return None
    tracker.record_model(number, links)
    return {"trial": number, "kind": "fold ensemble", "folds": folds, "mlflow_run_id": run_id, **links, **scores}
