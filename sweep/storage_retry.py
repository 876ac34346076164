"""Optuna's RDB storage, riding out a lost database connection or a locked SQLite file.

A PostgreSQL restart, a failover or a dropped network link kills every pooled connection; Optuna
turns the next statement's error into a StorageInternalError and the trial (and with it the
sweep) fails. :class:`RetryingRDBStorage` retries each storage call that failed for such a
transient reason with backoff, for up to ``SWEEP_STORAGE_RETRY_SECONDS`` (default 60 s), on a
fresh connection (the engine pings pooled connections before use). Errors that retrying cannot
fix (a full disk, a read-only file, bad data) are raised at once.

Each call is one transaction, so a retry repeats a whole call. A retried call whose first try
did commit is harmless for every call but two: setting a final state (the second try finds the
trial finished: taken as done when the state matches) and creating a trial: if the connection
drops after the database committed the new trial but before it answered, the second try makes
another one and the first is left RUNNING (a window of one round trip, not covered).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

_logger = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
_BACKOFF_START, _BACKOFF_MAX = 0.5, 2.0

# Storage calls worth retrying: every call Optuna (and its cache layer) makes into the RDB storage.
_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param",
    "get_trial_id_from_study_id_trial_number", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_trial", "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id",
    "record_heartbeat", "_get_stale_trial_ids",
)

# PostgreSQL SQLSTATEs of a lost or refused connection, a server going down, or a transaction that
# lost a race (each fixed by trying again).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P0", "40001", "40P01", "55P03")
_TRANSIENT_WORDS = (
    "database is locked", "database table is locked", "server closed the connection", "connection refused",
    "could not connect", "connection is closed", "connection already closed", "terminating connection",
    "the database system is", "ssl syscall", "broken pipe", "connection reset", "connection timed out",
    "consuming input failed", "lost connection", "no connection to the server", "eof detected",
    "connection to server", "server has gone away",
)
# A full disk or a read-only store looks like an operational error too, but waiting does not fix it.
_PERMANENT_WORDS = ("disk is full", "no space left", "could not extend file", "readonly database", "read-only")


def retry_seconds() -> float:
    raw = os.environ.get("SWEEP_STORAGE_RETRY_SECONDS")
    if raw is None:
        return RETRY_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        return RETRY_SECONDS


def root_cause(exc: BaseException) -> BaseException:
    """The driver's error under SQLAlchemy's and Optuna's wrappers."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost/refused database connection or a lock that trying again may fix."""
    from sqlalchemy import exc as sa_exc

    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = getattr(cur, "orig", None) or cur.__cause__
    text = " ".join(str(e) for e in chain).lower()
    if any(word in text for word in _PERMANENT_WORDS):
        return False
    for e in chain:
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
    if not any(isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError, optuna.exceptions.StorageInternalError,
                              sa_exc.DisconnectionError, ConnectionError)) for e in chain):
        return False
    return any(word in text for word in _TRANSIENT_WORDS) or any(
        type(e).__name__ in ("OperationalError", "InterfaceError") and not str(e).strip() for e in chain)


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage whose calls retry transient database errors with backoff (see module doc)."""

    retry_seconds: float = RETRY_SECONDS
    outages: int = 0  # storage calls that needed a retry (for tests and benchmarks)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._retry_local = threading.local()
        self.retry_seconds = retry_seconds()
        self.outages = 0
        super().__init__(*args, **kwargs)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._retry_local = threading.local()

    def _retrying(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        local = self._retry_local
        if getattr(local, "depth", 0):  # a call made by another storage call: the outer one retries
            return call(*args, **kwargs)
        deadline = time.monotonic() + self.retry_seconds
        delay, attempt, first_error = _BACKOFF_START, 0, None
        while True:
            local.depth = 1
            try:
                result = call(*args, **kwargs)
                if attempt:
                    _logger.warning("storage is back after %.1f s (%s)", self.retry_seconds - (deadline - time.monotonic()),
                                    name)
                return result
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempt and name == "set_trial_state_values" and self._state_is(args, kwargs):
                    return True  # the first try committed before its connection dropped
                raise
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    if attempt:
                        _logger.warning("storage still unreachable after %.0f s; giving up (%s)", self.retry_seconds,
                                        _first_line(first_error or exc))
                    raise
                if not attempt:
                    self.outages += 1
                    first_error = exc
                    _logger.warning("storage call %s failed (%s); retrying for up to %.0f s", name, _first_line(exc),
                                    self.retry_seconds)
                attempt += 1
            finally:
                local.depth = 0
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _BACKOFF_MAX)

    def _state_is(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        trial_id = kwargs.get("trial_id", args[0] if args else None)
        state = kwargs.get("state", args[1] if len(args) > 1 else None)
        try:
            return trial_id is not None and state is not None and super().get_trial(trial_id).state == state \
                and state != TrialState.RUNNING
        except Exception:  # noqa: BLE001 - then it is not known to be done
            return False


def _first_line(exc: BaseException) -> str:
    text = str(root_cause(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _wrap(name: str) -> Callable[..., Any]:
    original = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(original)
    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(name, functools.partial(original, self), *args, **kwargs)

    return method


for _name in _CALLS:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _wrap(_name))
