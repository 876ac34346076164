"""sweep/budget.py: durations, the deadline, the reserve and the epoch allocation (no TensorFlow)."""

from __future__ import annotations

import pytest

from sweep import budget
from sweep.budget import (
    Deadline,
    can_start_trial,
    format_duration,
    halving_settings,
    parse_duration,
    reserve_seconds,
)
from sweep.errors import ConfigError


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1.5h", 5400), ("600", 600), (" 3 m ", 180), ("45 sec", 45),
    ("10M", 600), (600, 600), (90.5, 90.5), ("2min", 120),
])
def test_parse_duration_accepts_the_documented_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5m", "1e3", "ten minutes", "5s", "8d", True, None, [10]])
def test_parse_duration_refuses_with_one_clear_line(text):
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "\n" not in message and "budget (--budget)" in message
    assert "10m" in message or "between" in message


def test_budget_bounds_are_named():
    with pytest.raises(ConfigError, match="between 10 s and 7 days"):
        parse_duration("9s")
    with pytest.raises(ConfigError, match="between 10 s and 7 days"):
        parse_duration("169h")


def test_format_duration():
    assert format_duration(42.4) == "42s"
    assert format_duration(95) == "1m35s"
    assert format_duration(3600) == "1h00m"
    assert format_duration(-3) == "0s"


def test_reserve_keeps_finish_time_and_a_share_for_retraining():
    assert reserve_seconds(600, retrain_top=0) == budget.FINISH_SECONDS
    assert reserve_seconds(600, retrain_top=3) == pytest.approx(15 + 0.3 * 585)
    # a short budget is mostly search: never more than half of it is reserved
    assert reserve_seconds(20, retrain_top=3) == 10
    assert reserve_seconds(20, retrain_top=0) == 10


def test_deadline_splits_search_and_end():
    d = Deadline.start(600, retrain_top=3, now=1000.0)
    assert d.ends_at == 1600 and d.budget == 600
    assert d.search_ends_at == pytest.approx(1600 - reserve_seconds(600, retrain_top=3))
    assert not d.search_over(now=1000) and d.search_over(now=d.search_ends_at)
    assert d.left(now=1100) == 500
    assert d.retrain_left(now=1500) == pytest.approx(100 - budget.FINISH_SECONDS)
    assert Deadline.from_dict(d.to_dict()) == d
    assert budget.time_left_text(d, now=1000) == "search 6m50s left"
    assert budget.time_left_text(d, now=1590) == "10s left in the budget"


def test_a_refit_gets_its_own_share_of_the_reserve():
    """--ship refit keeps REFIT_SHARE more of the budget, and the re-training's runs stop that much
    earlier than the re-training's end (the refit also gets whatever the runs leave)."""
    plain = reserve_seconds(600, retrain_top=3)
    with_refit = reserve_seconds(600, retrain_top=3, refit=True)
    assert with_refit == pytest.approx(15 + (budget.RETRAIN_SHARE + budget.REFIT_SHARE) * 585)
    assert budget.refit_seconds(600, retrain_top=3, refit=True) == pytest.approx(budget.REFIT_SHARE * 585)
    assert budget.refit_seconds(600, retrain_top=3, refit=False) == 0
    assert budget.refit_seconds(600, retrain_top=0, refit=True) == 0  # no re-training, no refit
    d = Deadline.start(600, retrain_top=3, refit=True, now=0.0)
    assert d.search_ends_at == pytest.approx(600 - with_refit) and d.search_ends_at < 600 - plain
    share = budget.REFIT_SHARE * 585
    # the re-training's runs stop early enough to leave the refit its share, or what it needs if more,
    # but never more than REFIT_MAX_SHARE of the re-training's time left
    start = d.search_ends_at
    assert budget.runs_end_at(d, now=start) == pytest.approx(d.retrain_ends_at - share)
    assert budget.runs_end_at(d, refit_need=share + 40, now=start) == pytest.approx(d.retrain_ends_at - share - 40)
    assert budget.runs_end_at(d, refit_need=10_000, now=start) == pytest.approx(
        d.retrain_ends_at - budget.REFIT_MAX_SHARE * (d.retrain_ends_at - start))
    # --ship auto: the length check's runs come first, so the runs may leave up to CHECK_MAX_SHARE
    assert budget.CHECK_MAX_SHARE > budget.REFIT_MAX_SHARE
    assert budget.runs_end_at(d, refit_need=10_000, checked=True, now=start) == pytest.approx(
        d.retrain_ends_at - budget.CHECK_MAX_SHARE * (d.retrain_ends_at - start))
    assert budget.runs_end_at(d, refit_need=share + 40, checked=True, now=start) == pytest.approx(
        d.retrain_ends_at - share - 40)  # below either cap: what it needs
    assert Deadline.from_dict(d.to_dict()) == d
    # without a refit, or on a deadline stored before the refit existed, the runs have it all
    plain_d = Deadline.start(600, retrain_top=3, now=0.0)
    assert budget.runs_end_at(plain_d, refit_need=100, now=plain_d.search_ends_at) == plain_d.retrain_ends_at
    old = Deadline.from_dict({"started_at": 0.0, "search_ends_at": 400.0, "ends_at": 600.0})
    assert old.refit_seconds == 0 and budget.runs_end_at(old, now=400.0) == old.retrain_ends_at
    # a short budget: never more than half of it is reserved, refit or not
    assert reserve_seconds(20, retrain_top=3, refit=True) == 10


def test_refit_epochs_fill_the_time_left_up_to_the_cap():
    setup = budget.REFIT_SETUP_SECONDS
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=None, at_least=10) == 100  # no budget: the cap
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=setup + 61, at_least=10) == 30
    assert budget.refit_epochs(20, seconds_per_epoch=0.1, seconds_left=setup + 500, at_least=10) == 20
    # fewer epochs than the trial's own model kept: not worth it
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=setup + 19, at_least=10) is None
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=setup - 5, at_least=1) is None
    # with a budget and no epoch time measured nothing can be planned
    assert budget.refit_epochs(100, seconds_per_epoch=None, seconds_left=300, at_least=1) is None


def test_with_a_length_check_the_refit_is_as_long_as_both_fit():
    """--ship auto: 3 folds on 2 workers, each fold on 2/3 of the sequences, cost 3 x 2/3 / 2 = 1 refit
    epoch per epoch of length, and a second setup."""
    setup = budget.REFIT_SETUP_SECONDS
    factor = budget.check_cost(3, workers=2, fraction=2 / 3)
    assert factor == pytest.approx(1.0)
    assert budget.check_cost(3, workers=1, fraction=2 / 3) == pytest.approx(2)  # one at a time
    assert budget.check_cost(3, workers=8, fraction=2 / 3) == pytest.approx(2 / 3)  # all at once
    assert budget.check_cost(0, workers=2, fraction=0.5) == 0
    # 2 s an epoch: 140 s after two setups hold 35 epochs of check (70 s) and refit (70 s)
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=2 * setup + 140, at_least=10, check=factor) == 35
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=2 * setup + 35, at_least=10, check=factor) is None
    assert budget.refit_epochs(100, seconds_per_epoch=2.0, seconds_left=None, at_least=10, check=factor) == 100


def test_halving_rungs_give_the_best_many_more_epochs():
    h = halving_settings(100)
    assert (h.min_resource, h.max_resource, h.reduction_factor) == (5, 100, 3)
    assert h.rungs() == [5, 15, 45, 100]
    assert h.brackets() == 3
    # the first rung waits for the trial's warm-up, and never passes the cap
    assert halving_settings(100, warmup=20).min_resource == 20
    assert halving_settings(3).rungs() == [3]


def test_no_trial_starts_that_cannot_reach_its_first_rung():
    d = Deadline.start(100, retrain_top=0, now=0.0)  # search ends at 85
    assert can_start_trial(d, epoch_seconds=[], setup_seconds=0, first_rung=5, now=80)  # nothing measured yet
    assert can_start_trial(d, epoch_seconds=[1.0, 2.0, 2.5], setup_seconds=2, first_rung=5, now=70)  # 14.5 <= 15
    assert not can_start_trial(d, epoch_seconds=[1.0, 2.0, 2.0], setup_seconds=2, first_rung=5, now=75)  # 12 > 10
    # the slowest epoch seen counts (the next trial may be the slow architecture)
    assert not can_start_trial(d, epoch_seconds=[1.0, 1.0, 9.0], setup_seconds=2, first_rung=5, now=70)
    assert not can_start_trial(d, epoch_seconds=[], setup_seconds=0, first_rung=5, now=86)  # past the search


def test_process_started_is_before_now():
    import time

    assert time.time() - 3600 < budget.process_started() <= time.time()


def test_the_search_is_done_when_no_new_trial_fits_before_its_end():
    """The search loop stops when a new trial could not reach its first rung in the time left; the
    re-training must then start too (it once waited for the search's end and was skipped: the
    README's demo at --budget 6m shipped without it)."""
    import time
    from types import SimpleNamespace

    import optuna

    from objectives.records import RESULT_ATTR
    from sweep.prepared import OpenSweep

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={RESULT_ATTR: {"epochs_run": 5, "train_seconds": 50.0}}))
    now = time.time()
    prep = SimpleNamespace(cfg=SimpleNamespace(n_trials=10_000))

    def opened(search_left: float) -> OpenSweep:
        deadline = budget.Deadline(started_at=now - 100, search_ends_at=now + search_left, ends_at=now + search_left + 60)
        return OpenSweep(prep=prep, study=study, resumed=False, tracker=None, parent_run_id="r", deadline=deadline)

    assert not opened(search_left=120).search_done()  # 5 epochs of 10 s fit in 120 s
    assert opened(search_left=30).search_done()  # they do not fit in 30 s: the loop has stopped
    assert opened(search_left=-1).search_done()
    no_budget = OpenSweep(prep=prep, study=study, resumed=False, tracker=None, parent_run_id="r")
    assert not no_budget.search_done()  # 1 of 10,000 trials


@pytest.mark.parametrize("attrs, target", [
    ({"n_trials": 20, "budget": None}, (20, None)),
    ({"n_trials": budget.BUDGET_MAX_TRIALS, "budget": 360.0}, (None, 360.0)),  # --budget alone: no trial limit
    ({"n_trials": 30, "budget": 600.0}, (30, 600.0)),  # --n-trials and --budget: whichever comes first
    # studies stored before the budget attribute: the deadline the run left tells it
    ({"n_trials": budget.BUDGET_MAX_TRIALS,
      "deadline": {"started_at": 100.0, "search_ends_at": 350.0, "ends_at": 460.0}}, (None, 360.0)),
    ({"n_trials": 12, "deadline": None}, (12, None)),
    ({}, (None, None)),
])
def test_a_study_tells_the_latest_runs_target(attrs, target):
    from sweep.study import run_target

    assert run_target(attrs) == target


def test_the_read_commands_show_the_budget_not_a_trial_limit_nobody_set():
    from sweep.display import finished_text, target_text

    assert finished_text(14, None, 360.0) == "14 trials finished (time budget 6m00s a run)"
    assert finished_text(14, 20, None) == "14 of 20 trials finished"
    assert finished_text(3, 30, 600.0) == "3 of 30 trials finished (time budget 10m00s a run)"
    clock = {"started_at": 0.0, "search_ends_at": 250.0, "ends_at": 360.0}
    assert finished_text(2, None, 360.0, clock, now=120.0) == (
        "2 trials finished (time budget 6m00s a run; now: search 2m10s left)")
    assert finished_text(5, None, 360.0, clock, now=300.0) == (
        "5 trials finished (time budget 6m00s a run; now: 1m00s left in the budget)")
    assert finished_text(5, None, 360.0, clock, now=400.0) == "5 trials finished (time budget 6m00s a run)"
    ended = {**clock, "ended_at": 290.0}  # the run ended before its deadline
    assert finished_text(5, None, 360.0, ended, now=300.0) == "5 trials finished (time budget 6m00s a run)"
    assert "now: starting" in finished_text(0, None, 360.0, {"pending": True})
    assert (target_text(None, 360.0), target_text(30, 600.0), target_text(20, None), target_text(None, None)) == (
        "6m00s budget", "30 or 10m00s budget", "20", "-")


def test_a_time_boxed_run_is_over_when_its_deadline_passed_and_nothing_runs():
    """`sweep sync` ends a study's MLflow run left open only when the run is over by its own limits."""
    from sweep.study import run_done

    timed = {"n_trials": budget.BUDGET_MAX_TRIALS, "budget": 60.0, "deadline": {"started_at": 0.0, "ends_at": 60.0}}
    assert run_done(timed, finished=3, running=0, now=61.0)
    assert not run_done(timed, finished=3, running=1, now=61.0)  # a worker still trains
    assert not run_done(timed, finished=3, running=0, now=59.0)  # the budget is not spent
    assert not run_done({**timed, "deadline": {"pending": True}}, finished=3, running=0, now=61.0)
    counted = {"n_trials": 5, "budget": None, "deadline": None}
    assert run_done(counted, finished=5, running=0, now=0.0)
    assert not run_done(counted, finished=4, running=0, now=1e12)
    assert run_done({**timed, "n_trials": 3}, finished=3, running=1, now=0.0)  # --n-trials came first
