"""Studies: create-or-resume with identity checks (data, space, settings), join, load, list."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState

from sweep.config import SweepConfig
from sweep.errors import StudyError
from sweep.storage import creation_lock

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyInfo:
    name: str
    n_trials_target: int | None  # None: a time-boxed run with no trial limit
    budget_seconds: float | None  # the latest run's time budget (each `sweep run --budget`'s own)
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
        n_trials, budget = run_target(summary.user_attrs)
        out.append(
            StudyInfo(
                name=summary.study_name,
                n_trials_target=n_trials,
                budget_seconds=budget,
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


def run_target(attrs: dict[str, Any]) -> tuple[int | None, float | None]:
    """What the latest `sweep run` of a study aimed at: (trials, time budget in seconds), either None.

    A run with ``--budget`` alone has no trial limit (its n_trials is ``BUDGET_MAX_TRIALS``, a
    number no user asked for). Studies stored before the ``budget`` attribute tell their budget by
    the deadline the run left.
    """
    from sweep.budget import BUDGET_MAX_TRIALS, Deadline

    deadline = attrs.get("deadline") or {}
    if "budget" in attrs:
        budget = None if attrs["budget"] is None else float(attrs["budget"])
    else:
        budget = Deadline.from_dict(deadline).budget if "ends_at" in deadline else None
    n_trials = attrs.get("n_trials")
    if n_trials is None or (budget is not None and int(n_trials) == BUDGET_MAX_TRIALS):
        return None, budget
    return int(n_trials), budget


def run_done(attrs: dict[str, Any], *, finished: int, running: int, now: float) -> bool:
    """Whether the latest `sweep run` of a study is over by its own limits: it holds its N finished
    trials, or its time budget's deadline has passed with no trial still running."""
    n_trials, budget = run_target(attrs)
    if n_trials is not None and finished >= n_trials:
        return True
    deadline = attrs.get("deadline") or {}
    return budget is not None and "ends_at" in deadline and deadline["ends_at"] <= now and running == 0


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
        study.set_user_attr("budget", cfg.budget)
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


def default_study_name(data_path: str | os.PathLike[str]) -> str:
    return Path(data_path).stem
