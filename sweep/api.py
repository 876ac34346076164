"""The Python API, for notebooks and scripts: the same sweep as `sweep run`, the same typed records.

    from sweep import run, trials, best, load_champion

    result = run("seed-signal.npz", n_trials=8)            # or run((X, y), study="mine", X_test=..., y_test=...)
    result.best.result.val_balanced_accuracy                # a BestTrial; result.records: one TrialRecord per trial
    [r.near_collapse for r in trials("seed-signal")]
    model = load_champion("seed-signal")                     # MLflow pyfunc: predict(X) -> label, proba_<label>

Settings are the ``sweep run`` flags as keyword arguments (``n_trials=8, epochs=10, storage=...``),
resolved flag > ``config`` file > default exactly as the CLI resolves them. Errors are
:class:`sweep.errors.SweepError` subclasses with a message that says how to fix them.

Importing this module (or ``sweep``) imports neither TensorFlow nor MLflow: each function imports
what it needs when called. Unlike the CLI it configures no logging and installs no signal handler.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config import DEFAULT_STORAGE
from sweep.errors import DataError

if TYPE_CHECKING:
    from sweep.records import BestTrial, TrialRecord
    from sweep.runner import SweepResult


def run(
    data: str | Path | tuple[Any, Any], *, test: str | Path | None = None, X_test: Any = None, y_test: Any = None,
    config: str | Path | None = None, allow_changes: bool = False, **settings: Any,
) -> SweepResult:
    """Run (or resume) a sweep in this process until the study holds its N finished trials; re-train
    the top k; return the study's typed records (:class:`sweep.runner.SweepResult`).

    Args:
        data: a data file (``.npz``, UCR ``.csv``/``.tsv``) or ``(X, y)`` arrays, ``X`` shaped
            ``[n, timesteps, features]``; arrays are saved as ``STUDY.npz`` in the working
            directory (with ``X_test``/``y_test`` when given), so a resume or a worker finds them.
        test: the test file of ``.csv``/``.tsv`` data.
        config: a TOML config file (``[run]``, ``[train]``, ``[search_space]``).
        allow_changes: resume even if the data, space or settings differ from the study's.
        **settings: any ``sweep run`` flag, e.g. ``study``, ``storage``, ``tracking_uri``,
            ``n_trials``, ``budget``, ``epochs``, ``patience``, ``seed``, ``workers``.
    """
    from sweep.budget import process_started
    from sweep.config import resolve_config
    from sweep.clock import start_clock
    from sweep.prepared import prepare
    from sweep.runner import open_sweep, run_opened

    started = process_started()  # a budget's start-up allowance counts from here
    cfg = resolve_config(config_file=config, flags=settings)
    path = _data_file(data, study=cfg.study, X_test=X_test, y_test=y_test)
    prep = prepare(cfg, path, test_path=test)
    opened = open_sweep(prep, allow_changes=allow_changes)
    start_clock(opened, started=started, workers=cfg.workers)
    if cfg.workers > 1:
        from sweep.workers import run_workers

        return run_workers(opened, workers=cfg.workers)
    return run_opened(opened)


def trials(study: str, *, storage: str = DEFAULT_STORAGE) -> list[TrialRecord]:
    """Every trial of ``study`` as a :class:`~sweep.records.TrialRecord`, in trial-number order."""
    from sweep.records import trial_records

    return trial_records(open_study(study, storage=storage))


def best(study: str, *, storage: str = DEFAULT_STORAGE) -> BestTrial | None:
    """The trial that ships (:class:`~sweep.records.BestTrial`); None while no trial completed."""
    from sweep.records import best_of

    return best_of(open_study(study, storage=storage))


def load_champion(study: str, *, tracking_uri: str | None = None, storage: str = DEFAULT_STORAGE) -> Any:
    """The study's champion model (registry alias ``champion``) as an MLflow pyfunc: ``predict(X)``
    on raw sequences gives a table with ``label`` and one ``proba_<label>`` column per class.
    ``tracking_uri`` defaults to the store the study logged to."""
    from sweep.registry import champion_uri, load_model

    uri = tracking_uri or open_study(study, storage=storage).user_attrs.get("tracking_uri")
    return load_model(champion_uri(study), uri)


def open_study(study: str, *, storage: str = DEFAULT_STORAGE) -> Any:
    """The Optuna study ``study`` in ``storage``, read-only (raises StudyError naming the known ones)."""
    from sweep.storage import open_storage
    from sweep.study import load_study

    return load_study(study, open_storage(storage, must_exist=True, heartbeat=False))


def _data_file(data: str | Path | tuple[Any, Any], *, study: str | None, X_test: Any, y_test: Any) -> Path:
    if isinstance(data, (str, Path)):
        return Path(data)
    if not (isinstance(data, tuple) and len(data) == 2):
        raise DataError("data: give a file path or an (X, y) pair of arrays, X shaped [n, timesteps, features]")
    if not study:
        raise DataError("data given as arrays: name the study (study='...'); the arrays are saved as STUDY.npz")
    import numpy as np

    X, y = data
    arrays = {"X_train": np.asarray(X), "y_train": np.asarray(y)}
    if X_test is not None and y_test is not None:
        arrays.update(X_test=np.asarray(X_test), y_test=np.asarray(y_test))
    path = Path(f"{study}.npz")
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path
