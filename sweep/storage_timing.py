"""A benchmark's view of what the database costs a worker: ``SWEEP_STORAGE_TIMING=FILE`` makes
:func:`sweep.storage.open_storage` time every storage call (benchmarks/scaling.py reads the file)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import optuna


def instrument(storage: optuna.storages.BaseStorage, on_call: Callable[[str, float], None]) -> None:
    """Time every call into ``storage`` and tell ``on_call(method, seconds)``: outermost calls only (a
    call made by another storage call is already counted), from any thread."""
    import functools
    import threading

    local = threading.local()

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
                if not depth:
                    on_call(fn.__name__, time.perf_counter() - t0)
        return wrapper

    for name in dir(type(storage)):  # the storage and heartbeat APIs, and the private calls Optuna's cache makes
        if not name.startswith("__") and callable(getattr(storage, name, None)):
            setattr(storage, name, timed(getattr(storage, name)))


def time_storage(storage: optuna.storages.RDBStorage, out: Path) -> None:
    """Time every call into the storage; at exit append one JSON line to ``out``.

    Set ``SWEEP_STORAGE_TIMING=FILE`` to see what the database costs a worker (used by
    benchmarks/scaling.py): ``{"pid", "storage_seconds", "calls", "process_seconds"}``. Heartbeat
    calls from the background thread count too.
    """
    import atexit
    import threading

    lock = threading.Lock()
    stats: dict[str, Any] = {"storage_seconds": 0.0, "calls": 0, "by_method": {}}
    started = time.monotonic()

    def _add(name: str, spent: float) -> None:
        with lock:
            stats["storage_seconds"] += spent
            stats["calls"] += 1
            calls, seconds = stats["by_method"].get(name, (0, 0.0))
            stats["by_method"][name] = (calls + 1, round(seconds + spent, 4))

    instrument(storage, _add)

    def report() -> None:
        line = {"pid": os.getpid(), **stats, "process_seconds": time.monotonic() - started}
        with out.open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    atexit.register(report)
