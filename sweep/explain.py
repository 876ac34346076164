"""Why did a study's models predict one class? The study summary and `sweep diagnose --study`.

Reads only the typed trial records (:mod:`sweep.records`), so it works on any finished or
half-finished study, from any machine that can reach its storage. Pure Python + numpy: no
TensorFlow, no MLflow. One function per rule (:data:`RULES`); the study summary is
:mod:`sweep.summary`, the noise band :mod:`sweep.noise`.

A trial *collapsed* when it was stopped for predicting (nearly) one class, or ended with a
collapse penalty (see :mod:`objectives.metrics`). The causes checked, each with its rule:

* **capacity**: collapse concentrated at small models (the lower half of the units tried, or one
  layer), or every trial small (units <= ``SMALL_UNITS``) and most collapsed;
* **imbalance**: collapse concentrated at ``class_weight=none``, or only ``none`` tried on
  imbalanced data and most collapsed;
* **learning rate**: collapse concentrated in the lowest or highest learning-rate decade tried;
* **gradients**: trials whose loss became NaN/inf or whose gradient norms exploded or vanished
  (:mod:`objectives.detectors`);
* **no signal**: the best validation balanced accuracy is inside the noise band: what the best of
  the validation scores a sweep looked at (one per epoch per trial) reaches by luck when
  predictions are independent of the labels (the winner's curse).

*Concentrated* means: at least ``MIN_GROUP`` trials in the group, a collapse rate of at least
``CONCENTRATED_RATE`` there, and at least ``RATE_GAP`` above the rate in the other trials.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from sweep.noise import noise_band
from sweep.records import BestTrial, TrialRecord, finished
from sweep.summary import CollapseSummary, Rate, collapse_rate, collapse_summary, lr_decade, outcome

MIN_GROUP = 2
CONCENTRATED_RATE = 0.5
RATE_GAP = 0.25
SMALL_UNITS = 16
IMBALANCED_RATIO = 1.5  # largest class / smallest class in the validation split


@dataclass(frozen=True)
class Finding:
    cause: str  # capacity, imbalance, learning_rate, gradients, no_signal, small_validation, validation_luck
    title: str
    evidence: list[str]
    next_step: str


@dataclass(frozen=True)
class BestAgainstChance:
    """The best trial's validation (and test) score beside chance and the noise band."""

    number: int
    n_trials: int
    n_checks: int  # validation scores the sweep looked at: one per epoch per finished trial
    val_balanced_accuracy: float
    chance: float
    noise_band: float
    test_balanced_accuracy: float | None
    test_noise_band: float | None
    n_val: int  # validation sequences


@dataclass
class StudyDiagnosis:
    study: str
    summary: CollapseSummary
    best: BestAgainstChance | None
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # cause -> why it does or does not apply
    headline: str = ""

    @property
    def causes(self) -> list[str]:
        return [f.cause for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"causes": self.causes}

    def to_markdown(self) -> str:
        s = self.summary
        lines = [f"# Diagnosis of study `{self.study}`", "", f"**{self.headline}**", ""]
        lines += [f"{s.trials_finished} finished trials, {s.trials_collapsed} collapsed"
                  + (f" ({s.collapse_rate:.0%})" if s.collapse_rate is not None else "") + ". Outcomes: "
                  + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.outcomes.items() if v) + ".", ""]
        if self.best:
            lines += ["## Best trial against chance", "", *[f"- {line}" for line in best_lines(self.best)], ""]
        lines += ["## Causes", ""]
        if not self.findings:
            lines += ["None of the causes checked applies.", ""]
        for f in self.findings:
            lines += [f"### {f.title}", "", *[f"- {e}" for e in f.evidence], "", f"**Next step:** {f.next_step}", ""]
        lines += ["## Checked", "", "| cause | verdict |", "|---|---|"]
        lines += [f"| {cause} | {why} |" for cause, why in self.checked.items()]
        lines += ["", "## Collapse rate by parameter", ""]
        for name, groups in s.by_parameter.items():
            if groups:
                lines.append(f"- **{name}**: " + "; ".join(
                    f"{value}: {g['collapsed']}/{g['trials']}" for value, g in groups.items()))
        return "\n".join(lines) + "\n"


def best_lines(best: BestAgainstChance) -> list[str]:
    """The best trial's scores beside chance and the noise band, as sentences."""
    lines = [f"trial {best.number}: validation balanced accuracy {best.val_balanced_accuracy:.3f}; "
             f"chance {best.chance:.3f}; noise band for {best.n_trials} trials: up to {best.noise_band:.3f} "
             f"(the best of the {best.n_checks} validation scores they looked at, one per epoch, stays below it "
             "95% of the time when predictions ignore the labels)"]
    if best.test_balanced_accuracy is not None and best.test_noise_band is not None:
        lines.append(f"test balanced accuracy {best.test_balanced_accuracy:.3f} (one model on unseen data: "
                     f"chance stays below {best.test_noise_band:.3f} 95% of the time)")
    return lines


# -- what every rule reads ------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    records: list[TrialRecord]  # every trial
    done: list[TrialRecord]  # the finished ones
    overall: Rate
    summary: CollapseSummary
    confusion: list[list[int]] | None  # a validation confusion matrix (its row sums: the class counts)
    best: BestAgainstChance | None
    data_check: dict[str, Any] | None


@dataclass(frozen=True)
class Verdict:
    """What one rule concluded: its findings, and why it does or does not apply (None: not said)."""

    findings: list[Finding] = field(default_factory=list)
    checked: str | None = None


def _in_decade(decade: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: lr_decade(params["learning_rate"]) == decade


def _concentrated(group: Rate, rest: Rate) -> bool:
    return (group.trials >= MIN_GROUP and rest.trials >= MIN_GROUP and (group.rate or 0) >= CONCENTRATED_RATE
            and (group.rate or 0) - (rest.rate or 0) >= RATE_GAP)


def _mostly(group: Rate) -> bool:
    return group.trials >= MIN_GROUP and (group.rate or 0) >= CONCENTRATED_RATE


def _split(records: list[TrialRecord], test: Callable[[dict[str, Any]], bool]) -> tuple[Rate, Rate]:
    return (collapse_rate(r for r in records if test(r.params)),
            collapse_rate(r for r in records if not test(r.params)))


# -- the rules ------------------------------------------------------------------------------------
def capacity(e: Evidence) -> Verdict:
    """Collapse concentrated at small models (the lower half of the units tried, or one layer), or
    every trial small and most collapsed."""
    done, overall = e.done, e.overall
    units = sorted({r.params["units"] for r in done if "units" in r.params})
    layers = sorted({r.params["layers"] for r in done if "layers" in r.params})
    evidence, steps = [], []
    if units:
        cut = math.sqrt(units[0] * units[-1])
        small, large = _split(done, lambda p: p["units"] <= cut)
        if _concentrated(small, large):
            evidence.append(f"{small} trials with {units[0]}-{int(cut)} units collapsed, against {large} with more")
            steps.append(f"raise units' low bound above {int(cut)}")
        elif units[-1] <= SMALL_UNITS and _mostly(overall):
            evidence.append(f"every trial had at most {units[-1]} units, and {overall} collapsed")
            steps.append("widen units to {low = 32, high = 128}")
    if layers:
        one, more = _split(done, lambda p: p["layers"] == 1)
        if _concentrated(one, more):
            evidence.append(f"{one} one-layer trials collapsed, against {more} with more layers")
            steps.append("set layers' low bound to 2")
    if evidence:
        return Verdict([Finding("capacity", "Too little capacity: small models collapse", evidence,
                                " and ".join(steps) + " in [search_space]")], "applies")
    return Verdict(checked="collapse is not concentrated at small units or one layer" if units else "no finished trials")


def imbalance(e: Evidence) -> Verdict:
    """Collapse concentrated at ``class_weight=none``, or only ``none`` tried on imbalanced classes
    and most collapsed."""
    ratio = _imbalance_ratio(e.confusion)
    none, weighted = _split(e.done, lambda p: p.get("class_weight") == "none")
    evidence = []
    if _concentrated(none, weighted):
        evidence.append(f"{none} trials without class weights collapsed, against {weighted} with weighting or oversampling")
    elif none.trials and not weighted.trials and _mostly(none) and ratio is not None and ratio >= IMBALANCED_RATIO:
        evidence.append(f"only class_weight=none was tried, on classes imbalanced {ratio:.1f} : 1, and {none} collapsed")
    if evidence:
        if ratio is not None and "imbalanced" not in evidence[0]:
            evidence.append(f"validation classes are imbalanced {ratio:.1f} : 1")
        return Verdict([Finding("imbalance", "Class imbalance: unweighted models learn the majority class", evidence,
                                'search class_weight = ["balanced", "sqrt", "oversample"] (drop "none")')], "applies")
    if not none.trials:
        return Verdict(checked="every trial weighted its classes")
    if not weighted.trials:
        return Verdict(checked=f"only class_weight=none tried; {none} collapsed"
                       + ("" if ratio is None or ratio >= IMBALANCED_RATIO else ", on balanced classes"))
    return Verdict(checked="collapse is not concentrated at class_weight=none")


def learning_rate(e: Evidence) -> Verdict:
    """Collapse concentrated in the lowest or highest learning-rate decade tried."""
    decades = e.summary.by_parameter["learning_rate"]
    evidence = []
    if len(decades) >= 2:
        names = list(decades)
        for edge, word in ((names[0], "lowest"), (names[-1], "highest")):
            group, rest = _split(e.done, _in_decade(edge))
            if _concentrated(group, rest):
                evidence.append(f"{group} trials in the {word} learning-rate decade ({edge} to {_next(edge)}) collapsed, "
                                f"against {rest} elsewhere")
    if evidence:
        good = [d for d, g in decades.items() if (g["rate"] or 0) < CONCENTRATED_RATE] or list(decades)
        return Verdict([Finding("learning_rate", "Learning rate at an extreme: collapse concentrates there", evidence,
                                f"narrow learning_rate to {{low = {good[0]}, high = {_next(good[-1])}}}")], "applies")
    return Verdict(checked="collapse is not concentrated at the lowest or highest decade" if len(decades) >= 2
                   else "one learning-rate decade tried")


def gradients(e: Evidence) -> Verdict:
    """Trials whose loss became NaN/inf, or whose gradient norms exploded or vanished."""
    records = e.records
    diverged = [r for r in records if outcome(r) == "failed_nan_loss"]
    exploding = [r for r in records if r.result.gradient_trouble == "exploding" and outcome(r) != "failed_nan_loss"]
    vanishing = [r for r in records if r.result.gradient_trouble == "vanishing"]
    evidence, steps = [], []
    if diverged or exploding:
        bad = diverged + exploding
        lrs = [r.params["learning_rate"] for r in bad if "learning_rate" in r.params]
        clips = sorted({r.params.get("clipnorm", 0.0) for r in bad})
        evidence.append(f"{len(diverged)} trials failed with a non-finite loss and {len(exploding)} more had exploding "
                        f"gradient norms (> 1e3)" + (f", at learning rates {min(lrs):.1e}-{max(lrs):.1e}" if lrs else "")
                        + (f", clipnorm {', '.join(f'{c:g}' for c in clips)}" if clips else ""))
        steps.append(f"lower the learning rate's high bound below {min(lrs):.0e}" if lrs else "lower the learning rate")
        steps.append("and search clipnorm = [1.0, 5.0] (gradient clipping)")
    if vanishing:
        evidence.append(f"{len(vanishing)} trials had vanishing gradients in the first LSTM layer (norm < 1e-5, or "
                        "10,000x smaller than the output layer's, in the last epochs)")
        steps.append("use fewer layers or a higher learning rate, and shorten long sequences (downsample)")
    if evidence:
        return Verdict([Finding("gradients", "Unstable gradients", evidence, "; ".join(steps))], "applies")
    return Verdict(checked="no non-finite loss, no exploding or vanishing norms")


def no_signal(e: Evidence) -> Verdict:
    """The best validation score is inside the noise band: no signal, or (when the test set or the
    data check sees signal) a validation split too small to tell; above the band but at chance on
    the test set: validation luck."""
    b, data_check = e.best, e.data_check
    if b is None:
        if data_check is not None and data_check.get("p_value", 0) > 0.10:
            return Verdict([Finding("no_signal", "No signal: no trial completed, and the data check finds none",
                                    [_data_line(data_check) or ""], "check that the labels belong to their sequences")],
                           "applies")
        return Verdict(checked="no completed trial to judge")
    data_line = _data_line(data_check)
    test_ba, test_band = b.test_balanced_accuracy, b.test_noise_band
    if b.val_balanced_accuracy > b.noise_band:
        checked = (f"the best validation score {b.val_balanced_accuracy:.3f} is above the noise band "
                   f"({b.noise_band:.3f})")
        if test_ba is not None and test_band is not None and test_ba <= test_band:
            return Verdict([Finding(
                "validation_luck", "The best validation score did not hold on the test set",
                [f"validation {b.val_balanced_accuracy:.3f} but test {test_ba:.3f}, inside the test set's chance "
                 f"band (up to {test_band:.3f})"] + ([data_line] if data_line else []),
                "enlarge the validation split (--val-fraction) or the data; treat this model as chance-level")], checked)
        return Verdict(checked=checked)
    inside = (f"the best validation balanced accuracy, {b.val_balanced_accuracy:.3f} (trial {b.number}), "
              f"is inside the noise band of {b.n_trials} trials (up to {b.noise_band:.3f}; chance {b.chance:.3f})")
    # The test set and the data check are independent looks: either one seeing signal means
    # the validation split is too small to tell, not that there is nothing to learn.
    elsewhere = []
    if test_ba is not None and test_band is not None and test_ba > test_band:
        elsewhere.append(f"on the test set the same model scores {test_ba:.3f}, above chance there "
                         f"(up to {test_band:.3f})")
    if data_check is not None and data_check.get("has_signal") and data_line:
        elsewhere.append(data_line)
    if elsewhere:
        return Verdict([Finding(
            "small_validation", f"The validation split ({b.n_val} sequences) is too small to tell the best "
            "score from luck", [inside + f", because {b.n_val} validation sequences give coarse scores", *elsewhere],
            "raise --val-fraction (or add data) so that selection sees more sequences, and prefer the "
            "configuration that holds up when re-trained on the training part's folds (--retrain-top)")],
            "not concluded: the test set or the data check shows signal")
    evidence = [inside]
    if test_ba is not None:
        evidence.append(f"on the test set it scores {test_ba:.3f}"
                        + (f" (chance stays below {test_band:.3f})" if test_band is not None else ""))
    if data_line:
        evidence.append(data_line)
    return Verdict([Finding(
        "no_signal", "No signal: the best score is what luck gives", evidence,
        "check that the labels belong to their sequences (`sweep diagnose DATA` runs a signal check); "
        "more trials will not help")], "applies")


# The rules in the order their findings are reported, each under the cause it checks.
RULES: tuple[tuple[str, Callable[[Evidence], Verdict]], ...] = (
    ("capacity", capacity), ("imbalance", imbalance), ("learning_rate", learning_rate), ("gradients", gradients),
    ("no_signal", no_signal),
)


def best_against_chance(best: BestTrial, done: list[TrialRecord], *, seed: int = 0) -> BestAgainstChance | None:
    """The best trial beside the noise band of the validation scores the sweep looked at."""
    val, test = best.result.val_confusion, best.result.test_confusion
    if not val or best.result.val_balanced_accuracy is None:
        return None
    checks = sum(r.epochs_run or 1 for r in done)
    return BestAgainstChance(
        number=best.number, n_trials=len(done), n_checks=checks, val_balanced_accuracy=best.result.val_balanced_accuracy,
        chance=1.0 / len(val), noise_band=noise_band(val, checks, seed=seed),
        test_balanced_accuracy=best.result.test_balanced_accuracy,
        test_noise_band=noise_band(test, 1, seed=seed) if test else None, n_val=int(np.asarray(val).sum()),
    )


def explain(
    study: str, records: list[TrialRecord], best: BestTrial | None, *,
    val_confusion: list[list[int]] | None = None, data_check: dict[str, Any] | None = None, seed: int = 0,
) -> StudyDiagnosis:
    """Diagnose a study from its trial records and its best trial (:func:`sweep.records.best_of`).

    ``val_confusion``: any trial's validation confusion matrix (its row sums are the validation
    class counts), for studies without a completed trial. ``data_check``: the study data's signal
    check (:func:`sweep.diagnose.signal_check` as a dict), when the data file is at hand; it adds
    evidence to the no-signal verdict.
    """
    done = finished(records)
    against = best_against_chance(best, done, seed=seed) if best is not None else None
    confusion = best.result.val_confusion if best is not None and best.result.val_confusion else val_confusion
    evidence = Evidence(records=records, done=done, overall=collapse_rate(done), summary=collapse_summary(records),
                        confusion=confusion, best=against, data_check=data_check)
    diagnosis = StudyDiagnosis(study=study, summary=evidence.summary, best=against)
    for cause, rule in RULES:
        verdict = rule(evidence)
        diagnosis.findings.extend(verdict.findings)
        if verdict.checked is not None:
            diagnosis.checked[cause] = verdict.checked
    diagnosis.headline = _headline(diagnosis, evidence.overall)
    return diagnosis


def _imbalance_ratio(confusion: list[list[int]] | None) -> float | None:
    if not confusion:
        return None
    counts = [c for c in np.asarray(confusion).sum(axis=1).tolist() if c > 0]
    return max(counts) / min(counts) if counts else None


def _next(decade: str) -> str:
    return f"1e{int(decade[2:]) + 1}"


def _data_line(check: dict[str, Any] | None) -> str | None:
    if not check:
        return None
    return (f"the data's signal check: a non-recurrent baseline scores {check['baseline_balanced_accuracy']:.3f} "
            f"against {check['shuffled_mean']:.3f} on shuffled labels (p = {check['p_value']:.2f})")


def _headline(d: StudyDiagnosis, overall: Rate) -> str:
    if overall.trials == 0:
        return "No trial finished yet: nothing to diagnose."
    titles = {"capacity": "too little capacity", "imbalance": "class imbalance", "learning_rate": "the learning rate",
              "gradients": "unstable gradients"}
    if "no_signal" in d.causes and d.best is None:
        return "No signal: no trial completed, and the data's signal check finds no link between inputs and labels."
    if "no_signal" in d.causes:
        return ("No signal: the best model scores what the best of this many chance-level models would; "
                "no setting will fix that.")
    causes = [titles[c] for c in d.causes if c in titles]
    if causes:
        return f"{overall} trials collapsed; causes: {', '.join(causes)}."
    if "small_validation" in d.causes:
        return next(f.title for f in d.findings if f.cause == "small_validation") + ", though other evidence shows signal."
    if "validation_luck" in d.causes:
        return "The best validation score did not hold on the test set: treat the winner as chance-level."
    return f"{overall} trials collapsed, and none of the causes checked applies: the search is healthy."
