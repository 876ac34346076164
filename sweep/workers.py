"""`sweep run --workers N`: N worker processes on this machine, one study, one coordinator.

The coordinator creates the study and its MLflow parent run once (Optuna 5.0 crashes when
several processes create them at once), then starts N ``sweep worker`` processes, the very
command a user runs on other machines. Each worker gets its share of the cores for TensorFlow.
The coordinator trains nothing: it polls the study to show progress, forwards Ctrl-C, and
writes the study summary when the workers are done.

The storage URL reaches the workers through the environment (``SWEEP_STORAGE``), never the
command line, so its password does not show in ``ps``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sweep import gpus
from sweep.errors import StudyError
from sweep.budget import STARTUP_SECONDS
from sweep.records import SURPLUS, BestTrial, RetrainEntry, TrialRecord, best_of, trial_records
from sweep.clock import READY_DIR, set_deadline
from sweep.config import threads_per_worker
from sweep.prepared import OpenSweep
from sweep.retrain import retrain_top
from sweep.runner import SweepResult, finish, sweep_result
from sweep.loop import count_finished

POLL_SECONDS = 2.0  # progress polling; each poll reads the study (~20 ms of database work)
STOP_GRACE_SECONDS = 120


def worker_command(opened: OpenSweep, *, threads: int) -> list[str]:
    prep = opened.prep
    # The study name goes after "--": a name like "-x" must not be read as an option.
    return [sys.executable, "-m", "sweep", "worker", "--data", str(Path(prep.data.source).resolve()),
            "--threads", str(threads), "--quiet", "--", prep.name]


def worker_launches(opened: OpenSweep, *, workers: int, threads: int,
                    env: dict[str, str]) -> list[tuple[list[str], dict[str, str]]]:
    """The command and environment of each local worker: on a machine with GPUs, its own device
    (``CUDA_VISIBLE_DEVICES``, round-robin; ``SWEEP_GPUS`` overrides, see sweep/gpus.py)."""
    command = worker_command(opened, threads=threads)
    return [(command, worker_env) for worker_env in gpus.worker_envs(env, workers, gpus.detect_gpus())]


def run_workers(
    opened: OpenSweep, *, workers: int,
    on_start: Callable[[int, int], None] | None = None,
    on_trial_end: Callable[[TrialRecord, BestTrial | None], None] | None = None,
    on_retrain: Callable[[RetrainEntry | None], None] | None = None,
) -> SweepResult:
    """Run the opened study with ``workers`` local worker processes; return when it holds N trials,
    then re-train its top-k here.

    Raises:
        StudyError: every worker exited before the study was complete (their last error lines).
        KeyboardInterrupt: after Ctrl-C was forwarded and the workers stopped.
    """
    prep, study = opened.prep, opened.study
    cfg = prep.cfg
    threads = cfg.threads or threads_per_worker(workers)
    env = {**os.environ, "SWEEP_STORAGE": cfg.storage, "MLFLOW_TRACKING_URI": opened.tracker.tracking_uri,
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
           "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0")}
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    before = set(seen)
    if on_start is not None:
        on_start(count_finished(study), cfg.n_trials)
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(workers)]
    ready = tempfile.TemporaryDirectory(prefix="sweep-ready-")
    env[READY_DIR] = ready.name
    procs = [
        subprocess.Popen(command, env=worker_env, stdout=subprocess.DEVNULL, stderr=log,
                         start_new_session=True)  # Ctrl-C reaches the coordinator, which forwards it once
        for log, (command, worker_env) in zip(logs, worker_launches(opened, workers=workers, threads=threads, env=env))
    ]
    status = "FAILED"
    try:
        if cfg.budget is not None and opened.deadline is None:
            _start_clock_when_ready(opened, procs, Path(ready.name))
        deadline = opened.deadline
        while True:
            seen |= _report_new(study, seen, on_trial_end)
            if all(p.poll() is not None for p in procs):
                break
            if deadline is not None and deadline.retrain_left() <= 0:
                # A worker still in an epoch when the re-training's time is gone too: stop it (its
                # trial fails as interrupted) so the command ends within its budget.
                _stop(procs, grace=max(1.0, deadline.left() / 2))
                _fail_orphans(study)
                break
            time.sleep(POLL_SECONDS)
        seen |= _report_new(study, seen, on_trial_end)
        if not opened.search_done():
            raise StudyError(f"all {workers} workers stopped before the study was complete: {_last_errors(procs, logs)}")
        retrain_top(opened, on_retrain=on_retrain)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        _stop(procs)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        ready.cleanup()
        records, best = finish(opened, status=status)
    ran = sum(1 for r in records if r.number in seen - before and not r.surplus)
    return sweep_result(opened, ran=ran, records=records, best=best)


def _start_clock_when_ready(opened: OpenSweep, procs: list[subprocess.Popen], ready: Path) -> None:
    """Start the time budget once every worker has loaded TensorFlow and joined (each leaves a file
    in ``ready``), or when the start-up minute is over, whichever is first."""
    started = opened.started if opened.started is not None else time.time()
    while (len(list(ready.iterdir())) < len(procs) and time.time() < started + STARTUP_SECONDS
           and any(p.poll() is None for p in procs)):
        time.sleep(0.2)
    set_deadline(opened, now=min(time.time(), started + STARTUP_SECONDS))


def _report_new(study: Any, seen: set[int], on_trial_end: Callable | None) -> set[int]:
    new = [t for t in study.get_trials(deepcopy=False) if t.number not in seen and t.state.is_finished()]
    shown = [t.number for t in new if t.user_attrs.get("fail_reason") != SURPLUS]
    if on_trial_end is not None and shown:
        records, best = {r.number: r for r in trial_records(study)}, best_of(study)  # once per poll
        for number in shown:
            on_trial_end(records[number], best)
    return {t.number for t in new}


def _stop(procs: list[subprocess.Popen], *, grace: float = STOP_GRACE_SECONDS) -> None:
    """Forward one SIGINT to every worker and wait (up to ``grace`` s) for them to fail their trials cleanly."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        while p.poll() is None and time.monotonic() < deadline:
            try:
                p.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, kill (heartbeats reap their trials)
                deadline = 0
        if p.poll() is None:
            p.kill()


def _fail_orphans(study: Any) -> None:
    """Fail the trials left RUNNING by workers that had to be killed at the end of a time budget
    (their heartbeats would only be missed after the grace period, past the budget)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted: the time budget ended mid-epoch")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 - it finished or failed meanwhile
            pass


def _last_errors(procs: list[subprocess.Popen], logs: list[Any]) -> str:
    lines = []
    for i, (p, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        text = [line.strip() for line in log.read().splitlines() if line.strip()]
        last = text[-1] if text else "no message"
        lines.append(f"worker {i + 1} exit {p.returncode}: {last}")
    return "; ".join(lines)
