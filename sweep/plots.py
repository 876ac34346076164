"""Figures logged to MLflow: confusion matrices, learning curves, the optimization history.

Figures are built with matplotlib's object API (no pyplot state), so they can be rendered on a
background thread while the next trial trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from objectives.search_space import GROUPINGS

if TYPE_CHECKING:
    from sweep.records import TrialRecord
    from sweep.summary import CollapseSummary


def confusion_figure(panels: Sequence[tuple[str, list[list[int]]]], labels: Sequence[Any]) -> Figure:
    """One heat-map per (title, matrix); rows are true classes, columns predicted ones."""
    k = len(labels)
    size = max(3.2, 0.45 * k + 2.2)
    width = max(size, 0.085 * max(len(title) for title, _ in panels))  # room for the panel titles
    fig = Figure(figsize=(width * len(panels), size))
    axes = fig.subplots(1, len(panels), squeeze=False)
    names = [str(label) for label in labels]
    for ax, (title, matrix) in zip(axes[0], panels):
        cm = np.asarray(matrix)
        row = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, row, out=np.zeros_like(cm, dtype=float), where=row > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        recall = np.diag(share)[row[:, 0] > 0]
        ax.set_title(f"{title}\nbalanced accuracy {recall.mean():.3f}", fontsize=10)
    # Fixed margins in inches (tight_layout() would draw the figure once more just to measure it):
    # room for the y tick labels and the axis label, left of every panel.
    width, height = fig.get_size_inches()
    label_in = 0.55 + 0.075 * max((len(n) for n in names), default=1)
    bottom_in = 0.7 + (0.06 * max((len(n) for n in names), default=1) if k > 6 else 0)
    fig.subplots_adjust(left=label_in / width, right=1 - 0.15 / width, bottom=bottom_in / height, top=1 - 0.6 / height,
                        wspace=label_in * len(panels) / (width - label_in * len(panels)))
    return fig


def learning_curve_figure(history: Sequence[Any], *, title: str, best_epoch: int | None) -> Figure:
    """Loss (left) and validation balanced accuracy / penalized score (right) per epoch."""
    epochs = [r.epoch for r in history]
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_score = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r.loss for r in history], marker="o", ms=3, label="train loss (class-weighted)")
    ax_loss.plot(epochs, [r.val_loss for r in history], marker="o", ms=3, label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_score.plot(epochs, [r.val_balanced_accuracy for r in history], marker="o", ms=3, label="val balanced accuracy")
    ax_score.plot(epochs, [r.val_score for r in history], marker="o", ms=3, label="val score (with collapse penalty)")
    ax_score.plot(epochs, [r.val_top_class_share for r in history], ls=":", label="share of top predicted class")
    ax_score.set_xlabel("epoch")
    ax_score.set_ylim(min(-0.55, min((r.val_score for r in history), default=0) - 0.05), 1.02)
    ax_score.axhline(0, color="grey", lw=0.5)
    ax_score.set_ylabel("validation")
    if best_epoch is not None:
        for ax in (ax_loss, ax_score):
            ax.axvline(best_epoch, color="green", ls="--", lw=1, label=f"kept weights (epoch {best_epoch})")
    ax_loss.legend(fontsize=8)
    ax_score.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86, wspace=0.22)
    return fig


def history_figure(records: Sequence[TrialRecord], *, title: str) -> Figure:
    """Score of every finished trial in order, the best so far, and collapsed trials in red."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    done = [r for r in records if r.score is not None]
    for state, marker, color in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:grey")):
        pts = [r for r in done if r.state == state and not r.collapsed]
        if not pts:
            continue
        ax.scatter([r.number for r in pts], [r.score for r in pts], marker=marker, color=color,
                   label=state.lower(), zorder=3)
    collapsed = [r for r in done if r.collapsed]
    if collapsed:
        ax.scatter([r.number for r in collapsed], [r.score for r in collapsed], marker="v", color="tab:red",
                   label="collapsed (one class)", zorder=3)
    best, line_x, line_y = -np.inf, [], []
    for r in sorted((r for r in done if r.state == "COMPLETE"), key=lambda r: r.number):
        best = max(best, float(r.score or 0.0))
        line_x.append(r.number)
        line_y.append(best)
    if line_x:
        ax.step(line_x, line_y, where="post", color="tab:green", label="best so far")
    ax.axhline(0, color="grey", lw=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("val score (balanced accuracy - collapse penalty)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def collapse_by_parameter_figure(summary: CollapseSummary, *, title: str) -> Figure:
    """One bar panel per parameter: the share of trials that collapsed at each value (n on top)."""
    groups = {name: values for name, values in summary.by_parameter.items() if values}
    fig = Figure(figsize=(3.2 * max(len(groups), 1), 3.6))
    axes = fig.subplots(1, max(len(groups), 1), squeeze=False)[0]
    names = {g.name: g.title for g in GROUPINGS}
    for ax, (name, values) in zip(axes, groups.items()):
        labels = list(values)
        rates = [values[v]["rate"] or 0.0 for v in labels]
        bars = ax.bar(range(len(labels)), rates, color=["tab:red" if r >= 0.5 else "tab:blue" for r in rates])
        for bar, v in zip(bars, labels):
            ax.annotate(f"{values[v]['collapsed']}/{values[v]['trials']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_xlabel(names.get(name, name))
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("share of trials that collapsed")
    rate = summary.collapse_rate
    fig.suptitle(f"{title}: {summary.trials_collapsed} of {summary.trials_finished} trials collapsed"
                 + (f" ({rate:.0%})" if rate is not None else ""), fontsize=11)
    fig.tight_layout()
    return fig


def importance_figure(importances: dict[str, float], *, title: str) -> Figure:
    """Optuna's parameter importances (its default evaluator over the complete trials), largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(7, 0.45 * len(items) + 1.4))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.annotate(f"{v:.2f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max([v for _, v in items] + [0.01]) * 1.15)
    ax.set_xlabel("importance for the val score (Optuna's default evaluator; sums to 1)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def score_by_choice_figure(records: Sequence[TrialRecord], param: str, *, title: str) -> Figure:
    """Final validation balanced accuracy of every finished trial, grouped by one categorical
    parameter (e.g. the class-weight strategy); trials that predicted (nearly) one class in red."""
    done = [r for r in records if r.val_balanced_accuracy is not None and param in r.params]
    choices = sorted({str(r.params[param]) for r in done})
    fig = Figure(figsize=(max(5.0, 1.5 * len(choices) + 2), 3.8))
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for i, choice in enumerate(choices):
        group = [r for r in done if str(r.params[param]) == choice]
        for collapsed, color, label in ((False, "tab:blue", "learned"), (True, "tab:red", "collapsed")):
            pts = [r.val_balanced_accuracy for r in group if r.near_collapse == collapsed]
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(pts)), pts, color=color, alpha=0.8, s=22, label=label)
        learned = [r.val_balanced_accuracy for r in group if not r.near_collapse]
        if learned:
            ax.hlines(np.median(learned), i - 0.3, i + 0.3, color="black", lw=1.5)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per kind, not per group
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax.set_xticks(range(len(choices)), [f"{c}\n(n={sum(str(r.params[param]) == c for r in done)})" for c in choices])
    ax.set_xlabel(param.replace("_", " ") + " (bar: median of the trials that learned)")
    ax.set_ylabel("val balanced accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
