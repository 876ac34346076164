"""Training runs after the search (the re-training's fold runs, the refit's length check), here or,
with ``--workers`` W > 1, W at a time in processes of their own."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sweep.config import threads_per_worker

_logger = logging.getLogger(__name__)

# With --workers > 1 the runs go to that many processes when they add up to this much: a process's
# start (TensorFlow's import) costs ~5-10 s.
PARALLEL_SECONDS = 60.0


class Job(Protocol):
    @property
    def expected(self) -> float:
        """Seconds the run is expected to take (what must be left to start it)."""


J = TypeVar("J", bound=Job)
R = TypeVar("R")


def run_jobs(cfg: Any, jobs: Sequence[J], train: Callable[[J], R], *, fits: Callable[[J], bool]) -> tuple[list[R], int]:
    """Run ``train(job)`` for every job that ``fits`` when its turn comes, in order; returns the
    results (in the order they ended) and how many jobs were skipped. ``train`` must pickle (a
    module-level function, or a ``functools.partial`` of one) for the processes.

    With W = ``cfg.workers`` > 1 and jobs long enough to pay for a process's start
    (``PARALLEL_SECONDS``), W run at once, in processes that use one TensorFlow thread each (as fast
    as two here)."""
    workers = min(cfg.workers, len(jobs))
    done: list[R] = []
    skipped = 0
    if workers <= 1 or sum(j.expected for j in jobs) < PARALLEL_SECONDS:
        from objectives import model as lstm

        lstm.configure_threads(cfg.threads)
        for job in jobs:
            if not fits(job):
                skipped += 1
                continue
            done.append(train(job))
        return done, skipped

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = cfg.threads or threads_per_worker(workers)
    pending, running = list(jobs), {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_process, initargs=(threads,)) as pool:
        try:
            while pending or running:
                while pending and len(running) < workers:
                    job = pending.pop(0)
                    if not fits(job):
                        skipped += 1
                        continue
                    running[pool.submit(train, job)] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    done.append(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return done, skipped


def _start_process(threads: int) -> None:
    """A training process: TensorFlow's threads before its first op; Ctrl-C is the parent's to handle."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from objectives import model as lstm

    lstm.configure_threads(threads)
