"""sweep/selection.py: the margin rule that picks the shipped configuration (pure)."""

from __future__ import annotations

from sweep.selection import choose_champion, validation_step


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
    assert "within the seeds' spread" in choice.reason


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


def test_the_winner_with_the_best_mean_stays():
    choice = choose_champion([entry(3, [0.9, 0.92]), entry(5, [0.7, 0.8])], search_winner=3)
    assert choice.trial == 3 and choice.lead < 0 and "best re-trained mean" in choice.reason


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
