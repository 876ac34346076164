"""How a study's trials ended and where they collapsed: the study summary (pure Python).

Read from the typed trial records (:mod:`sweep.records`); stored on the study (user attribute
``summary``) and on its MLflow parent run (``collapse_summary.json``) when a sweep ends, and the
base of `sweep diagnose --study` (:mod:`sweep.explain`).

A trial counts as collapsed here when it predicted (nearly) one class:
:attr:`sweep.records.TrialRecord.near_collapse`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from objectives.search_space import GROUPINGS
from objectives.search_space import architecture_name as architecture_name
from objectives.search_space import lr_decade as lr_decade
from objectives.search_space import units_bucket as units_bucket
from sweep.records import TrialRecord, finished

OUTCOMES = ("complete", "pruned_collapse", "pruned_median", "pruned_hyperband", "pruned_other",
            "failed_nan_loss", "failed_no_heartbeat", "failed_interrupted", "failed_error")


# -- one trial ------------------------------------------------------------------------------------
def outcome(record: TrialRecord) -> str | None:
    """How a trial ended, by reason (one of :data:`OUTCOMES`); None for running or surplus trials."""
    state, reason = record.state, str(record.reason or "")
    if record.surplus or state not in ("COMPLETE", "PRUNED", "FAIL"):
        return None
    if state == "COMPLETE":
        return "complete"
    if state == "PRUNED":
        return next((f"pruned_{k}" for k in ("collapse", "median", "hyperband") if reason.startswith(k)),
                    "pruned_other")
    if reason.startswith("nan_loss"):
        return "failed_nan_loss"
    if reason.startswith("no heartbeat"):
        return "failed_no_heartbeat"
    return "failed_interrupted" if reason == "interrupted" else "failed_error"


# -- the study summary ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    trials: int
    collapsed: int

    @property
    def rate(self) -> float | None:
        return self.collapsed / self.trials if self.trials else None

    def __str__(self) -> str:
        return f"{self.collapsed} of {self.trials} ({self.rate:.0%})" if self.trials else "no trials"


def collapse_rate(records: Iterable[TrialRecord]) -> Rate:
    """How many of ``records`` predicted (nearly) one class (:attr:`TrialRecord.near_collapse`)."""
    records = list(records)
    return Rate(len(records), sum(1 for r in records if r.near_collapse))


@dataclass(frozen=True)
class CollapseSummary:
    """Collapse rate overall and by parameter group, and trial counts by how they ended."""

    trials_finished: int
    trials_collapsed: int  # finished trials that predicted (nearly) one class
    collapse_rate: float | None
    outcomes: dict[str, int]  # OUTCOMES -> trials
    gradient_trouble: dict[str, int]  # exploding / vanishing -> trials
    # grouping (search_space.GROUPINGS) -> group -> {"trials", "collapsed", "rate"}, groups in order
    by_parameter: dict[str, dict[str, dict[str, Any]]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> CollapseSummary:
        return cls(**stored)


def collapse_summary(records: list[TrialRecord]) -> CollapseSummary:
    """The study summary of ``records`` (every trial of a study)."""
    done = finished(records)
    overall = collapse_rate(done)
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in records:
        kind = outcome(r)
        if kind is not None:
            counts[kind] += 1
    by_parameter: dict[str, dict[str, dict[str, Any]]] = {}
    for grouping in GROUPINGS:
        groups: dict[str, list[TrialRecord]] = {}
        for r in done:
            value = grouping.key(r.params)
            if value is not None:
                groups.setdefault(value, []).append(r)
        by_parameter[grouping.name] = {
            value: {"trials": g.trials, "collapsed": g.collapsed, "rate": g.rate}
            for value, g in sorted(((v, collapse_rate(rs)) for v, rs in groups.items()),
                                   key=lambda item, order=grouping.order: order(item[0]))}  # type: ignore[misc]
    return CollapseSummary(
        trials_finished=overall.trials, trials_collapsed=overall.collapsed, collapse_rate=overall.rate,
        outcomes=counts,
        gradient_trouble={kind: sum(1 for r in records if r.result.gradient_trouble == kind)
                          for kind in ("exploding", "vanishing")},
        by_parameter=by_parameter,
    )
