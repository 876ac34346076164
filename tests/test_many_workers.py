"""The many-workers benchmark's machinery at tiny scale (4 workers, 1 kill -9), so it cannot rot,
and its exactly-N check against hand-made studies, so it cannot pass a broken run."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    saved = os.environ.get("MLFLOW_TRACKING_URI")  # benchmarks/_common.py drops it on import
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("many_workers")
    finally:
        sys.path.remove(str(BENCHMARKS))
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _trial(number, state, **system_attrs):
    import optuna
    from optuna.distributions import FloatDistribution

    value = 0.5 if state == optuna.trial.TrialState.COMPLETE else None
    trial = optuna.trial.create_trial(state=state, value=value, params={"x": 0.1},
                                      distributions={"x": FloatDistribution(0, 1)}, system_attrs=system_attrs)
    trial.number = number
    return trial


def test_verify_passes_a_run_where_the_killed_trial_was_retried_once(bench):
    from optuna.trial import TrialState as S

    trials = [_trial(0, S.COMPLETE), _trial(1, S.FAIL), _trial(2, S.COMPLETE),
              _trial(3, S.COMPLETE, failed_trial=1, retry_history=[1])]
    got = bench.verify(trials, 3, killed={1: 1234})
    assert got["exact"] and (got["lost"], got["duplicated"], got["killed_trials_reaped"]) == (0, 0, 1)


@pytest.mark.parametrize("case", ["retried twice", "never retried", "one short", "left running", "one too many"])
def test_verify_catches_every_broken_promise(bench, case):
    from optuna.trial import TrialState as S

    trials = [_trial(0, S.COMPLETE), _trial(1, S.FAIL), _trial(2, S.COMPLETE),
              _trial(3, S.COMPLETE, failed_trial=1, retry_history=[1])]
    n = 3
    if case == "retried twice":
        trials.append(_trial(4, S.COMPLETE, failed_trial=1, retry_history=[1]))
        n = 4
    elif case == "never retried":
        trials[3] = _trial(3, S.COMPLETE)
    elif case == "one short":
        n = 4
    elif case == "left running":
        trials.append(_trial(4, S.RUNNING))
    else:
        trials.append(_trial(4, S.PRUNED))
    got = bench.verify(trials, n, killed={1: 1234})
    assert not got["exact"]
    assert got["lost"] + got["duplicated"] + got["running"] >= 1


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["direct", "transaction"])
def test_tiny_run_finishes_exactly_n_with_a_worker_killed_mid_trial(bench, mode, monkeypatch):
    base = os.environ.get("SWEEP_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set")
    if mode != "direct" and importlib.import_module("_pgbouncer").binary() is None:
        pytest.skip("pgbouncer is not installed (.ci/run installs it)")
    monkeypatch.setattr(bench, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(bench, "GRACE_PERIOD", 3)
    row = bench.run_config(base_url=base, mode=mode, workers=4, n_trials=10, kills=1, seconds=1.0, epochs=2,
                           bouncer_pool=5, timeout=120, quiet=True)
    assert not row["timed_out"]
    assert (row["finished"], row["running"], row["waiting"], row["lost"], row["duplicated"]) == (10, 0, 0, 0, 0)
    assert row["kills"] == 1 and row["killed_trials_reaped"] + row["killed_trials_finished_before_the_kill"] == 1
    assert row["storage_calls"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert row["server_connections_max"] >= 1
    if mode == "transaction":
        assert row["server_connections_max"] <= 5 and row["client_connections_max"] >= 4
