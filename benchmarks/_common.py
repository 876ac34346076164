"""Shared set-up for the benchmarks: quiet TensorFlow, a scratch folder, demo data, machine facts,
RSS from /proc, a tracker that the benchmark can see, tables and result files.

Import this module before anything that imports TensorFlow: it sets the environment variables
TensorFlow reads at import time and puts the repository root on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# A benchmark must never log to a store named by the caller's environment.
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- machine and results ------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


from _servers import postgres_database  # noqa: E402,F401 - the benchmarks reach it as _common.postgres_database


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """What the numbers were taken on (the load average says how shared the machine was)."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
        "keras": _version("keras"),
        "optuna": _version("optuna"),
        "mlflow": _version("mlflow"),
        "numpy": _version("numpy"),
        "load_average_1_5_15min": load_average(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json`` (the only file a benchmark leaves in the repository)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **payload}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


# -- scratch space and data -----------------------------------------------------------------------
@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder that is also the working directory while it exists.

    MLflow's SQLite store puts artifacts under ``./mlruns`` of the *working directory* (not next to
    ``mlflow.db``), so without the ``chdir`` every plot and model would land in the repository.
    """
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp).resolve()
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(old)


def seed_signal(folder: Path) -> Path:
    """The demo set (1000 training + 1000 test sequences of 20 x 5) written into ``folder``."""
    from sweep.synthetic import make_dataset, write_dataset

    return write_dataset(make_dataset("seed-signal", seed=0), folder / "seed-signal.npz")


def sweep_config(folder: Path, *, space: Any, **flags: Any) -> Any:
    """A SweepConfig with SQLite Optuna storage and an SQLite MLflow store inside ``folder``."""
    import dataclasses

    from sweep.config import resolve_config

    cfg = resolve_config(flags={
        "storage": f"sqlite:///{folder}/sweep.db", "tracking_uri": f"sqlite:///{folder}/mlflow.db", "retrain_top": 0,
        **flags,
    })
    return dataclasses.replace(cfg, space=space)


# -- process facts --------------------------------------------------------------------------------
def rss_mib() -> float:
    """Resident set size of this process, from /proc/self/status (VmRSS), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (not Linux?)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- seeing inside the sweep without changing it --------------------------------------------------
class TrackerProbe:
    """Swaps ``sweep.tracking.MlflowTracker`` for a subclass that only records its instances and
    times its calls; behaviour is unchanged. ``run_sweep`` imports the class when it is called, so
    the swap must be active around that call.

    ``wait_for_plots()`` blocks until the plots the tracker renders on its background thread are
    written, so a benchmark can keep that work from overlapping whatever it runs next.
    """

    def __init__(self) -> None:
        self.trackers: list[Any] = []
        self.timings: dict[int, dict[str, float]] = {}
        self._original: Any = None

    def __enter__(self) -> TrackerProbe:
        from sweep import tracking

        probe = self
        self._original = original = tracking.MlflowTracker

        class SeenTracker(original):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                probe.trackers.append(self)

            def start_trial(self, number: int, params: Any) -> Any:
                t0 = time.perf_counter()
                run = super().start_trial(number, params)
                probe._add(number, "start_trial", time.perf_counter() - t0)
                probe._wrap(run, number)
                return run

        tracking.MlflowTracker = SeenTracker
        return self

    def __exit__(self, *exc: Any) -> None:
        from sweep import tracking

        tracking.MlflowTracker = self._original

    def _add(self, number: int, key: str, seconds: float) -> None:
        entry = self.timings.setdefault(number, {})
        entry[key] = entry.get(key, 0.0) + seconds

    def _wrap(self, run: Any, number: int) -> None:
        for name in ("log_epoch", "end"):
            inner = getattr(run, name)

            def timed(*args: Any, _inner: Any = inner, _name: str = name) -> Any:
                t0 = time.perf_counter()
                try:
                    return _inner(*args)
                finally:
                    self._add(number, _name, time.perf_counter() - t0)

            setattr(run, name, timed)

    def wait_for_plots(self) -> float:
        """Block until every submitted plot job is done; returns the seconds waited."""
        import concurrent.futures

        t0 = time.perf_counter()
        for tracker in self.trackers:
            pending = list(getattr(tracker, "_pending", []))
            if pending:
                concurrent.futures.wait(pending)
        return time.perf_counter() - t0


# -- output ---------------------------------------------------------------------------------------
def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Rich table when Rich is installed (it is a dependency of the CLI), else plain text."""
    cells = [[c if isinstance(c, str) else f"{c}" for c in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)) for c in col) for col in zip(columns, *cells)]
        print(title)
        print("  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
        for row in cells:
            print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths)))
        return
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*row)
    # Wide enough for the tables when the output is a pipe or a file (Rich would assume 80).
    Console(width=None if sys.stdout.isatty() else 132).print(table)
