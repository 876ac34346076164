"""sweep/selection.py: the margin rule that picks the shipped configuration (pure)."""

from __future__ import annotations

import pytest

from sweep.selection import check_length, choose_champion, validation_step


def entry(trial, vals, collapsed=0):
    return {"trial": trial, "runs": [{"val_balanced_accuracy": v, "collapsed": False} for v in vals],
            "collapsed_runs": collapsed}


def test_validation_step_is_one_sequence_of_the_smallest_class():
    assert validation_step([13, 7]) == 1 / 14
    assert validation_step([10, 10, 0]) == 1 / 20
    assert validation_step([]) == 0.0


def test_a_difference_inside_the_seeds_spread_keeps_the_search_winner():
    # the stop-12 observation: 0.0010 higher on the mean, seeds spread ~0.03
    retrained = [entry(4, [0.80, 0.85, 0.83]), entry(9, [0.80, 0.87, 0.83])]
    choice = choose_champion(retrained, search_winner=4, step=1 / 14)
    assert choice.trial == 4 and not choice.switched and choice.challenger == 9
    assert 0 < choice.lead < choice.margin
    assert "within the difference's noise" in choice.reason


def test_a_lead_larger_than_the_spread_switches():
    retrained = [entry(4, [0.70, 0.72, 0.71]), entry(9, [0.86, 0.88, 0.87]), entry(2, [0.75, 0.76, 0.74])]
    choice = choose_champion(retrained, search_winner=4, step=1 / 14)
    assert choice.switched and choice.trial == 9 and choice.search_winner == 4
    assert choice.lead > choice.margin
    assert choice.to_dict()["trial"] == 9


def test_the_margin_is_never_below_one_validation_step():
    retrained = [entry(4, [0.80, 0.80]), entry(9, [0.83, 0.83])]  # no spread at all
    assert choose_champion(retrained, search_winner=4, step=0.05).trial == 4
    assert choose_champion(retrained, search_winner=4, step=0.01).trial == 9


def test_no_evidence_keeps_the_winner():
    assert choose_champion(None, search_winner=3).trial == 3
    assert choose_champion([], search_winner=3).trial == 3
    # one seed each: no spread to compare with
    assert choose_champion([entry(3, [0.5]), entry(5, [0.9])], search_winner=3).trial == 3
    # the winner was not re-trained (e.g. the budget ran out)
    assert choose_champion([entry(5, [0.9, 0.9])], search_winner=3).trial == 3
    # a challenger that mostly collapsed is never chosen
    assert choose_champion([entry(3, [0.5, 0.5]), entry(5, [0.9, 0.9, 0.5], collapsed=2)], search_winner=3).trial == 3


def test_runs_the_budget_stopped_are_no_evidence():
    def run(v, stopped=False):
        return {"val_balanced_accuracy": v, "stopped_for_deadline": stopped}

    winner = {"trial": 3, "runs": [run(0.80, True), run(0.81, True), run(0.95)]}
    challenger = {"trial": 5, "runs": [run(0.90), run(0.91), run(0.92)]}
    choice = choose_champion([winner, challenger], search_winner=3)
    assert choice.trial == 3 and not choice.switched and "fewer than 2 runs" in choice.reason
    winner["runs"] = [run(0.80), run(0.81), run(0.95, True)]
    assert choose_champion([winner, challenger], search_winner=3).trial == 5  # two complete folds each


def test_the_winner_with_the_best_mean_stays():
    choice = choose_champion([entry(3, [0.9, 0.92]), entry(5, [0.7, 0.8])], search_winner=3)
    assert choice.trial == 3 and choice.lead < 0 and "also leads when re-trained" in choice.reason


def folds(trial, by_fold, collapsed=0):
    return {"trial": trial, "collapsed_runs": collapsed,
            "runs": [{"val_balanced_accuracy": v, "fold": f, "collapsed": False} for f, v in by_fold.items()]}


def test_runs_are_compared_fold_by_fold():
    # ECG200 (3 folds of its 100 training sequences): the stacked recipe won the search's 20
    # validation sequences; LSTM-FCN leads it on every fold. The folds differ in difficulty far more
    # than the lead does: unpaired, the spread (0.03-0.04) would hide a lead that every fold shows.
    winner = folds(0, {0: 0.775, 1: 0.813, 2: 0.857})
    fcn = folds(1, {0: 0.913, 1: 0.907, 2: 0.957})
    choice = choose_champion([winner, fcn], search_winner=0, step=1 / 62)
    assert choice.switched and choice.trial == 1
    assert choice.lead == pytest.approx(0.1107, abs=1e-4) and choice.margin < choice.lead
    assert "re-trained on the same folds" in choice.reason
    # a lead of the same size that one fold contradicts is noise
    mixed = folds(1, {0: 0.975, 1: 0.713, 2: 0.990})
    assert not choose_champion([winner, mixed], search_winner=0, step=1 / 62).switched


def test_only_shared_folds_count():
    # the budget skipped fold 2 of the challenger: folds 0 and 1 are compared, fold 2 of the winner is not
    winner = folds(0, {0: 0.70, 1: 0.72, 2: 0.99})
    short = folds(1, {0: 0.80, 1: 0.83})
    choice = choose_champion([winner, short], search_winner=0, step=0.01)
    assert choice.switched and choice.lead == pytest.approx(0.105)
    # one shared fold is no comparison at all
    assert not choose_champion([winner, folds(1, {2: 1.0})], search_winner=0).switched


# -- the choice reaches the summary, `sweep best` and the registry through best_summary ---------
def _study_with(values):
    import optuna

    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        trial = optuna.trial.create_trial(value=value, params={}, distributions={},
                                          user_attrs={"result": {"val_loss": 0.5, "val_balanced_accuracy": value},
                                                      "model_uri": f"models:/m-{number}"})
        study.add_trial(trial)
    return study


def test_best_summary_reports_the_chosen_configuration_while_the_winner_it_was_made_against_stands():
    import optuna

    from sweep.ranking import best_trial, champion_trial
    from sweep.records import best_of

    study = _study_with([0.90, 0.85, 0.80])
    assert best_of(study).to_dict()["number"] == 0 and best_of(study).to_dict()["selection"] is None
    choice = choose_champion([entry(0, [0.70, 0.72]), entry(1, [0.86, 0.88])], search_winner=0)
    study.set_user_attr("champion", choice.to_dict())
    summary = best_of(study).to_dict()
    assert summary["number"] == 1 and summary["model_uri"] == "models:/m-1" and summary["selection"]["switched"]
    assert champion_trial(study)[0].number == 1 and best_trial(study).number == 0
    # a new search winner voids the old choice until the re-training has looked at it
    study.add_trial(optuna.trial.create_trial(value=0.95, params={}, distributions={},
                                              user_attrs={"result": {"val_loss": 0.4}}))
    assert best_of(study).to_dict()["number"] == 3 and best_of(study).to_dict()["selection"] is None


def test_the_top_k_keep_a_place_for_another_architecture():
    import optuna

    from sweep.ranking import top_trials

    study = optuna.create_study(direction="maximize")
    for value, arch in [(0.93, "stacked"), (0.92, "stacked"), (0.91, "stacked"), (0.89, "lstm_fcn"), (0.85, "stacked")]:
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"architecture": arch},
            distributions={"architecture": optuna.distributions.CategoricalDistribution(["stacked", "lstm_fcn"])},
            user_attrs={"result": {"val_loss": 0.5}}))

    def family(t):
        return t.params["architecture"]

    assert [t.number for t in top_trials(study, 3)] == [0, 1, 2]
    assert [t.number for t in top_trials(study, 3, family=family)] == [0, 1, 3]
    assert [t.number for t in top_trials(study, 4, family=family)] == [0, 1, 2, 3]  # already mixed
    assert [t.number for t in top_trials(study, 1, family=family)] == [0]

    def shippable(t):  # trial 3 has no model logged (--log-models best): it could not ship
        return None if t.number == 3 else t.params["architecture"]

    assert [t.number for t in top_trials(study, 3, family=shippable)] == [0, 1, 2]


def test_a_fold_ensemble_needs_two_models_of_different_folds():
    from pathlib import Path

    from sweep.ensemble import FoldModel, enough_members

    def member(fold: int) -> FoldModel:
        return FoldModel(fold=fold, path=Path(f"f{fold}.keras"), val_balanced_accuracy=0.9, epochs=10)

    assert enough_members([member(2), member(0), member(1)])
    assert enough_members([member(0), member(2)])  # a fold collapsed, or the budget skipped its run
    assert not enough_members([member(1)])
    assert not enough_members([member(0), member(0)])
    assert not enough_members([])


def test_a_fold_run_joins_the_ensemble_unless_it_collapsed_or_the_budget_cut_it_before_the_search_model_s_epochs():
    from objectives.records import RetrainRun
    from sweep.retrain import _keepable

    def run(epochs: int, *, deadline: bool = False, near: bool = False, collapse: bool = False) -> RetrainRun:
        return RetrainRun(seed=1, epochs=epochs, stopped_for_collapse=collapse, stopped_for_deadline=deadline,
                          val_score=0.9, val_balanced_accuracy=0.9, near_collapse=near, test_balanced_accuracy=None)

    assert _keepable(run(12), min_epochs=40)  # ended by its patience: complete however short
    assert _keepable(run(40, deadline=True), min_epochs=40)
    assert not _keepable(run(39, deadline=True), min_epochs=40)
    assert not _keepable(run(50, near=True), min_epochs=10)
    assert not _keepable(run(8, collapse=True), min_epochs=5)


def _runs(*scores: float | None, stopped: tuple[int, ...] = ()) -> list[dict]:
    return [{"fold": i, "val_balanced_accuracy": s, "stopped_for_deadline": i in stopped} for i, s in enumerate(scores)]


@pytest.mark.parametrize("short, long, refit, lead, margin, noise", [
    ((0.80, 0.85, 0.90), (0.85, 0.90, 0.88), True, 0.0267, 0.0233, ""),  # long training wins on the mean
    ((0.80, 0.90), (0.80, 0.90), True, 0.0, 0.02, ""),  # a tie: the refit, which also trains on more data
    # ECG200 at --budget 10m (cbf3924): short ahead by one 33-sequence fold's step, inside the noise
    ((0.891, 0.785, 0.907), (0.796, 0.785, 0.928), True, -0.0247, 0.0357, ", within the difference's noise (0.0357)"),
    # the demo set: long training learns the noise, behind on every fold
    ((0.90, 0.88, 0.91), (0.82, 0.80, 0.84), False, -0.0767, 0.02, ", more than the difference's noise (0.0200)"),
    ((0.80, 0.90, 0.70), (0.60, 0.70, None), False, -0.2, 0.02, ", more than the difference's noise (0.0200)"),  # shared folds only
])
def test_the_refit_ships_unless_its_length_falls_behind_its_own_model_s_length_by_more_than_the_noise(
        short, long, refit, lead, margin, noise):
    verdict = check_length(_runs(*short), _runs(*long), trial=4, epochs=100, short_epochs=24, step=0.02)
    folds = sum(1 for s, lg in zip(short, long) if s is not None and lg is not None)
    assert (verdict.refit, verdict.folds) == (refit, folds)
    assert verdict.lead == pytest.approx(lead, abs=1e-4) and verdict.margin == pytest.approx(margin, abs=1e-4)
    assert verdict.reason.startswith("trial 4 ships refit on the whole training part" if refit
                                     else "trial 4's own model ships")
    assert verdict.reason.endswith(f"trained 100 epochs it scores {lead:+.4f} val balanced accuracy against 24 epochs "
                                   f"(its own model's length) on the same {folds} folds{noise}")
    assert verdict.to_dict()["refit"] is refit and verdict.to_dict()["short_epochs"] == 24


def test_without_two_comparable_folds_the_trials_own_model_ships():
    """A run the budget's clock stopped is no evidence, nor a fold with only one of the two lengths."""
    stopped = check_length(_runs(0.5, 0.5, 0.5), _runs(0.9, 0.9, 0.9, stopped=(0, 1)), trial=2, epochs=60, short_epochs=9)
    missing = check_length([], _runs(0.9, 0.9), trial=2, epochs=60, short_epochs=9)
    for verdict in (stopped, missing):
        assert not verdict.refit and verdict.lead is None
        assert "fewer than 2 folds have both a 9-epoch and a 60-epoch run" in verdict.reason
    assert stopped.folds == 1 and missing.folds == 0


def test_a_refit_no_longer_than_the_trial_s_own_model_needs_no_test():
    verdict = check_length([], [], trial=3, epochs=40, short_epochs=40)
    assert verdict.refit and verdict.lead is None and verdict.folds == 0
    assert verdict.reason == ("trial 3 ships refit on the whole training part: its own model kept 40 epochs, "
                              "so the refit's 40 are no longer (nothing to test)")
