"""Optuna storage from a URL, create-or-resume with identity checks, and the exact-N trial loop."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import sqlite3
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep import dbpool, interrupt, sqlite
from sweep.config import SweepConfig
from sweep.errors import StorageError, StudyError, TrackingError
from sweep.preflight import check_writable_sqlite
from sweep.redact import mask_url, redact
from sweep.storage_retry import RetryingRDBStorage

_logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that hold one of the study's N slots: finished, being run, or queued for a retry.
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_CONSECUTIVE_FAILURES = 3
MAX_CONSECUTIVE_DIVERGED = 10  # nan_loss failures: the search goes on, up to this many in a row
# A worker's heartbeat every HEARTBEAT_INTERVAL s; a trial without one for GRACE_PERIOD s is
# failed and retried with the same parameters. The environment overrides both (tests use ~1 s).
HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60
POLL_SECONDS = 2.0
SURPLUS = "surplus: another worker took the study's last slot (this trial never trained)"

optuna.logging.set_verbosity(optuna.logging.ERROR)
# Heartbeats and stale-trial retries are marked experimental in Optuna 5.0; we rely on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def check_url(url: str) -> None:
    """Raise StorageError if ``url`` is not a usable database URL (no connection is made).

    For SQLite it also checks that the database's folder exists.
    """
    parsed = _parse_url(url)
    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        raise StorageError(
            f"storage {mask_url(url)}: folder {path.parent} does not exist; create it first"
        )


def _parse_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL; use e.g. sqlite:///sweep.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    if parsed.drivername == "postgresql" or parsed.drivername == "postgres":
        # Bare postgresql:// means psycopg2 to SQLAlchemy; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database '{parsed.get_backend_name()}'; "
            "use sqlite:///FILE or postgresql+psycopg://..."
        )
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in-memory SQLite)."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _heartbeat_settings() -> tuple[int, int]:
    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise StorageError(f"{name}={raw!r}: must be a whole number of seconds >= 1")
        return value

    interval = read("SWEEP_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)
    grace = read("SWEEP_GRACE_PERIOD", GRACE_PERIOD)
    if grace <= interval:
        raise StorageError(
            f"SWEEP_GRACE_PERIOD ({grace}) must be longer than SWEEP_HEARTBEAT_INTERVAL ({interval}), "
            "or live trials would be reaped"
        )
    return interval, grace


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialize first-time creation (tables, study) across processes sharing ``url``.

    Optuna 5.0 crashes when several processes create its tables or one study at once ("table
    already exists", unique violations). PostgreSQL: a transaction-level advisory lock, held by a
    transaction left open for the block: it cannot outlive its holder, also behind pgbouncer in
    transaction mode (a session-level lock would stay on a pooled server connection). Waiters poll
    with ``pg_try_advisory_xact_lock`` and end their transaction between tries: a blocked waiter
    would hold one of pgbouncer's server connections, and as many waiters as the pool has
    connections would starve the holder until pgbouncer's query_wait_timeout (120 s; seen with a
    small pool). Optuna's storage set-up needs 2 more connections beside the lock's: give pgbouncer
    a pool of at least 3 per database. SQLite: a file lock in the temp
    folder (all SQLite users of one file are on one machine); other databases: none.
    """
    parsed = _parse_url(url)
    key = int(hashlib.sha256(b"lstm-sweep:create").hexdigest()[:15], 16)
    if parsed.get_backend_name() == "postgresql":
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(parsed, poolclass=NullPool, connect_args=dbpool.connect_args())
        try:
            with engine.connect() as conn:
                pause = 0.02
                while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
                    conn.rollback()
                    time.sleep(pause * (0.5 + random.random()))  # jittered, so waiters do not poll in step
                    pause = min(pause * 1.5, 0.5)
                try:
                    yield
                finally:
                    conn.rollback()  # ends the transaction: releases the lock
        finally:
            engine.dispose()
        return
    path = sqlite_path(url)
    if path is None:
        yield
        return
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"lstm-sweep-{digest}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _schema_is_complete(parsed: Any) -> bool:
    """Whether Optuna's tables on a server database are fully set up (its last step, the alembic
    stamp, is done), so opening the storage writes nothing and needs no creation lock."""
    if parsed.get_backend_name() not in ("postgresql", "mysql"):
        return False
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    connect_args = dbpool.connect_args() if parsed.get_backend_name() == "postgresql" else {}
    engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM alembic_version LIMIT 1")).first() is not None
    except Exception:  # noqa: BLE001 - no table yet (or no server: open_storage reports that)
        return False
    finally:
        engine.dispose()


def open_storage(url: str, *, must_exist: bool = False, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``, with heartbeats so a dead worker's trial is reaped.

    Args:
        url: any SQLAlchemy URL Optuna accepts.
        must_exist: for read-only commands: refuse to create a new SQLite file.
        heartbeat: enable trial heartbeats (for workers; readers don't need them).

    Raises:
        StorageError: malformed URL, missing SQLite folder/file, or an unreachable database.
    """
    parsed = _parse_url(url)
    masked = mask_url(parsed.render_as_string(hide_password=False))
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            if must_exist and not path.exists():
                raise StudyError(
                    f"no studies yet: {masked} does not exist; start one with `sweep run DATA` "
                    "or point --storage at an existing database"
                )
            check_url(url)
        engine_kwargs["connect_args"] = {"timeout": 60}
        sqlite.tune_connections()
        if path is not None and not must_exist:
            try:
                check_writable_sqlite(path, what="storage", shown=masked, fix="point --storage at another file")
            except TrackingError as exc:
                raise StorageError(str(exc)) from None
            from sweep.faults import check_writable

            problem = check_writable(path, "storage")  # a full disk, before the first write
            if problem is not None:
                raise StorageError(problem)
            try:
                sqlite.use_wal(path)
            except sqlite3.Error as exc:
                from sweep.faults import describe_fault

                raise StorageError(f"storage {masked}: {describe_fault(exc) or exc}; check the file, or point --storage "
                                   "at another one") from None
    elif parsed.get_backend_name() == "postgresql":
        engine_kwargs = dbpool.engine_kwargs()  # pool sizes, no server-side prepared statements (pgbouncer)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        interval, grace = _heartbeat_settings()
        kwargs = dict(
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    plain_url = parsed.render_as_string(hide_password=False)
    try:
        # The lock serializes first-time creation only: 60 workers starting at once on a made
        # database would otherwise queue for it one storage set-up (~0.1-5 s) at a time.
        with contextlib.nullcontext() if _schema_is_complete(parsed) else creation_lock(plain_url):
            # Lost connections and locked files are retried for up to a minute (sweep/storage_retry.py).
            storage = RetryingRDBStorage(plain_url, engine_kwargs=engine_kwargs, **kwargs)
        if os.environ.get("SWEEP_STORAGE_TIMING"):
            _time_storage(storage, Path(os.environ["SWEEP_STORAGE_TIMING"]))
        return storage
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors vary by database
        from sweep.faults import describe_fault

        fault = describe_fault(exc)
        if fault is not None and not fault.startswith("a server"):  # a full disk, a read-only file: say so
            raise StorageError(f"storage {masked}: {fault}") from None
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = redact(text.splitlines()[0] if text else type(exc).__name__, url, plain_url)
        raise StorageError(
            f"cannot open storage {masked}: {reason}; check the host, port, database name and credentials"
        ) from None


def _time_storage(storage: optuna.storages.RDBStorage, out: Path) -> None:
    """Time every call into the storage; at exit append one JSON line to ``out``.

    Set ``SWEEP_STORAGE_TIMING=FILE`` to see what the database costs a worker (used by
    benchmarks/scaling.py): ``{"pid", "storage_seconds", "calls", "process_seconds"}``. Heartbeat
    calls from the background thread count too.
    """
    import atexit
    import functools
    import threading

    lock = threading.Lock()
    stats: dict[str, Any] = {"storage_seconds": 0.0, "calls": 0, "by_method": {}}
    started = time.monotonic()

    local = threading.local()

    def _add(name: str, spent: float) -> None:
        with lock:
            stats["storage_seconds"] += spent
            stats["calls"] += 1
            calls, seconds = stats["by_method"].get(name, (0, 0.0))
            stats["by_method"][name] = (calls + 1, round(seconds + spent, 4))

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                local.depth = depth
                if not depth:  # a call made by another storage call is already counted
                    _add(fn.__name__, time.perf_counter() - t0)
        return wrapper

    for name in dir(type(storage)):  # the storage and heartbeat APIs, and the private calls Optuna's cache makes
        if not name.startswith("__") and callable(getattr(storage, name, None)):
            setattr(storage, name, timed(getattr(storage, name)))

    def report() -> None:
        line = {"pid": os.getpid(), **stats, "process_seconds": time.monotonic() - started}
        with out.open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    atexit.register(report)


@dataclass(frozen=True)
class StudyInfo:
    name: str
    n_trials_target: int | None
    finished: int
    complete: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    data: str | None


def list_studies(storage: optuna.storages.BaseStorage) -> list[StudyInfo]:
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = _state_counts(study)
        out.append(
            StudyInfo(
                name=summary.study_name,
                n_trials_target=summary.user_attrs.get("n_trials"),
                finished=counts[TrialState.COMPLETE] + counts[TrialState.PRUNED],
                complete=counts[TrialState.COMPLETE],
                pruned=counts[TrialState.PRUNED],
                failed=counts[TrialState.FAIL],
                running=counts[TrialState.RUNNING],
                best_value=summary.best_trial.value if summary.best_trial else None,
                data=summary.user_attrs.get("data_path"),
            )
        )
    return out


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load an existing study by name.

    Raises:
        StudyError: naming the studies that do exist.
    """
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        known = f"known studies: {', '.join(names)}" if names else "this storage has no studies yet"
        raise StudyError(f"no study named {name!r} ({known}); check --study/--storage") from None


def _state_counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def make_sampler(seed: int, n_existing: int) -> optuna.samplers.BaseSampler:
    # Offset the seed by the trials already run, so a resumed study does not replay the random
    # start-up proposals it already tried.
    return optuna.samplers.TPESampler(seed=seed + n_existing)


def make_pruner(name: str, *, epochs: int = 15) -> optuna.pruners.BasePruner:
    """The study's pruner; ``hyperband`` runs successive halving over ``epochs`` (sweep.budget)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        from sweep.budget import halving_settings

        h = halving_settings(epochs)
        return optuna.pruners.HyperbandPruner(min_resource=h.min_resource, max_resource=h.max_resource,
                                              reduction_factor=h.reduction_factor)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)


def create_or_resume(
    cfg: SweepConfig, *, name: str, storage: optuna.storages.BaseStorage, identity: dict[str, Any],
    allow_changes: bool = False, first_trials: Sequence[dict[str, Any]] = (),
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if its stored identity (data + space + settings) matches.

    A new study gets ``first_trials`` (parameters) queued as trials 0, 1, ..., tagged ``baseline``.

    Creation is serialized across processes (:func:`creation_lock`), so several ``sweep run``
    processes started at once on a fresh database make one study, not a crash.

    Returns:
        The study and whether it already existed.

    Raises:
        StudyError: the study exists with a different identity and ``allow_changes`` is false.
    """
    url = getattr(storage, "url", None)
    with creation_lock(url) if url else contextlib.nullcontext():
        existing = None
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            pass
        if existing is not None:
            _check_identity(name, existing.user_attrs, identity, allow_changes=allow_changes)
        n_existing = len(existing.trials) if existing is not None else 0
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True,
            sampler=make_sampler(cfg.seed, n_existing), pruner=make_pruner(cfg.pruner, epochs=cfg.train.epochs),
        )
        if existing is None:
            for key, value in identity.items():
                study.set_user_attr(key, value)
            # What optuna-dashboard and plots call the objective (else "Objective 0").
            study.set_metric_names(["val score (balanced accuracy - collapse penalty)"])
            for params in first_trials:
                study.enqueue_trial(params, user_attrs={"baseline": True})
        study.set_user_attr("n_trials", cfg.n_trials)
        study.set_user_attr("run_settings", {"pruner": cfg.pruner, "log_models": cfg.log_models,
                                             "adjust_decision": cfg.adjust_decision, "retrain_top": cfg.retrain_top})
    return study, existing is not None


def join_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load a study that ``sweep run`` created, with the sampler and pruner a worker needs.

    Raises:
        StudyError: no such study, or it was not made by lstm-sweep.
    """
    study = load_study(name, storage)
    attrs = study.user_attrs
    if "data_fingerprint" not in attrs or "settings" not in attrs:
        raise StudyError(f"study {name!r} was not created by lstm-sweep; create it with `sweep run DATA --study {name}`")
    seed = int(attrs["settings"].get("seed", 0))
    # Each worker gets its own random stream (pid), so two workers never propose the same start-up trial.
    return optuna.load_study(
        study_name=name, storage=storage,
        sampler=make_sampler(seed, len(study.trials) + os.getpid()),
        pruner=make_pruner(attrs.get("run_settings", {}).get("pruner", "median"),
                           epochs=int(attrs["settings"].get("train", {}).get("epochs", 15))),
    )


def _check_identity(name: str, stored: dict[str, Any], identity: dict[str, Any], *, allow_changes: bool) -> None:
    if "data_fingerprint" not in stored:
        raise StudyError(
            f"study {name!r} was not created by lstm-sweep (no data fingerprint); choose another --study name"
        )
    diffs = []
    if stored.get("data_fingerprint") != identity["data_fingerprint"]:
        diffs.append(
            f"data {stored.get('data_path')} ({stored.get('data_fingerprint')}) -> "
            f"{identity['data_path']} ({identity['data_fingerprint']})"
        )
    old, new = stored.get("settings", {}), identity["settings"]
    for key in sorted(set(_flatten(old)) | set(_flatten(new))):
        a, b = _flatten(old).get(key), _flatten(new).get(key)
        if a != b:
            was = "(not in this study: made by an older lstm-sweep)" if key not in _flatten(old) else json.dumps(a)
            diffs.append(f"{key} {was} -> {json.dumps(b)}")
    if diffs and not allow_changes:
        raise StudyError(
            f"study {name!r} was created with different settings ({'; '.join(diffs[:3])}"
            f"{'; ...' if len(diffs) > 3 else ''}); resume with the original ones, pick a new --study name, "
            "or pass --allow-changes to resume anyway"
        )
    if diffs:
        _logger.warning("resuming study %r with changed settings: %s", name, "; ".join(diffs))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class _Surplus(Exception):
    """The trial got a number past the study's N slots (another worker took the last one)."""


def slot_is_free(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether trial ``number`` is within the study's ``n_trials`` slots.

    Slots go by trial number: a trial may run only if fewer than ``n_trials`` trials with a lower
    number are finished, running or queued. Two workers racing for the last slot get different
    numbers from the storage, so exactly one of them wins, on any database.
    """
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < number)
    return ahead < n_trials


def run_trials(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], *, n_trials: int,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
    on_reap: Callable[[list[int]], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
    should_stop: Callable[[optuna.Study], bool] | None = None,
) -> int:
    """Run trials until the study holds ``n_trials`` finished (complete or pruned) ones.

    Safe with any number of workers on one study: a trial runs only in a free slot
    (:func:`slot_is_free`), so the study never ends with more than ``n_trials`` finished trials.
    While the last slots are taken by trials running elsewhere, the worker waits and reaps: if
    one of them stops sending heartbeats it is failed and re-queued with its parameters, and a
    waiting worker runs it.

    A failed trial does not count and is replaced; after ``MAX_CONSECUTIVE_FAILURES`` failures
    in a row in this worker the sweep stops with the last error. A trial whose loss diverged
    (fail reason ``nan_loss``) does not count as such a failure, only ``MAX_CONSECUTIVE_DIVERGED``
    of them in a row stop the sweep. Ctrl-C propagates (the trial is
    marked FAIL).

    Args:
        on_trial_end: after each trial this worker ran.
        on_wait: called with the number of trials running elsewhere when this worker starts waiting.
        on_reap: called with the numbers of trials reaped (failed for lack of heartbeat).
        should_stop: asked before each trial (a time budget: :func:`budget_stop`); True ends the loop.

    Returns:
        The number of trials this call ran.
    """
    ran = 0
    failures = diverged_in_a_row = 0
    mine: dict[str, Any] = {}

    def remember(study_: optuna.Study, trial: FrozenTrial) -> None:
        mine["frozen"] = trial

    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [remember]
    if on_trial_end is not None:
        callbacks.append(lambda s, t: None if t.user_attrs.get("fail_reason") == SURPLUS else on_trial_end(s, t))

    def guarded(trial: optuna.Trial) -> float:
        if not slot_is_free(study, trial.number, n_trials):
            trial.set_user_attr("fail_reason", SURPLUS)
            raise _Surplus(SURPLUS)
        return objective(trial)

    waiting = False
    while True:
        interrupt.check()
        trials = study.get_trials(deepcopy=False)
        finished = sum(1 for t in trials if t.state in FINISHED)
        if finished >= n_trials or (should_stop is not None and should_stop(study)):
            break
        queued = sum(1 for t in trials if t.state == TrialState.WAITING)
        live = sum(1 for t in trials if t.state in LIVE)
        if live >= n_trials and not queued:
            if not waiting and on_wait is not None:
                on_wait(sum(1 for t in trials if t.state == TrialState.RUNNING))
            waiting = True
            reaped = reap_stale_trials(study)
            if reaped and on_reap is not None:
                on_reap(reaped)
            if not reaped:
                _sleep(poll_seconds)
            continue
        waiting = False
        mine.clear()
        try:
            study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
        except (ValueError, AssertionError) as exc:
            if not _reaped_under_us(exc):
                raise
            # This worker's heartbeats were late by more than the grace period (a stalled machine),
            # so another worker failed its trial and queued it again: that retry counts, not this.
            _logger.warning("a trial of this worker was failed by a heartbeat check while it ran (heartbeats "
                            "late by more than the grace period); its retry runs in another worker")
            continue
        last = mine.get("frozen")  # this worker's trial as Optuna closed it (None: it failed before the objective)
        if last is not None and last.user_attrs.get("fail_reason") == SURPLUS:
            continue
        ran += 1
        diverged = last is not None and str(last.user_attrs.get("fail_reason", "")).startswith("nan_loss")
        if diverged:
            # The parameters diverged (a fact about them, not a broken set-up): the search goes on,
            # unless divergence is all it finds.
            diverged_in_a_row += 1
            if diverged_in_a_row >= MAX_CONSECUTIVE_DIVERGED:
                raise StudyError(
                    f"{diverged_in_a_row} trials in a row diverged (training loss NaN or infinite; last: trial "
                    f"{last.number}); narrow learning_rate to lower values or add clipnorm in the search space"
                )
        elif last is None or last.state == TrialState.FAIL:
            diverged_in_a_row = 0
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                reason = last.user_attrs.get("fail_reason", "see the log") if last else "see the log"
                raise StudyError(
                    f"{failures} trials in a row failed (last: {f'trial {last.number}: ' if last else ''}{reason}); "
                    "fix the cause and run the same command again to resume"
                )
        else:
            failures = diverged_in_a_row = 0
    return ran


def _reaped_under_us(exc: BaseException) -> bool:
    """Whether Optuna could not end the trial because another worker had failed it (Optuna 5.0
    raises "Cannot tell a FAIL trial", then an AssertionError from its own logging of it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ValueError) and str(seen).startswith("Cannot tell a FAIL trial"):
            return True
        seen = seen.__context__
    return False


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        interrupt.check()
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail trials whose worker stopped sending heartbeats; returns their numbers."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - after)


def trial_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's user attributes with its ``result`` record (one write per trial) spread in."""
    return {**trial.user_attrs, **trial.user_attrs.get("result", {})}


MODEL_LINKS = ("model_uri", "model_digest", "model_version", "mlflow_run_id")


def model_record(study: optuna.Study, number: int, *, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where trial ``number``'s MLflow run and model are: its own attributes, else the study's
    ``<key>.<number>`` attributes (a model is logged after Optuna stored the trial, which is final)."""
    own = attrs if attrs is not None else {}
    study_attrs = study.user_attrs if any(own.get(k) is None for k in MODEL_LINKS) else {}
    return {k: own.get(k) if own.get(k) is not None else study_attrs.get(f"{k}.{number}") for k in MODEL_LINKS}


def default_study_name(data_path: str | os.PathLike[str]) -> str:
    return Path(data_path).stem


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat record per trial: what `status`, `export` and the history plot show."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    study_attrs = study.user_attrs
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    for t in trials:
        a = trial_attrs(t)
        a.update({k: v for k in MODEL_LINKS if a.get(k) is None and (v := study_attrs.get(f"{k}.{t.number}")) is not None})
        reason = a.get("prune_reason") or a.get("fail_reason")
        if t.state == TrialState.FAIL and reason is None:
            # Failed by a heartbeat check: its worker died (kill -9, lost machine).
            retry = retried_as.get(t.number)
            reason = "no heartbeat: its worker died" + (f"; retried as trial {retry}" if retry is not None else "")
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "score": a.get("val_score", t.value),
            "val_balanced_accuracy": a.get("val_balanced_accuracy"),
            "test_balanced_accuracy": a.get("test_balanced_accuracy"),
            "collapsed": bool(a.get("collapsed", False)),
            # Predicted (nearly) one class: stopped for it, or ended with a collapse penalty.
            "collapse": str(reason or "").startswith("collapse") or (a.get("penalty") or 0) > 0,
            "gradient_trouble": a.get("gradient_trouble"),
            "penalty": a.get("penalty"),
            "top_class_share": a.get("top_class_share"),
            "best_epoch": a.get("best_epoch"),
            "epochs_run": a.get("epochs_run"),
            "stopped": a.get("stopped"),  # "deadline": a time budget's search ended it (still COMPLETE)
            "duration_s": round(duration, 2) if duration is not None else None,
            "params": dict(t.params),
            "mlflow_run_id": a.get("mlflow_run_id"),
            "model_uri": a.get("model_uri"),
            "reason": redact(reason) if reason is not None else None,  # an exception's text may quote a URL
            "surplus": a.get("fail_reason") == SURPLUS,
            "retry_of": t.system_attrs.get("failed_trial"),
            "baseline": bool(t.user_attrs.get("baseline")),  # the recipe queued as a new study's trial 0
        })
    return rows


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest value; of tied values, the lowest validation loss
    (:func:`objectives.metrics.rank_key`); of trials tied on both, the first to finish.

    Optuna ranks by value alone and leaves ties to the database's row order. The first to finish
    of fully tied trials is the one that was a new best when it ended, so it is the one whose model
    was logged and registered as the champion.
    """
    from objectives.metrics import rank_key

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None

    def key(t: FrozenTrial) -> tuple[float, float]:
        return rank_key(t.value, t.user_attrs.get("result", {}).get("val_loss"))

    top = max(key(t) for t in complete)
    return min((t for t in complete if key(t) == top),
               key=lambda t: (t.datetime_complete or t.datetime_start, t.number))


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
    chosen = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.number == choice.get("trial")), None)
    return (chosen, choice) if chosen is not None else (best, None)


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The trial that ships (:func:`champion_trial`: the search's best complete trial unless the
    re-training chose another) with its scores, confusion matrices and model URI (None if none)."""
    best, choice = champion_trial(study)
    if best is None:
        return None
    a = trial_attrs(best)
    a.update(model_record(study, best.number, attrs=a))
    return {
        "study": study.study_name,
        "number": best.number,
        "selection": choice,
        "value": best.value,
        "params": dict(best.params),
        "val_balanced_accuracy": a.get("val_balanced_accuracy"),
        "val_accuracy": a.get("val_accuracy"),
        "val_macro_f1": a.get("val_macro_f1"),
        "penalty": a.get("penalty"),
        "test_balanced_accuracy": a.get("test_balanced_accuracy"),
        "test_accuracy": a.get("test_accuracy"),
        "test_macro_f1": a.get("test_macro_f1"),
        "val_balanced_accuracy_adjusted": a.get("val_balanced_accuracy_adjusted"),
        "test_balanced_accuracy_adjusted": a.get("test_balanced_accuracy_adjusted"),
        "decision_offsets": a.get("decision_offsets"),
        "collapsed": bool(a.get("collapsed", False)),
        "val_confusion": a.get("val_confusion"),
        "test_confusion": a.get("test_confusion"),
        "best_epoch": a.get("best_epoch"),
        "labels": study.user_attrs.get("labels"),
        "mlflow_run_id": a.get("mlflow_run_id"),
        "model_uri": a.get("model_uri"),
        # Stored credential-free since this lane's change; older studies may hold a password.
        "tracking_uri": mask_url(study.user_attrs["tracking_uri"]) if study.user_attrs.get("tracking_uri") else None,
        "data_path": study.user_attrs.get("data_path"),
        "bayes_balanced_accuracy": study.user_attrs.get("bayes_balanced_accuracy"),
        "bayes_balanced_accuracy_test": study.user_attrs.get("bayes_balanced_accuracy_test"),
    }


def budget_stop(deadline: Any) -> Callable[[optuna.Study], bool]:
    """``should_stop`` for :func:`run_trials` under a time budget (a :class:`sweep.budget.Deadline`):
    stop once the search time is over, or when a new trial could not reach its first
    successive-halving rung in the time left, at the epoch times the study's trials measured."""
    from sweep.budget import MIN_RESOURCE, can_start_trial

    def stop(study: optuna.Study) -> bool:
        per_epoch = []
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            result = t.user_attrs.get("result") or {}
            if result.get("epochs_run") and result.get("train_seconds") is not None:
                per_epoch.append(float(result["train_seconds"]) / int(result["epochs_run"]))
        return not can_start_trial(deadline, epoch_seconds=per_epoch, setup_seconds=0.0, first_rung=MIN_RESOURCE)

    return stop
