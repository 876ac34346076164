"""The exact-N loop with other workers on the same study, without TensorFlow (a toy objective).

Other workers are simulated in the same storage: a RUNNING trial is a trial another worker is
training; a RUNNING trial whose heartbeat stopped is a worker that died.
"""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from optuna.distributions import FloatDistribution

from sweep.records import trial_records
from sweep.loop import SURPLUS, run_trials, slot_is_free
from sweep.storage import open_storage

DIST = {"x": FloatDistribution(0.0, 1.0)}


def toy(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


@pytest.fixture
def study(tmp_path, monkeypatch) -> optuna.Study:
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")
    storage = open_storage(f"sqlite:///{tmp_path}/slots.db")
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def _complete(study: optuna.Study, k: int) -> None:
    for i in range(k):
        study.add_trial(create_trial(params={"x": i / 10}, distributions=DIST, value=i / 10))


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_a_slot_is_free_while_fewer_than_n_lower_trials_are_live(study):
    _complete(study, 2)                                   # trials 0, 1
    running = study.ask()                                 # trial 2: another worker's
    study.add_trial(create_trial(params={"x": 0.5}, distributions=DIST, state=TrialState.FAIL))  # 3 (does not count)
    assert running.number == 2
    assert slot_is_free(study, 2, n_trials=3)             # 2 live trials below it
    assert not slot_is_free(study, 4, n_trials=3)         # 0, 1, 2 take the slots; 3 failed
    assert slot_is_free(study, 4, n_trials=4)
    study.tell(running, state=TrialState.FAIL)
    assert slot_is_free(study, 4, n_trials=3)             # the failed trial gave its slot back


def test_a_worker_waits_for_the_last_slot_and_takes_it_back_if_that_trial_fails(study):
    _complete(study, 2)
    other = study.ask()                                   # the last of 3 slots, held elsewhere
    waits: list[int] = []
    result: dict[str, int] = {}
    worker = threading.Thread(target=lambda: result.update(ran=run_trials(
        study, toy, n_trials=3, on_wait=waits.append, poll_seconds=0.05)))
    worker.start()
    time.sleep(0.5)
    assert waits == [1] and _states(study).count("COMPLETE") == 2, "it must wait, not run a 4th trial"
    study.tell(other, state=TrialState.FAIL)              # the other worker gave up its trial
    worker.join(timeout=10)
    assert not worker.is_alive() and result["ran"] == 1
    assert _states(study).count("COMPLETE") == 3 and "RUNNING" not in _states(study)


def test_a_worker_that_finds_the_study_full_runs_nothing(study):
    _complete(study, 3)
    assert run_trials(study, toy, n_trials=3) == 0
    assert len(study.trials) == 3


def test_a_dead_workers_trial_is_reaped_and_retried_with_its_parameters(study):
    _complete(study, 1)
    dead = study.ask()
    x = dead.suggest_float("x", 0.0, 1.0)
    dead.set_user_attr("worker", "node-3:4121")            # what the objective records: host:pid
    study._storage.record_heartbeat(dead._trial_id)       # it was alive once, then stopped
    reaped: list[list[int]] = []
    ran = run_trials(study, toy, n_trials=2, on_reap=reaped.append, poll_seconds=0.1)
    assert ran == 1 and reaped == [[dead.number]]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == {"x": x}
    records = {r.number: r for r in trial_records(study)}
    assert records[dead.number].reason == f"no heartbeat: its worker (node-3:4121) died; retried as trial {retry.number}"
    assert records[dead.number].worker == "node-3:4121" and records[dead.number].to_dict()["worker"] == "node-3:4121"
    assert records[retry.number].retry_of == dead.number


def test_a_surplus_trial_never_reaches_the_objective_and_is_not_a_failure(study, monkeypatch):
    """Simulate losing the race for the last slot: the guard's count already sees N live trials."""
    import sweep.loop as study_mod

    _complete(study, 1)
    calls: list[int] = []
    real = study_mod.slot_is_free
    verdicts = iter([False, False, False, True])       # lose the race 3 times (> MAX_CONSECUTIVE_FAILURES), then win
    monkeypatch.setattr(study_mod, "slot_is_free", lambda s, n, k: next(verdicts) and real(s, n, k))

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return toy(trial)

    assert run_trials(study, objective, n_trials=2) == 1
    surplus = [t for t in study.get_trials() if t.user_attrs.get("fail_reason") == SURPLUS]
    assert len(surplus) == 3 and all(t.state == TrialState.FAIL for t in surplus)
    assert calls == [4] and _states(study).count("COMPLETE") == 2
    assert all(r.surplus for r in trial_records(study) if r.number in {t.number for t in surplus})


def test_storage_timing_counts_calls_and_changes_no_result(tmp_path):
    """SWEEP_STORAGE_TIMING (used by benchmarks/scaling.py) wraps the storage; results stay exact."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import optuna\n"
        "from sweep.loop import run_trials\nfrom sweep.storage import open_storage\n"
        f"s = optuna.create_study(study_name='t', storage=open_storage('sqlite:///{tmp_path}/t.db'), direction='maximize')\n"
        "run_trials(s, lambda t: t.suggest_float('x', 0, 1), n_trials=3)\n"
        "print(len(s.trials), s.best_trial.number, s.best_value == max(t.value for t in s.trials))\n"
    )
    env = {**os.environ, "SWEEP_STORAGE_TIMING": str(tmp_path / "timing.jsonl")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    n, _, best_ok = result.stdout.split()
    assert n == "3" and best_ok == "True"
    [line] = [json.loads(x) for x in (tmp_path / "timing.jsonl").read_text().splitlines()]
    assert line["calls"] == sum(c for c, _ in line["by_method"].values()) > 0
    assert line["storage_seconds"] > 0 and line["process_seconds"] > 0  # heartbeats overlap: no upper bound
    assert "_create_new_trial" in line["by_method"] and "set_trial_state_values" in line["by_method"]


def test_diverged_trials_do_not_stop_the_search_but_endless_divergence_does(study):
    """A NaN loss fails the trial with reason nan_loss; the search goes on past 3 of them."""
    from sweep.errors import StudyError
    from sweep.loop import MAX_CONSECUTIVE_DIVERGED

    plan = iter([True] * 5 + [False] * 2)

    def sometimes_diverges(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if next(plan):
            trial.set_user_attr("fail_reason", "nan_loss: training loss became nan at epoch 2")
            raise RuntimeError("diverged")
        return x

    assert run_trials(study, sometimes_diverges, n_trials=2) == 7
    assert _states(study) == ["FAIL"] * 5 + ["COMPLETE"] * 2

    def always_diverges(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("fail_reason", "nan_loss: training loss became inf at epoch 1")
        raise RuntimeError("diverged")

    with pytest.raises(StudyError, match="trials in a row diverged"):
        run_trials(study, always_diverges, n_trials=3)
    assert _states(study).count("FAIL") == 5 + MAX_CONSECUTIVE_DIVERGED


def test_other_failures_still_stop_after_three_in_a_row(study):
    from sweep.errors import StudyError

    def broken(trial: optuna.Trial) -> float:
        raise ValueError("boom")

    with pytest.raises(StudyError, match="3 trials in a row failed"):
        run_trials(study, broken, n_trials=2)


def test_a_trial_reaped_while_its_worker_still_ran_it_is_dropped_not_a_crash(study):
    """A stalled worker (heartbeats late past the grace period) finds its trial failed by another
    worker's check when it ends it; Optuna raises "Cannot tell a FAIL trial". The loop goes on and
    the study still ends with exactly N."""
    calls = []

    def stalled_once(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if not calls:
            # What the other worker's heartbeat check does to this trial meanwhile.
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        calls.append(trial.number)
        return x

    ran = run_trials(study, stalled_once, n_trials=2, poll_seconds=0.1)
    assert ran == 2 and len(calls) == 3
    assert _states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
