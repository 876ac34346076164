"""The time budget's clock (``--budget``): started once per invocation, stored on the study as a
deadline that every worker reads (:class:`sweep.budget.Deadline` holds the arithmetic)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sweep.budget import Deadline
from sweep.config import REFIT_SHIPS
from sweep.errors import StudyError
from sweep.prepared import OpenSweep


def start_clock(opened: OpenSweep, *, started: float, workers: int = 1) -> Deadline | None:
    """Start the time budget (``cfg.budget``) of a command that began at ``started``: store its
    deadline on the study, where every worker that joins reads it. None without a budget (or,
    with local workers, not yet: :func:`sweep.workers.run_workers` starts it once they are ready).

    Start-up (imports, opening the stores, TensorFlow) is not charged to the budget, up to
    ``STARTUP_SECONDS`` after ``started``: the command ends within its budget plus that minute.
    """
    from sweep.budget import STARTUP_SECONDS

    cfg = opened.prep.cfg
    opened.started = started
    if cfg.budget is None:
        return None
    if workers > 1:
        opened.study.set_user_attr("deadline", {"pending": True})  # workers wait for it after their start-up
        return None
    import objectives.model  # noqa: F401 - TensorFlow's import is start-up, not search

    return set_deadline(opened, now=min(time.time(), started + STARTUP_SECONDS))


def set_deadline(opened: OpenSweep, *, now: float) -> Deadline:
    """Start the budget's clock at ``now`` and store the deadline on the study."""
    cfg = opened.prep.cfg
    assert cfg.budget is not None
    opened.deadline = Deadline.start(cfg.budget, retrain_top=cfg.retrain_top, refit=cfg.ship in REFIT_SHIPS, now=now)
    opened.study.set_user_attr("deadline", opened.deadline.to_dict())
    return opened.deadline


READY_DIR = "SWEEP_READY_DIR"  # set by `sweep run --workers` for its own workers: where they say they are ready
DEADLINE_WAIT_SECONDS = 180.0


def await_deadline(opened: OpenSweep) -> None:
    """For a worker started by ``sweep run --workers N --budget D``: load TensorFlow, tell the
    coordinator it is ready (a file in ``$SWEEP_READY_DIR``), and wait until the coordinator has
    started the budget's clock; then keep to that deadline."""
    import os

    attrs = opened.study.user_attrs
    if not (attrs.get("deadline") or {}).get("pending"):
        return
    import objectives.model  # noqa: F401 - start-up, before the clock runs

    ready = os.environ.get(READY_DIR)
    if ready:
        Path(ready, str(os.getpid())).touch()
    until = time.monotonic() + DEADLINE_WAIT_SECONDS
    while time.monotonic() < until:
        from sweep import interrupt

        interrupt.check()
        stored = load_deadline(opened.study)
        if stored is not None:
            opened.deadline = stored
            return
        if not (opened.study.user_attrs.get("deadline") or {}).get("pending"):
            return  # the coordinator went away without starting the clock
        time.sleep(0.3)
    raise StudyError(f"study {opened.prep.name!r} waits for a time budget that its `sweep run` never started; "
                     "run the sweep again")


def load_deadline(study: Any) -> Deadline | None:
    """The study's stored time-budget deadline (None: no budget, or its clock has not started)."""
    d = study.user_attrs.get("deadline")
    return Deadline.from_dict(d) if d and "ends_at" in d else None
