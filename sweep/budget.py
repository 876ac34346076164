"""Time-boxed sweeps (``sweep run DATA --budget 10m``): durations, the deadline, the time reserved for
the end of the command, and the epoch allocation of successive halving. Pure: no TensorFlow, no MLflow,
no Optuna.

The budget is the wall time of one invocation of ``sweep run``, counted from the end of its start-up
(at most ``STARTUP_SECONDS`` after the command started). It is cut in two:

- the **search** runs trials until ``search_ends_at``; a running trial stops at the first epoch
  boundary past it (keeping its best epoch's weights) and no trial starts that could not reach its
  first successive-halving rung before it;
- the **reserve** (:func:`reserve_seconds`) is for the re-training of the top configurations, the
  refit of the chosen one (``--ship refit``: its share is kept from the re-training's runs) and the
  end of the sweep (summary, plots, registry); nothing starts when only the time to finish is left
  (``ends_at - FINISH_SECONDS``).

Clock: wall-clock seconds since the epoch (``time.time()``), so the same deadline holds in every
worker process, also on other machines with synchronized clocks.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError

# Start-up (imports, opening the stores, loading TensorFlow) is not charged to the budget, up to this
# much: the whole command ends within its budget plus STARTUP_SECONDS (25-30 s here on a busy machine,
# most of it MLflow creating a new SQLite store and TensorFlow's import).
STARTUP_SECONDS = 60.0
MIN_BUDGET_SECONDS = 10.0
MAX_BUDGET_SECONDS = 7 * 24 * 3600.0
# Summary, plots, parameter importances, closing MLflow runs, pointing the registry alias: measured
# at 4-9 s on this 2-core machine with a local SQLite MLflow store (more on a busy machine).
FINISH_SECONDS = 15.0
# Share of the rest of the budget kept for re-training the top configurations (sweep.retrain)
# (0.2 left ECG200 at 3 min no re-training run at all on a busy machine).
RETRAIN_SHARE = 0.3
# With --ship refit, a further share kept for training the chosen configuration on the whole training
# part (sweep.refit); it also gets whatever the re-training leaves (most of it on fast sets).
REFIT_SHARE = 0.1
# What a refit costs besides its epochs: the model's build and first trace, its scoring, its logging.
REFIT_SETUP_SECONDS = 10.0
# The re-training's runs leave the refit its share, or what the chosen configuration's refit is
# estimated to need if more (sweep.refit.seconds_needed), but never more than this share of the
# re-training's time: the margin rule still needs runs to choose.
REFIT_MAX_SHARE = 0.5
# With --ship auto the length check's fold runs of both lengths come before the refit: on a slow set
# (Strawberry's LSTM-FCN, 1.55 s an epoch) they and a refit longer than the trial's own 24 epochs need
# 130-190 s, more than half of a 10-minute budget's re-training time, and twice the check did not fit.
# The re-training's runs then leave up to this share; they train the search's winner's folds first.
CHECK_MAX_SHARE = 0.75
# Epochs a budgeted trial may reach (successive halving gives most trials far fewer) and the
# defaults that differ from a trial-count sweep; every one can still be set by flag or config file.
BUDGET_EPOCHS = 100
BUDGET_PATIENCE = 10
BUDGET_WARMUP_FRACTION = 0.0  # the halving rungs decide who trains on; see hyperband_settings
BUDGET_PRUNER = "hyperband"
# What ships: the chosen configuration's refit, unless on the re-training's folds the refit's length
# falls behind the trial's own length by more than the noise; its trial's own model then (sweep.refit).
BUDGET_SHIP = "auto"
# n_trials when only a budget is given: the time ends the search long before this many trials.
BUDGET_MAX_TRIALS = 10_000
REDUCTION_FACTOR = 3  # successive halving keeps the best third at each rung (Optuna's default)
MIN_RESOURCE = 5  # epochs before the first rung: no model learns ECG200's shapes in fewer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|secs|m|min|mins|h|hr|hrs)?\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600}


def parse_duration(value: Any, *, name: str = "budget (--budget)") -> float:
    """Seconds in ``value``: ``90s``, ``10m``, ``2h``, ``1.5h``, or plain seconds (``600``, ``600.0``).

    Raises:
        ConfigError: not a duration, or outside [10 s, 7 days]; the message shows valid forms.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration like 90s, 10m or 2h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ConfigError(
                f"{name}: {value!r} is not a duration; use a number with s, m or h (90s, 10m, 2h) or plain seconds"
            )
        seconds = float(match.group(1)) * _UNIT[(match.group(2) or "s").lower()]
    else:
        raise ConfigError(f"{name} must be a duration like 90s, 10m or 2h, got {value!r}")
    if not math.isfinite(seconds) or not MIN_BUDGET_SECONDS <= seconds <= MAX_BUDGET_SECONDS:
        raise ConfigError(
            f"{name}: {value!r} is {seconds:g} s; a budget must be between {MIN_BUDGET_SECONDS:g} s and 7 days"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``3600`` -> ``1h00m``; ``42.4`` -> ``42s``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def reserve_seconds(budget: float, *, retrain_top: int, refit: bool = False) -> float:
    """Seconds kept at the end of a ``budget`` for re-training and finishing the sweep.

    ``FINISH_SECONDS`` always; with re-training, ``RETRAIN_SHARE`` of the rest as well, and with a
    refit (``--ship refit``) ``REFIT_SHARE`` more. Never more than half the budget: a short budget
    is mostly search (the re-training then does what fits).
    """
    reserve = min(FINISH_SECONDS, budget / 2)
    if retrain_top > 0:
        reserve += (RETRAIN_SHARE + (REFIT_SHARE if refit else 0.0)) * (budget - reserve)
    return min(reserve, budget / 2)


def refit_seconds(budget: float, *, retrain_top: int, refit: bool) -> float:
    """Of :func:`reserve_seconds`, what the re-training leaves for the refit at the least."""
    if not refit or retrain_top <= 0:
        return 0.0
    full = reserve_seconds(budget, retrain_top=retrain_top, refit=True)
    finish = min(FINISH_SECONDS, budget / 2)
    return (full - finish) * REFIT_SHARE / (RETRAIN_SHARE + REFIT_SHARE)


def refit_epochs(cap: int, *, seconds_per_epoch: float | None, seconds_left: float | None, at_least: int,
                 check: float = 0.0) -> int | None:
    """Epochs the refit trains (its cosine schedule's length): the epoch cap ``cap``, or as many as
    fit in ``seconds_left`` (None: no time budget) at ``seconds_per_epoch`` after
    ``REFIT_SETUP_SECONDS``. None when fewer than ``at_least`` fit (the epochs the chosen trial's
    own model trained for: a shorter refit is not worth its time) or no epoch time is known.

    ``check`` (``--ship auto``): what the length check before it costs, in refit epochs per epoch of
    length (:func:`check_cost`); it has a setup of its own as well."""
    epochs = max(1, cap)
    if seconds_left is not None:
        if not seconds_per_epoch or seconds_per_epoch <= 0:
            return None
        setups = REFIT_SETUP_SECONDS * (2 if check > 0 else 1)
        epochs = min(epochs, math.floor((seconds_left - setups) / (seconds_per_epoch * (1 + check))))
    return epochs if epochs >= max(1, at_least) else None


def check_cost(folds: int, *, workers: int, fraction: float) -> float:
    """The length check's time in refit epochs per epoch of length: ``folds`` runs of each length,
    each on ``fraction`` of the sequences the refit trains on, in one queue ``workers`` at a time (the
    long and the short runs fill each other's gaps: 3 folds on 2 workers take about 1.5 rounds of
    each, not 2)."""
    if folds <= 0:
        return 0.0
    return folds * fraction / max(1, min(workers, folds))


@dataclass(frozen=True)
class Deadline:
    """When the search must stop and when the whole command must end (wall-clock seconds)."""

    started_at: float
    search_ends_at: float
    ends_at: float
    refit_seconds: float = 0.0  # kept after the re-training's runs for the refit (--ship refit)

    @classmethod
    def start(cls, budget: float, *, retrain_top: int, refit: bool = False, now: float | None = None) -> Deadline:
        """The deadline of a command that started at ``now`` (default: this moment) with ``budget`` seconds."""
        now = time.time() if now is None else now
        reserve = reserve_seconds(budget, retrain_top=retrain_top, refit=refit)
        return cls(started_at=now, search_ends_at=now + budget - reserve, ends_at=now + budget,
                   refit_seconds=refit_seconds(budget, retrain_top=retrain_top, refit=refit))

    @property
    def budget(self) -> float:
        return self.ends_at - self.started_at

    def search_left(self, now: float | None = None) -> float:
        """Seconds until the search must stop (negative once past it)."""
        return self.search_ends_at - (time.time() if now is None else now)

    def left(self, now: float | None = None) -> float:
        """Seconds until the whole command must end."""
        return self.ends_at - (time.time() if now is None else now)

    def search_over(self, now: float | None = None) -> bool:
        return self.search_left(now) <= 0

    @property
    def retrain_ends_at(self) -> float:
        """When the re-training must stop: the end of the sweep keeps FINISH_SECONDS."""
        return self.ends_at - min(FINISH_SECONDS, self.budget / 2)

    def retrain_left(self, now: float | None = None) -> float:
        """Seconds the re-training (its runs and the refit) may still use."""
        return self.retrain_ends_at - (time.time() if now is None else now)

    def to_dict(self) -> dict[str, float]:
        return {"started_at": self.started_at, "search_ends_at": self.search_ends_at, "ends_at": self.ends_at,
                "refit_seconds": self.refit_seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deadline:
        return cls(started_at=float(d["started_at"]), search_ends_at=float(d["search_ends_at"]),
                   ends_at=float(d["ends_at"]), refit_seconds=float(d.get("refit_seconds") or 0.0))


def runs_end_at(deadline: Deadline, *, refit_need: float = 0.0, checked: bool = False, now: float | None = None) -> float:
    """When the re-training's runs must stop: early enough to leave the refit its share
    (``deadline.refit_seconds``) or ``refit_need`` seconds if more, at most ``REFIT_MAX_SHARE`` of
    the re-training's time left at ``now`` (``CHECK_MAX_SHARE`` when the refit's length is
    ``checked`` first: ``--ship auto``). Without a refit: the re-training's end."""
    if deadline.refit_seconds <= 0:
        return deadline.retrain_ends_at
    cap = CHECK_MAX_SHARE if checked else REFIT_MAX_SHARE
    keep = min(max(deadline.refit_seconds, refit_need), cap * max(0.0, deadline.retrain_left(now)))
    return deadline.retrain_ends_at - keep


@dataclass(frozen=True)
class HalvingSettings:
    """Successive halving / Hyperband over epochs: rungs at ``min_resource * reduction_factor**k``."""

    min_resource: int
    max_resource: int
    reduction_factor: int

    def rungs(self) -> list[int]:
        """Epochs at which the most aggressive bracket compares trials (the last is ``max_resource``)."""
        out, r = [], self.min_resource
        while r < self.max_resource:
            out.append(r)
            r *= self.reduction_factor
        return out + [self.max_resource]

    def brackets(self) -> int:
        """How many Hyperband brackets Optuna builds for these settings."""
        return math.floor(math.log(self.max_resource / self.min_resource, self.reduction_factor)) + 1


def halving_settings(epochs: int, *, warmup: int = 0) -> HalvingSettings:
    """The Hyperband pruner's settings for an epoch cap ``epochs``.

    The first rung is at ``MIN_RESOURCE`` epochs or the trial's warm-up (epochs before anything may
    stop it), whichever is later, and never past the cap.
    """
    first = min(max(1, epochs), max(MIN_RESOURCE, warmup))
    return HalvingSettings(min_resource=first, max_resource=max(1, epochs), reduction_factor=REDUCTION_FACTOR)


def can_start_trial(
    deadline: Deadline, *, epoch_seconds: Iterable[float], setup_seconds: float, first_rung: int,
    now: float | None = None,
) -> bool:
    """Whether a new trial can reach its first rung (``first_rung`` epochs) before the search ends.

    ``epoch_seconds`` are the epoch times seen so far. The slowest is used: the next trial's
    architecture is drawn after it starts, and an LSTM-FCN epoch costs several plain-LSTM epochs
    (ECG200 at 3 min with 2 workers: a trial started on the median was still in its first epoch
    when the re-training's time ran out). None seen: any trial may start, the first one measures them.
    ``setup_seconds`` is what a trial costs besides its
    epochs (build, evaluation, logging), e.g. the median of the trials' durations less their epochs.
    """
    left = deadline.search_left(now)
    if left <= 0:
        return False
    times = sorted(t for t in epoch_seconds if t is not None and t >= 0)
    if not times:
        return True
    return setup_seconds + first_rung * times[-1] <= left


def time_left_text(deadline: Deadline, now: float | None = None) -> str:
    """For the progress bar: ``search 2m10s left`` while searching, then ``4m05s left in the budget``."""
    if not deadline.search_over(now):
        return f"search {format_duration(deadline.search_left(now))} left"
    return f"{format_duration(max(0.0, deadline.left(now)))} left in the budget"


def process_started() -> float:
    """When this process started (wall clock): the budget's start-up minute counts from there, not
    from the end of the CLI's own imports. Falls back to now where /proc is missing."""
    import os

    try:
        return min(time.time(), os.stat(f"/proc/{os.getpid()}").st_ctime)
    except OSError:
        return time.time()
