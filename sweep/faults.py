"""What went wrong underneath: a full disk, a read-only store, memory, an unreachable server.

These reach the CLI from deep inside SQLAlchemy, Optuna, MLflow or TensorFlow, wrapped two or
three times. :func:`describe_fault` walks an exception's chain and says, in one line, what the
machine is short of and what to do; the CLI prints that instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

_DISK_FULL_WORDS = ("no space left on device", "database or disk is full", "could not extend file", "disk is full",
                    "not enough space")
_READ_ONLY_WORDS = ("read-only file system", "readonly database", "attempt to write a readonly", "read-only transaction",
                    "cannot execute", "permission denied")
_MEMORY_WORDS = ("out of memory", "oom when allocating", "resourceexhaustederror", "failed to allocate memory",
                 "cannot allocate memory", "bad_alloc")
_UNREACHABLE_WORDS = ("connection refused", "could not connect", "server closed the connection", "connection timed out",
                      "terminating connection", "no route to host", "name or service not known", "connection reset",
                      "max retries exceeded", "failed to establish a new connection", "the database system is")


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception under it (``__cause__``, ``__context__``, SQLAlchemy's ``orig``)."""
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or any(cur is e for e in out):
            continue
        out.append(cur)
        todo.extend(e for e in (getattr(cur, "orig", None), cur.__cause__, cur.__context__) if isinstance(e, BaseException))
    return out


def _where(errors: list[BaseException]) -> str:
    for e in errors:
        name = getattr(e, "filename", None)
        if isinstance(e, OSError) and name:
            return f" ({name})"
    return ""


def describe_fault(exc: BaseException) -> str | None:
    """One line naming the fault under ``exc`` and its fix, or None if it is none of the known ones."""
    errors = chain(exc)
    text = " ".join(f"{type(e).__name__}: {e}" for e in errors).lower()
    codes = {getattr(e, "errno", None) for e in errors if isinstance(e, OSError)}
    where = _where(errors)
    if errno.ENOSPC in codes or errno.EDQUOT in codes or any(w in text for w in _DISK_FULL_WORDS):
        return (f"disk full{where}: the storage, the MLflow store or the temp folder has no space left; free some "
                "space (or point --storage / --tracking-uri elsewhere) and run the same command again to resume "
                "(finished trials are saved)")
    if errno.EROFS in codes or any(w in text for w in _READ_ONLY_WORDS[:4]):
        return (f"read-only storage{where}: a database or folder the sweep writes to cannot be written; make it "
                "writable or point --storage / --tracking-uri at a writable place")
    if any(isinstance(e, MemoryError) for e in errors) or any(w in text for w in _MEMORY_WORDS):
        return ("out of memory: the machine ran out of memory while training; lower the batch size, units or layers "
                "in the search space, run fewer workers on this machine, or use smaller data; then run the same "
                "command again to resume")
    if any(w in text for w in _UNREACHABLE_WORDS):
        detail = next((str(e).strip().splitlines()[0] for e in reversed(errors) if str(e).strip()), type(exc).__name__)
        return (f"a server the sweep needs stopped answering ({redact(detail)[:160]}); check the database / MLflow "
                "server and run the same command again to resume (finished trials are saved)")
    return None


def redact(text: str) -> str:
    """``text`` with URL passwords and ``password=`` values masked."""
    try:
        from sweep.redact import (
            redact as _redact,  # the one masking function, where present
        )
    except ImportError:
        text = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
        return re.sub(r"(password=)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)
    return _redact(text)


MIN_FREE_BYTES = 1 << 20  # below this a store's disk counts as full before anything is written


def check_writable(path: Path, what: str) -> str | None:
    """None if the file ``path`` (existing or to be made) can be written with some room to grow,
    else one line saying why not (read-only, no space). Makes no change."""
    folder = path.parent
    if path.exists() and not os.access(path, os.W_OK):
        return f"{what} {path}: read-only storage: the file cannot be written; make it writable or use another path"
    if not os.access(folder, os.W_OK):
        return (f"{what} {path}: read-only storage: folder {folder} cannot be written (a database needs its folder "
                "for its journal); make it writable or use another path")
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        return f"{what} {path}: disk full: {folder} has less than 1 MiB free; free some space or use another path"
    return None
