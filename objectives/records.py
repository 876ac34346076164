"""What one trial produces, typed: made by the objective, stored once on the Optuna trial, and read
back into the same type (:meth:`TrialResult.from_attr`) by everything that reports on it.

Pure Python: no numpy, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping

RESULT_ATTR = "result"  # the Optuna user attribute that holds a trial's TrialResult (one write)
WORKER_ATTR = "worker"  # the Optuna user attribute naming the process that runs a trial


def worker_id() -> str:
    """This process as ``host:pid``: which worker ran a trial (where its logs are, what died)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class TrialResult:
    """A trial's end results: its kept epoch's validation (and test) scores, how it trained.

    Stored as the Optuna user attribute ``result`` (:meth:`to_attr`; one database write). A failed
    trial stores only ``epochs_run`` and the gradient summary; a study made by an older lstm-sweep
    may lack newer fields: every field but the flags may be None.
    """

    # validation: the kept epoch's scores (these select)
    val_score: float | None = None  # balanced accuracy - collapse penalty (the objective's value)
    val_loss: float | None = None  # cross-entropy of the kept epoch (breaks ties in val_score)
    val_balanced_accuracy: float | None = None
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    penalty: float | None = None  # the collapse penalty (objectives.metrics.collapse_penalty)
    collapsed: bool = False  # the kept model predicts one class for every validation sequence
    top_class_share: float | None = None
    val_histogram: list[int] | None = None
    val_confusion: list[list[int]] | None = None
    # how it trained
    best_epoch: int | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None
    collapse_epochs: int | None = None  # epochs after the warm-up with a positive collapse penalty
    gradient_trouble: str | None = None  # "exploding", "vanishing" or None (objectives.detectors)
    grad_norm_first_final: float | None = None
    grad_norm_first_min: float | None = None
    grad_norm_max: float | None = None
    # test: reported, never used for selection
    test_balanced_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_collapsed: bool | None = None
    test_confusion: list[list[int]] | None = None
    # --adjust-decision: per-class offsets fitted on validation (optimistic there, honest on test)
    decision_offsets: list[float] | None = None
    val_balanced_accuracy_adjusted: float | None = None
    test_balanced_accuracy_adjusted: float | None = None
    prune_reason: str | None = None  # why the pruner stopped it ("collapse: ...", "median: ...")
    stopped: str | None = None  # "deadline": the time budget's search ended during the trial (still COMPLETE)

    def to_attr(self) -> dict[str, Any]:
        """The JSON record stored on the trial (fields that are None are left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_attr(cls, stored: Mapping[str, Any] | None) -> TrialResult:
        """The inverse of :meth:`to_attr`; unknown keys (a newer lstm-sweep's) are ignored."""
        if not stored:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        values["collapsed"] = bool(values.get("collapsed", False))
        return cls(**values)


@dataclass(frozen=True)
class RefitRun:
    """The chosen configuration trained once more on the whole training part, nothing held out
    (:meth:`Objective.refit`): scored on what it trained on (a collapse check, not a selection
    score) and on the test part (reported only). The same training on one fold's training part
    (``--ship auto``'s length check) is also scored on the fold it held out."""

    seed: int
    epochs: int  # trained
    planned_epochs: int  # the cosine schedule's length; fewer trained when the time budget ended it
    train_balanced_accuracy: float
    near_collapse: bool  # predicted (nearly) one class on its own training sequences
    test_balanced_accuracy: float | None
    seconds: float
    val_balanced_accuracy: float | None = None  # on a held-out part, when it had one (--ship auto's length check)

    @property
    def stopped_for_deadline(self) -> bool:
        return self.epochs < self.planned_epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RetrainRun:
    """One more training of a configuration with another seed (:meth:`Objective.train_once`)."""

    seed: int
    epochs: int
    stopped_for_collapse: bool
    stopped_for_deadline: bool
    val_score: float
    val_balanced_accuracy: float
    near_collapse: bool  # ended with a collapse penalty: predicted (nearly) one class
    test_balanced_accuracy: float | None
    split_seed: int | None = None  # its own train/validation split's seed (None: the search's split, older studies)
    fold: int | None = None  # the fold it validated on, of the training part's k folds (None: a resampled split)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> RetrainRun:
        values = dict(stored)
        if "near_collapse" not in values:  # stored by an older lstm-sweep under the name "collapsed"
            values["near_collapse"] = values.get("collapsed", False)
        values.setdefault("stopped_for_deadline", False)
        known: dict[str, Any] = {f.name: values.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**known)
