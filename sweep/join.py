"""``sweep worker``: join a study another process created, from any machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from objectives.search_space import SearchSpace
from sweep.clock import await_deadline, load_deadline
from sweep.config import SweepConfig, TrainSettings
from sweep.data import load_dataset, split_stratified
from sweep.errors import DataError, StudyError
from sweep.preflight import check_tracking_store, resolve_tracking_uri
from sweep.prepared import OpenSweep, PreparedSweep, make_tracker
from sweep.records import BestTrial, TrialRecord
from sweep.runner import SweepResult, close_dead_trials, link_models, run_opened
from sweep.storage import open_storage
from sweep.study import join_study


def join(
    name: str, storage_url: str, *, data_path: str | Path | None = None, tracking_uri: str | None = None,
    threads: int | None = None,
) -> OpenSweep:
    """Join an existing study as a worker (``sweep worker``): rebuild its settings, check its data.

    Raises:
        StudyError: unknown study, or one without an MLflow parent run.
        DataError: the data file is missing or is not the file the study was created on.
    """
    storage = open_storage(storage_url)
    study = join_study(name, storage)  # reads only; the tracking store is checked before this worker writes
    check_tracking_store(resolve_tracking_uri(tracking_uri or study.user_attrs.get("tracking_uri")))
    attrs = study.user_attrs
    cfg = config_from_study(attrs, name=name, storage=storage_url, tracking_uri=tracking_uri, threads=threads)
    source = Path(data_path) if data_path is not None else Path(attrs["data_path"])
    if not source.exists():
        raise DataError(
            f"study {name!r} was created on {attrs['data_path']}, which is not on this machine; "
            "copy the file here and pass --data PATH"
        )
    test_path = attrs.get("test_path")
    if test_path is not None and data_path is not None:
        test_path = str(source.with_name(Path(test_path).name))
    data = load_dataset(source, test_path=test_path)
    if data.fingerprint() != attrs["data_fingerprint"]:
        raise DataError(
            f"{source} is not the data study {name!r} was created on (fingerprint {data.fingerprint()}, "
            f"study has {attrs['data_fingerprint']} from {attrs['data_path']}); pass --data with that same file"
        )
    split = split_stratified(data, val_fraction=cfg.train.val_fraction, seed=cfg.seed)
    prep = PreparedSweep(cfg=cfg, name=name, data=data, split=split)
    parent = attrs.get("mlflow_parent_run_id")
    if not parent:
        raise StudyError(f"study {name!r} has no MLflow run yet; start it with `sweep run DATA --study {name}` first")
    tracker = make_tracker(prep)
    tracker.join_sweep(parent)
    link_models(study, tracker)
    close_dead_trials(study, tracker)
    opened = OpenSweep(prep=prep, study=study, resumed=True, tracker=tracker, parent_run_id=parent, lead=False,
                       deadline=load_deadline(study))
    await_deadline(opened)
    return opened


def config_from_study(
    attrs: dict[str, Any], *, name: str, storage: str, tracking_uri: str | None, threads: int | None,
) -> SweepConfig:
    """The SweepConfig a study was created with (its identity is then identical by construction)."""
    settings = attrs["settings"]
    run = attrs.get("run_settings", {})
    return SweepConfig(
        study=name, storage=storage, n_trials=int(attrs.get("n_trials", 20)), seed=int(settings["seed"]),
        tracking_uri=tracking_uri or attrs.get("tracking_uri"), log_models=run.get("log_models", "best"),
        pruner=run.get("pruner", "median"), adjust_decision=bool(run.get("adjust_decision", False)),
        retrain_top=0, threads=threads, train=TrainSettings(**settings["train"]),
        space=SearchSpace.from_dict(settings["search_space"]),
    )


def run_worker(
    opened: OpenSweep, *,
    on_trial_end: Callable[[TrialRecord, BestTrial | None], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> SweepResult:
    """Work on a joined study until it holds its N trials; the last one out ends the parent run."""
    return run_opened(opened, on_trial_end=on_trial_end, on_wait=on_wait)
