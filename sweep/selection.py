"""Which configuration ships as the champion: the search's winner, unless the re-training shows that
another one holds up better by more than the seeds' spread. Pure: plain numbers in, a decision out.

On a small validation split (ECG200: 20 sequences) the best of many one-seed scores is mostly luck.
The top-k re-training (``sweep.retrain.retrain_top``) trains each top configuration again with other
seeds; its means are free of the search's selection, but they are noisy too: a difference smaller
than the seeds' own spread is not evidence. So the winner is replaced only by a configuration whose
re-trained mean validation balanced accuracy beats the winner's by more than

    margin = max(std of the challenger's seeds, std of the winner's seeds, one validation step)

where one validation step is the smallest change of balanced accuracy one sequence can make. The
test split is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_SEEDS = 2  # a spread needs two numbers


@dataclass(frozen=True)
class Choice:
    """The shipped configuration and why."""

    trial: int  # the trial whose configuration ships
    search_winner: int  # the search's best trial (one seed)
    switched: bool  # trial != search_winner
    lead: float | None  # re-trained mean of the best challenger minus the winner's
    margin: float | None  # what the lead had to exceed
    challenger: int | None  # the re-trained configuration with the highest mean other than the winner
    reason: str  # one sentence for the summary

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "search_winner": self.search_winner, "switched": self.switched,
                "lead": self.lead, "margin": self.margin, "challenger": self.challenger, "reason": self.reason}


def validation_step(class_counts: Sequence[int]) -> float:
    """The smallest change in balanced accuracy that one validation sequence can make: ``1 / (K n_min)``."""
    counts = [int(c) for c in class_counts if int(c) > 0]
    if not counts:
        return 0.0
    return 1.0 / (len(counts) * min(counts))


def _val_scores(entry: dict[str, Any]) -> list[float]:
    return [float(r["val_balanced_accuracy"]) for r in entry.get("runs", []) if r.get("val_balanced_accuracy") is not None]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def choose_champion(retrained: Sequence[dict[str, Any]] | None, *, search_winner: int, step: float = 0.0) -> Choice:
    """Apply the margin rule to the re-training's entries (``retrained_top_k`` records).

    Args:
        retrained: entries with ``trial`` and ``runs`` (each with ``val_balanced_accuracy`` and
            ``collapsed``); None or empty: no re-training, the search winner ships.
        search_winner: the search's best trial number.
        step: :func:`validation_step` of the validation split (the margin is never below it).

    A challenger whose re-training collapsed in most of its runs is never chosen, nor one with
    fewer than two re-trained runs (no spread to compare with).
    """
    def keep(reason: str, *, lead: float | None = None, margin: float | None = None,
             challenger: int | None = None) -> Choice:
        return Choice(trial=search_winner, search_winner=search_winner, switched=False, lead=lead, margin=margin,
                      challenger=challenger, reason=reason)

    entries = list(retrained or [])
    if not entries:
        return keep(f"trial {search_winner} ships: the search's winner (no re-training to compare with)")
    winner = next((e for e in entries if e["trial"] == search_winner), None)
    if winner is None or len(_val_scores(winner)) < MIN_SEEDS:
        return keep(f"trial {search_winner} ships: the search's winner (its re-training has fewer than "
                    f"{MIN_SEEDS} runs, so there is no spread to compare with)")
    w_mean, w_std = _mean_std(_val_scores(winner))
    rivals = []
    for e in entries:
        scores = _val_scores(e)
        if e["trial"] == search_winner or len(scores) < MIN_SEEDS:
            continue
        near = e.get("near_collapse_runs", e.get("collapsed_runs"))  # older studies stored "collapsed_runs"
        if near is None:
            near = sum(1 for r in e.get("runs", []) if r.get("near_collapse", r.get("collapsed")))
        if 2 * int(near) > len(e["runs"]):
            continue
        rivals.append((e["trial"], *_mean_std(scores)))
    if not rivals:
        return keep(f"trial {search_winner} ships: the search's winner (no other configuration was re-trained "
                    f"with {MIN_SEEDS}+ seeds without collapsing)")
    trial, mean, std = max(rivals, key=lambda r: (r[1], -r[2], -r[0]))
    lead = mean - w_mean
    margin = max(std, w_std, step)
    if lead > margin:
        return Choice(trial=trial, search_winner=search_winner, switched=True, lead=lead, margin=margin,
                      challenger=trial, reason=(
                          f"trial {trial} ships instead of the search's winner {search_winner}: re-trained with other "
                          f"seeds it scores {lead:+.4f} val balanced accuracy above it, more than the seeds' spread "
                          f"({margin:.4f})"))
    if lead > 0:
        return keep(f"trial {search_winner} ships: trial {trial}'s re-trained mean is {lead:+.4f} higher, "
                    f"within the seeds' spread ({margin:.4f}), which is no evidence that it is better",
                    lead=lead, margin=margin, challenger=trial)
    return keep(f"trial {search_winner} ships: the search's winner also has the best re-trained mean",
                lead=lead, margin=margin, challenger=trial)
