"""Why did a study's models predict one class? The study summary and `sweep diagnose --study`.

Reads only the trial rows the study stores (:func:`sweep.study.trial_rows`), so it works on any
finished or half-finished study, from any machine that can reach its storage. Pure Python +
numpy: no TensorFlow, no MLflow.

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
from typing import Any, Callable, Iterable

import numpy as np

MIN_GROUP = 2
CONCENTRATED_RATE = 0.5
RATE_GAP = 0.25
SMALL_UNITS = 16
IMBALANCED_RATIO = 1.5  # largest class / smallest class in the validation split
NOISE_QUANTILE = 0.95
NOISE_DRAWS = 20000

OUTCOMES = ("complete", "pruned_collapse", "pruned_median", "pruned_hyperband", "pruned_other",
            "failed_nan_loss", "failed_no_heartbeat", "failed_interrupted", "failed_error")


# -- one trial ------------------------------------------------------------------------------------
def outcome(row: dict[str, Any]) -> str | None:
    """How a trial ended, by reason (one of :data:`OUTCOMES`); None for running or surplus trials."""
    state, reason = row["state"], str(row.get("reason") or "")
    if row.get("surplus") or state not in ("COMPLETE", "PRUNED", "FAIL"):
        return None
    if state == "COMPLETE":
        return "complete"
    if state == "PRUNED":
        return next((f"pruned_{k}" for k in ("collapse", "median", "hyperband") if reason.startswith(k)), "pruned_other")
    if reason.startswith("nan_loss"):
        return "failed_nan_loss"
    if reason.startswith("no heartbeat"):
        return "failed_no_heartbeat"
    return "failed_interrupted" if reason == "interrupted" else "failed_error"


def lr_decade(learning_rate: float) -> str:
    """``"1e-3"`` for 1e-3 <= lr < 1e-2."""
    return f"1e{math.floor(math.log10(learning_rate) + 1e-9)}"


def units_bucket(units: int) -> str:
    """Power-of-two bins: ``"<=2"``, ``"3-4"``, ``"5-8"``, ..., ``"65-128"``."""
    if units <= 2:
        return "<=2"
    high = 1 << math.ceil(math.log2(units))
    return f"{high // 2 + 1}-{high}"


_GROUPERS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "class_weight": lambda p: p.get("class_weight"),
    "learning_rate": lambda p: lr_decade(p["learning_rate"]) if p.get("learning_rate") else None,
    "units": lambda p: units_bucket(p["units"]) if p.get("units") else None,
    "layers": lambda p: str(p["layers"]) if p.get("layers") else None,
    "architecture": lambda p: architecture(p) if p.get("units") else None,
    "pooling": lambda p: p.get("pooling", "last") if p.get("units") else None,
}


def architecture(params: dict[str, Any]) -> str:
    """``"LSTM"``, ``"BiLSTM"``, ``"conv+LSTM"`` or ``"conv+BiLSTM"`` (+ ``" masked"``), or
    ``"LSTM-FCN"`` / ``"BiLSTM-FCN"``; trials of studies made before these choices existed are
    plain ``"LSTM"``."""
    rnn = "BiLSTM" if params.get("bidirectional") else "LSTM"
    if params.get("architecture") == "lstm_fcn":
        return f"{rnn}-FCN"
    name = ("conv+" if params.get("conv_filters") else "") + rnn
    return name + (" masked" if params.get("masking") else "")


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


def _rate(rows: Iterable[dict[str, Any]]) -> Rate:
    rows = list(rows)
    return Rate(len(rows), sum(1 for r in rows if r["collapse"]))


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and not r.get("surplus")]


def collapse_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Collapse rate overall and by parameter, and trial counts by how they ended (JSON-ready)."""
    done = finished(rows)
    overall = _rate(done)
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in rows:
        kind = outcome(r)
        if kind is not None:
            counts[kind] += 1
    by_parameter: dict[str, dict[str, dict[str, Any]]] = {}
    for name, key in _GROUPERS.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in done:
            value = key(r["params"])
            if value is not None:
                groups.setdefault(value, []).append(r)
        by_parameter[name] = {value: {"trials": g.trials, "collapsed": g.collapsed, "rate": g.rate}
                              for value, g in sorted(((v, _rate(rs)) for v, rs in groups.items()), key=_order(name))}
    return {
        "trials_finished": overall.trials,
        "trials_collapsed": overall.collapsed,
        "collapse_rate": overall.rate,
        "outcomes": counts,
        "gradient_trouble": {
            "exploding": sum(1 for r in rows if r.get("gradient_trouble") == "exploding"),
            "vanishing": sum(1 for r in rows if r.get("gradient_trouble") == "vanishing"),
        },
        "by_parameter": by_parameter,
    }


def _order(name: str) -> Callable[[tuple[str, Rate]], Any]:
    if name == "learning_rate":
        return lambda item: int(item[0][2:])
    if name == "units":
        return lambda item: int(item[0].lstrip("<=").split("-")[-1])
    if name == "layers":
        return lambda item: int(item[0])
    return lambda item: item[0]


# -- the winner's curse ---------------------------------------------------------------------------
def null_balanced_accuracies(confusion: list[list[int]], *, draws: int = NOISE_DRAWS, seed: int = 0) -> np.ndarray:
    """Balanced accuracy of ``draws`` label-independent predictors on this evaluation set.

    Each draw shuffles the predictions of the confusion matrix across the sequences (keeping
    both the true class counts and the predicted class counts), which is what a model scores when
    its outputs carry no information about the labels. A single-class histogram is replaced by
    predictions in the true proportions (a collapsed model's null is exactly chance).
    """
    c = np.asarray(confusion, dtype=np.int64)
    true_counts, predicted = c.sum(axis=1), c.sum(axis=0)
    if np.count_nonzero(predicted) <= 1:
        predicted = true_counts
    k = len(true_counts)
    y_true = np.repeat(np.arange(k), true_counts)
    y_pred = np.repeat(np.arange(k), predicted)
    present = np.flatnonzero(true_counts)
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    chunk = max(1, 4_000_000 // max(len(y_true), 1))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        shuffled = rng.permuted(np.broadcast_to(y_pred, (n, len(y_pred))), axis=1)
        hits = shuffled == y_true
        recalls = [hits[:, y_true == cls].mean(axis=1) for cls in present]
        out[start:start + n] = np.mean(recalls, axis=0)
    return out


def noise_band(confusion: list[list[int]], n_checks: int, *, seed: int = 0) -> float:
    """The balanced accuracy the best of ``n_checks`` label-independent scores stays under with
    probability NOISE_QUANTILE.

    A sweep looks at the validation score once per epoch of every trial: each trial keeps its best
    epoch, and the study keeps its best trial, so the winner is the best of all those looks. They
    are treated as independent, which makes the band wider than correlated looks give: a score
    inside it is one that luck alone explains.
    """
    null = null_balanced_accuracies(confusion, seed=seed)
    return float(np.quantile(null, NOISE_QUANTILE ** (1.0 / max(n_checks, 1))))


# -- the diagnosis --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    cause: str  # capacity, imbalance, learning_rate, gradients, no_signal, validation_luck
    title: str
    evidence: list[str]
    next_step: str


@dataclass
class StudyDiagnosis:
    study: str
    summary: dict[str, Any]
    best: dict[str, Any] | None
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
        lines += [f"{s['trials_finished']} finished trials, {s['trials_collapsed']} collapsed"
                  + (f" ({s['collapse_rate']:.0%})" if s["collapse_rate"] is not None else "") + ". Outcomes: "
                  + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["outcomes"].items() if v) + ".", ""]
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
        for name, groups in s["by_parameter"].items():
            if groups:
                lines.append(f"- **{name}**: " + "; ".join(
                    f"{value}: {g['collapsed']}/{g['trials']}" for value, g in groups.items()))
        return "\n".join(lines) + "\n"


def best_lines(best: dict[str, Any]) -> list[str]:
    """The best trial's scores beside chance and the noise band, as sentences."""
    lines = [f"trial {best['number']}: validation balanced accuracy {best['val_balanced_accuracy']:.3f}; "
             f"chance {best['chance']:.3f}; noise band for {best['n_trials']} trials: up to {best['noise_band']:.3f} "
             f"(the best of the {best['n_checks']} validation scores they looked at, one per epoch, stays below it "
             "95% of the time when predictions ignore the labels)"]
    if best.get("test_balanced_accuracy") is not None:
        lines.append(f"test balanced accuracy {best['test_balanced_accuracy']:.3f} (one model on unseen data: "
                     f"chance stays below {best['test_noise_band']:.3f} 95% of the time)")
    return lines


def _concentrated(group: Rate, rest: Rate) -> bool:
    return (group.trials >= MIN_GROUP and rest.trials >= MIN_GROUP and (group.rate or 0) >= CONCENTRATED_RATE
            and (group.rate or 0) - (rest.rate or 0) >= RATE_GAP)


def _mostly(group: Rate) -> bool:
    return group.trials >= MIN_GROUP and (group.rate or 0) >= CONCENTRATED_RATE


def _split(rows: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> tuple[Rate, Rate]:
    return _rate(r for r in rows if test(r["params"])), _rate(r for r in rows if not test(r["params"]))


def explain(
    study: str, rows: list[dict[str, Any]], best: dict[str, Any] | None, *,
    val_confusion: list[list[int]] | None = None, data_check: dict[str, Any] | None = None, seed: int = 0,
) -> StudyDiagnosis:
    """Diagnose a study from its trial rows and :func:`sweep.study.best_summary`.

    ``val_confusion``: any trial's validation confusion matrix (its row sums are the validation
    class counts), for studies without a completed trial. ``data_check``: the study data's signal
    check (:func:`sweep.diagnose.signal_check` as a dict), when the data file is at hand; it adds
    evidence to the no-signal verdict.
    """
    done = finished(rows)
    summary = collapse_summary(rows)
    diagnosis = StudyDiagnosis(study=study, summary=summary, best=None)
    findings, checked = diagnosis.findings, diagnosis.checked
    confusion = best["val_confusion"] if best is not None and best.get("val_confusion") else val_confusion
    overall = _rate(done)

    # capacity
    units = sorted({r["params"]["units"] for r in done if "units" in r["params"]})
    layers = sorted({r["params"]["layers"] for r in done if "layers" in r["params"]})
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
        findings.append(Finding("capacity", "Too little capacity: small models collapse", evidence,
                                " and ".join(steps) + " in [search_space]"))
        checked["capacity"] = "applies"
    else:
        checked["capacity"] = "collapse is not concentrated at small units or one layer" if units else "no finished trials"

    # imbalance
    ratio = _imbalance(confusion)
    none, weighted = _split(done, lambda p: p.get("class_weight") == "none")
    evidence = []
    if _concentrated(none, weighted):
        evidence.append(f"{none} trials without class weights collapsed, against {weighted} with weighting or oversampling")
    elif none.trials and not weighted.trials and _mostly(none) and ratio is not None and ratio >= IMBALANCED_RATIO:
        evidence.append(f"only class_weight=none was tried, on classes imbalanced {ratio:.1f} : 1, and {none} collapsed")
    if evidence:
        if ratio is not None and "imbalanced" not in evidence[0]:
            evidence.append(f"validation classes are imbalanced {ratio:.1f} : 1")
        findings.append(Finding("imbalance", "Class imbalance: unweighted models learn the majority class", evidence,
                                'search class_weight = ["balanced", "sqrt", "oversample"] (drop "none")'))
        checked["imbalance"] = "applies"
    else:
        if not none.trials:
            checked["imbalance"] = "every trial weighted its classes"
        elif not weighted.trials:
            checked["imbalance"] = (f"only class_weight=none tried; {none} collapsed"
                                    + ("" if ratio is None or ratio >= IMBALANCED_RATIO else ", on balanced classes"))
        else:
            checked["imbalance"] = "collapse is not concentrated at class_weight=none"

    # learning rate
    decades = summary["by_parameter"]["learning_rate"]
    evidence = []
    if len(decades) >= 2:
        names = list(decades)
        for edge, word in ((names[0], "lowest"), (names[-1], "highest")):
            group, rest = _split(done, lambda p, e=edge: lr_decade(p["learning_rate"]) == e)
            if _concentrated(group, rest):
                evidence.append(f"{group} trials in the {word} learning-rate decade ({edge} to {_next(edge)}) collapsed, "
                                f"against {rest} elsewhere")
    if evidence:
        good = [d for d, g in decades.items() if (g["rate"] or 0) < CONCENTRATED_RATE] or list(decades)
        findings.append(Finding("learning_rate", "Learning rate at an extreme: collapse concentrates there", evidence,
                                f"narrow learning_rate to {{low = {good[0]}, high = {_next(good[-1])}}}"))
        checked["learning_rate"] = "applies"
    else:
        checked["learning_rate"] = ("collapse is not concentrated at the lowest or highest decade" if len(decades) >= 2
                                    else "one learning-rate decade tried")

    # gradients
    diverged = [r for r in rows if outcome(r) == "failed_nan_loss"]
    exploding = [r for r in rows if r.get("gradient_trouble") == "exploding" and outcome(r) != "failed_nan_loss"]
    vanishing = [r for r in rows if r.get("gradient_trouble") == "vanishing"]
    evidence, steps = [], []
    if diverged or exploding:
        bad = diverged + exploding
        lrs = [r["params"]["learning_rate"] for r in bad if "learning_rate" in r["params"]]
        clips = sorted({r["params"].get("clipnorm", 0.0) for r in bad})
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
        findings.append(Finding("gradients", "Unstable gradients", evidence, "; ".join(steps)))
        checked["gradients"] = "applies"
    else:
        checked["gradients"] = "no non-finite loss, no exploding or vanishing norms"

    # the best trial against chance: no signal, or a lucky validation score
    if best is not None and best.get("val_confusion"):
        n = len(done)
        checks = sum(r.get("epochs_run") or 1 for r in done)
        b = {"number": best["number"], "n_trials": n, "n_checks": checks,
             "val_balanced_accuracy": best["val_balanced_accuracy"], "chance": 1.0 / len(best["val_confusion"]),
             "noise_band": noise_band(best["val_confusion"], checks, seed=seed),
             "test_balanced_accuracy": best.get("test_balanced_accuracy"), "test_noise_band": None}
        if best.get("test_confusion"):
            b["test_noise_band"] = noise_band(best["test_confusion"], 1, seed=seed)
        diagnosis.best = b
        data_line = _data_line(data_check)
        test_ba, test_band = b["test_balanced_accuracy"], b["test_noise_band"]
        n_val = int(np.asarray(best["val_confusion"]).sum())
        if b["val_balanced_accuracy"] <= b["noise_band"]:
            inside = (f"the best validation balanced accuracy, {b['val_balanced_accuracy']:.3f} (trial {b['number']}), "
                      f"is inside the noise band of {n} trials (up to {b['noise_band']:.3f}; chance {b['chance']:.3f})")
            # The test set and the data check are independent looks: either one seeing signal means
            # the validation split is too small to tell, not that there is nothing to learn.
            elsewhere = []
            if test_ba is not None and test_band is not None and test_ba > test_band:
                elsewhere.append(f"on the test set the same model scores {test_ba:.3f}, above chance there "
                                 f"(up to {test_band:.3f})")
            if data_check is not None and data_check.get("has_signal"):
                elsewhere.append(data_line)
            if elsewhere:
                findings.append(Finding(
                    "small_validation", f"The validation split ({n_val} sequences) is too small to tell the best "
                    "score from luck", [inside + f", because {n_val} validation sequences give coarse scores", *elsewhere],
                    "raise --val-fraction (or add data) so that selection sees more sequences, and prefer the "
                    "configuration that holds up when re-trained with other seeds (--retrain-top)"))
                checked["no_signal"] = "not concluded: the test set or the data check shows signal"
            else:
                evidence = [inside]
                if test_ba is not None:
                    evidence.append(f"on the test set it scores {test_ba:.3f}"
                                    + (f" (chance stays below {test_band:.3f})" if test_band is not None else ""))
                if data_line:
                    evidence.append(data_line)
                findings.append(Finding(
                    "no_signal", "No signal: the best score is what luck gives", evidence,
                    "check that the labels belong to their sequences (`sweep diagnose DATA` runs a signal check); "
                    "more trials will not help"))
                checked["no_signal"] = "applies"
        else:
            checked["no_signal"] = (f"the best validation score {b['val_balanced_accuracy']:.3f} is above the noise band "
                                    f"({b['noise_band']:.3f})")
            if test_ba is not None and test_band is not None and test_ba <= test_band:
                findings.append(Finding(
                    "validation_luck", "The best validation score did not hold on the test set",
                    [f"validation {b['val_balanced_accuracy']:.3f} but test {test_ba:.3f}, inside the test set's chance "
                     f"band (up to {test_band:.3f})"] + ([data_line] if data_line else []),
                    "enlarge the validation split (--val-fraction) or the data; treat this model as chance-level"))
    elif data_check is not None and data_check.get("p_value", 0) > 0.10:
        findings.append(Finding("no_signal", "No signal: no trial completed, and the data check finds none",
                                [_data_line(data_check)], "check that the labels belong to their sequences"))
        checked["no_signal"] = "applies"
    else:
        checked["no_signal"] = "no completed trial to judge"

    diagnosis.headline = _headline(diagnosis, overall)
    return diagnosis


def _imbalance(confusion: list[list[int]] | None) -> float | None:
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
