"""Which trial is the best: the one place that decides it.

Trials rank by :func:`objectives.metrics.rank_key` (score, then the lower validation loss); of
trials tied on both, the first to finish wins. The study's best trial, the objective's "is this a
new best?" (which decides whether a model is logged and crowned), the trial that ships (the
re-training's margin rule may choose another top-k configuration: :func:`champion_trial`), the
registry's ``champion`` alias and the top-k re-training all ask this module.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.metrics import rank_key
from objectives.records import RESULT_ATTR


def trial_rank(trial: FrozenTrial) -> tuple[float, float]:
    """A complete trial's :func:`~objectives.metrics.rank_key`."""
    return rank_key(trial.value if trial.value is not None else float("-inf"),
                    (trial.user_attrs.get(RESULT_ATTR) or {}).get("val_loss"))


def outranks(score: float, val_loss: float | None, other_score: float, other_val_loss: float | None) -> bool:
    """Whether (score, val_loss) ranks strictly above (other_score, other_val_loss)."""
    return rank_key(score, val_loss) > rank_key(other_score, other_val_loss)


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials best first; of fully tied trials, the first to finish first."""
    return sorted(trials, key=lambda t: (_neg(trial_rank(t)), t.datetime_complete or t.datetime_start, t.number))


def _neg(key: tuple[float, float]) -> tuple[float, float]:
    return (-key[0], -key[1])


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest value; of tied values, the lowest validation loss; of
    trials tied on both, the first to finish.

    Optuna ranks by value alone and leaves ties to the database's row order. The first to finish
    of fully tied trials is the one that was a new best when it ended, so it is the one whose model
    was logged and registered as the champion.
    """
    order = ranked(complete_trials(study))
    return order[0] if order else None


def champion_trial(study: optuna.Study) -> tuple[FrozenTrial | None, dict[str, Any] | None]:
    """The trial whose configuration ships, and the selection that chose it (None: the search's winner).

    After the top-k re-training, ``sweep.selection`` may choose another configuration than the
    search's winner (study attribute ``champion``); the choice holds while the search's winner is
    the one it was made against.
    """
    best = best_trial(study)
    choice = study.user_attrs.get("champion")
    if best is None or not choice or choice.get("search_winner") != best.number:
        return best, None
    if choice.get("trial") == best.number:
        return best, choice
    chosen = next((t for t in complete_trials(study) if t.number == choice.get("trial")), None)
    return (chosen, choice) if chosen is not None else (best, None)


def top_trials(study: optuna.Study, k: int, *, family: Callable[[FrozenTrial], Any] | None = None) -> list[FrozenTrial]:
    """The ``k`` best complete trials, best first (the top-k re-training).

    ``family`` (a trial's kind, e.g. its architecture; None: not eligible): when ``k`` >= 2 and the
    k best are all of the best trial's kind, the last place goes to the best eligible trial of
    another kind, if there is one.
    """
    order = ranked(complete_trials(study))
    top = order[:k]
    if family is None or k < 2 or len(top) < k:
        return top
    kind = family(top[0])
    if any(family(t) != kind for t in top):
        return top
    other = next((t for t in order[k:] if family(t) not in (None, kind)), None)
    return top if other is None else [*top[:-1], other]


def ranked_ahead(trial: Any, score: float, val_loss: float | None) -> int:
    """How many complete trials of the study so far rank at or above a trial that just completed
    with (score, val_loss): 0 is a new best (a tie goes to the trial that finished first). The
    objective's :data:`~objectives.objective.RankJudge`."""
    study = getattr(trial, "study", None)
    if study is None:
        return 0
    mine = rank_key(score, val_loss)
    return sum(1 for t in complete_trials(study) if trial_rank(t) >= mine)
