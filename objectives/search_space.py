"""The search space: what Optuna may try, and the typed parameters a trial gets.

Trial parameter names equal the fields of :class:`LstmParams`, so
``LstmParams(**study.best_params)`` rebuilds the best model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.errors import ConfigError

CLASS_WEIGHT_STRATEGIES = ("none", "balanced", "sqrt", "oversample")
POOLINGS = ("last", "mean", "attention")
ARCHITECTURES = ("stacked", "lstm_fcn")
LR_SCHEDULES = ("plateau", "cosine")
CONV_FILTERS_LIMITS = (0, 512)

# Choices added after the first release, with the value every older study trained with: a study
# whose stored space lacks them resumes with them fixed at that value (SearchSpace.from_dict).
LEGACY_CHOICES: dict[str, tuple[Any, ...]] = {
    "bidirectional": (False,), "conv_filters": (0,), "pooling": ("last",), "masking": (False,),
    "architecture": ("stacked",), "lr_schedule": ("plateau",),
}


@dataclass(frozen=True)
class LstmParams:
    """One LSTM classifier configuration (one trial)."""

    units: int = 64
    layers: int = 2
    dropout: float = 0.2
    learning_rate: float = 1e-3
    class_weight: str = "balanced"
    batch_size: int = 32
    clipnorm: float = 0.0
    # Architecture choices. The defaults are the plain stacked LSTM, which is also what a trial of a
    # study made before these choices existed trained, so its stored params still rebuild it.
    bidirectional: bool = False
    conv_filters: int = 0  # > 0: a Conv1D front-end (LSTM-FCN style) with this many filters
    pooling: str = "last"  # last state, or mean / attention over the last layer's sequence
    masking: bool = False  # skip all-zero (padding) timesteps; only searched on padded data
    # "stacked": the LSTM layers read the series (with the options above); "lstm_fcn": LSTM-FCN, a
    # convolutional branch beside an LSTM branch that reads the dimension-shuffled series.
    architecture: str = "stacked"
    # "plateau": halve the learning rate after 3 epochs without a lower validation loss (the recipe's
    # ReduceLROnPlateau); "cosine": cosine decay from learning_rate to 0 over the epoch cap.
    lr_schedule: str = "plateau"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# With a Conv1D front-end, max pooling after it shortens long series to at most this many steps for
# the LSTM (Earthquakes, 512 steps: pool 4; Strawberry, 235: pool 2; shorter series: no pooling).
MAX_RECURRENT_STEPS = 128


def conv_pool_size(timesteps: int) -> int:
    """The max-pooling size after a Conv1D front-end: the smallest that leaves <= 128 steps."""
    return max(1, -(-timesteps // MAX_RECURRENT_STEPS))


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


# Hard limits a config file may narrow within (inclusive).
_INT_LIMITS = {"units": (1, 1024), "layers": (1, 3)}
_FLOAT_LIMITS = {"dropout": (0.0, 0.9), "learning_rate": (1e-6, 1.0)}


@dataclass(frozen=True)
class SearchSpace:
    """Ranges and choices for every field of :class:`LstmParams`."""

    units: IntRange = IntRange(16, 128, log=True)
    layers: IntRange = IntRange(1, 3)
    dropout: FloatRange = FloatRange(0.0, 0.5)
    learning_rate: FloatRange = FloatRange(1e-4, 1e-2, log=True)
    class_weight: tuple[str, ...] = CLASS_WEIGHT_STRATEGIES
    batch_size: tuple[int, ...] = (16, 32, 64)
    clipnorm: tuple[float, ...] = (0.0, 1.0, 5.0)
    bidirectional: tuple[bool, ...] = (False, True)
    conv_filters: tuple[int, ...] = (0, 64)
    pooling: tuple[str, ...] = POOLINGS
    # Searched only where the data is padded (see suggest_params); [false] turns it off.
    masking: tuple[bool, ...] = (False, True)
    architecture: tuple[str, ...] = ARCHITECTURES
    lr_schedule: tuple[str, ...] = LR_SCHEDULES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else list(value)
        return out

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> SearchSpace:
        """The exact inverse of :meth:`to_dict` (the space a study stored), no narrowing rules.

        A choice added after the study was made is fixed at the value it trained with
        (:data:`LEGACY_CHOICES`).
        """
        default = cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in stored:
                values[f.name] = LEGACY_CHOICES[f.name]
                continue
            current, value = getattr(default, f.name), stored[f.name]
            values[f.name] = type(current)(**value) if dataclasses.is_dataclass(current) else tuple(value)
        return cls(**values)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, where: str = "search_space") -> SearchSpace:
        """Narrow the default space with a ``[search_space]`` table from a config file.

        Ranges are ``{low = .., high = ..}`` or a single value (fixed); choices are lists.

        Raises:
            ConfigError: on an unknown key, a wrong type or a range outside the hard limits.
        """
        default = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key; known keys are {', '.join(sorted(known))}")
            current = getattr(default, key)
            if isinstance(current, IntRange):
                changes[key] = _int_range(f"{where}.{key}", value, current, _INT_LIMITS[key])
            elif isinstance(current, FloatRange):
                changes[key] = _float_range(f"{where}.{key}", value, current, _FLOAT_LIMITS[key])
            else:
                changes[key] = _choices(f"{where}.{key}", key, value)
        return dataclasses.replace(default, **changes)


def _bounds(name: str, value: Any) -> tuple[Any, Any]:
    if isinstance(value, Mapping):
        extra = set(value) - {"low", "high"}
        if extra or not {"low", "high"} <= set(value):
            raise ConfigError(f"{name}: expected {{low = .., high = ..}} or a single value, got {dict(value)}")
        return value["low"], value["high"]
    return value, value


def _int_range(name: str, value: Any, default: IntRange, limits: tuple[int, int]) -> IntRange:
    low, high = _bounds(name, value)
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name}: {v!r} is not an integer")
    _check_order(name, low, high, limits)
    return IntRange(low, high, log=default.log)


def _float_range(name: str, value: Any, default: FloatRange, limits: tuple[float, float]) -> FloatRange:
    low, high = _bounds(name, value)
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name}: {v!r} is not a number")
    _check_order(name, float(low), float(high), limits)
    return FloatRange(float(low), float(high), log=default.log)


def _check_order(name: str, low: Any, high: Any, limits: tuple[Any, Any]) -> None:
    if low > high:
        raise ConfigError(f"{name}: low={low} > high={high}; swap them")
    if low < limits[0] or high > limits[1]:
        raise ConfigError(f"{name}: [{low}, {high}] is outside the allowed [{limits[0]}, {limits[1]}]")


def _choices(name: str, key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{name}: expected a non-empty list of choices, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{name}: {value} lists a choice twice; remove the duplicate")
    if key == "class_weight":
        bad = [v for v in value if v not in CLASS_WEIGHT_STRATEGIES]
        if bad:
            raise ConfigError(f"{name}: unknown strategy {bad[0]!r}; choose from {', '.join(CLASS_WEIGHT_STRATEGIES)}")
        return tuple(value)
    if key in ("bidirectional", "masking"):
        if any(not isinstance(v, bool) for v in value):
            raise ConfigError(f"{name}: expected a list of true/false, got {value}")
        return tuple(value)
    if key == "pooling":
        bad = [v for v in value if v not in POOLINGS]
        if bad:
            raise ConfigError(f"{name}: unknown pooling {bad[0]!r}; choose from {', '.join(POOLINGS)}")
        return tuple(value)
    if key == "architecture":
        bad = [v for v in value if v not in ARCHITECTURES]
        if bad:
            raise ConfigError(f"{name}: unknown architecture {bad[0]!r}; choose from {', '.join(ARCHITECTURES)}")
        return tuple(value)
    if key == "lr_schedule":
        bad = [v for v in value if v not in LR_SCHEDULES]
        if bad:
            raise ConfigError(f"{name}: unknown schedule {bad[0]!r}; choose from {', '.join(LR_SCHEDULES)}")
        return tuple(value)
    if key == "conv_filters":
        low, high = CONV_FILTERS_LIMITS
        if any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in value):
            raise ConfigError(f"{name}: filter counts must be integers in [{low}, {high}] (0 = no Conv1D front-end), "
                              f"got {value}")
        return tuple(value)
    if key == "batch_size":
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise ConfigError(f"{name}: batch sizes must be positive integers, got {value}")
        return tuple(value)
    # clipnorm: 0 means no clipping.
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value):
        raise ConfigError(f"{name}: clip norms must be numbers >= 0 (0 = no clipping), got {value}")
    return tuple(float(v) for v in value)


# Trial 1 of a new study: LSTM-FCN as published (Karim et al. 2017: 8 LSTM cells, dropout 0.8, Adam
# 1e-3), with batch 16 and "balanced" class weights; moved into the space like the stacked recipe
# (the default space gives 16 cells and dropout 0.5).
LSTM_FCN_RECIPE = LstmParams(architecture="lstm_fcn", units=8, layers=1, dropout=0.8, batch_size=16,
                             lr_schedule="cosine")


def baseline_params(space: SearchSpace, *, padded: bool = False, features: int = 1,
                    recipe: LstmParams | None = None) -> dict[str, Any]:
    """The first trial of every new study: the classic stacked LSTM (the :class:`LstmParams`
    defaults: 2 x LSTM(64), dropout 0.2, Adam 1e-3, "balanced" class weights, batch 32), or another
    ``recipe``, moved into ``space`` where the space excludes a value (nearest bound of a range,
    first listed choice).

    Returned as the trial parameters :func:`suggest_params` asks for, ready for
    ``study.enqueue_trial``: the search never ends worse than the recipe users copy, on validation.
    """
    default = recipe if recipe is not None else LstmParams()
    params: dict[str, Any] = {}
    for f in dataclasses.fields(space):
        allowed, value = getattr(space, f.name), getattr(default, f.name)
        if isinstance(allowed, (IntRange, FloatRange)):
            params[f.name] = min(max(value, allowed.low), allowed.high)
        else:
            params[f.name] = value if value in allowed else allowed[0]
    return {k: v for k, v in params.items() if k in asked_params(params, space, padded=padded, features=features)}


def recipe_trials(space: SearchSpace, *, padded: bool = False, features: int = 1) -> list[dict[str, Any]]:
    """The trials a new study starts with, in order: the classic stacked LSTM
    (:func:`baseline_params`), then :data:`LSTM_FCN_RECIPE` where the space has ``lstm_fcn``."""
    trials = [baseline_params(space, padded=padded, features=features)]
    if "lstm_fcn" in space.architecture:
        fcn = baseline_params(space, padded=padded, features=features, recipe=LSTM_FCN_RECIPE)
        if fcn not in trials:
            trials.append(fcn)
    return trials


def asked_params(chosen: Mapping[str, Any], space: SearchSpace, *, padded: bool, features: int) -> set[str]:
    """The trial parameters :func:`suggest_params` asks for, given the ``architecture`` and
    ``conv_filters`` in ``chosen``; the other fields keep their :class:`LstmParams` default."""
    names = {f.name for f in dataclasses.fields(LstmParams)}
    if chosen["architecture"] == "lstm_fcn":
        # The FCN branch replaces the Conv1D front-end; on univariate data the LSTM branch reads one
        # step, where the last state, the mean and attention over steps are the same thing.
        names -= {"conv_filters", "masking"} | ({"pooling"} if features == 1 else set())
    elif not (padded and chosen["conv_filters"] == 0 and True in space.masking):
        names.discard("masking")
    return names


def suggest_params(trial: Any, space: SearchSpace, *, padded: bool = False, features: int = 1) -> LstmParams:
    """Ask an Optuna trial (or ``FixedTrial``) for one configuration from ``space``.

    ``masking`` is asked only where it can matter: the data is ``padded`` (see
    :func:`sweep.data.is_padded`), the architecture is ``"stacked"`` and there is no Conv1D
    front-end (a convolution mixes the padding into its neighbours, so no mask survives it).
    ``"lstm_fcn"`` asks no ``conv_filters`` (its convolutional branch is fixed) and, on univariate
    data (``features == 1``), no ``pooling``. A field not asked keeps its :class:`LstmParams` default.
    """
    chosen: dict[str, Any] = {"architecture": trial.suggest_categorical("architecture", list(space.architecture))}
    chosen["conv_filters"] = (trial.suggest_categorical("conv_filters", list(space.conv_filters))
                              if chosen["architecture"] == "stacked" else 0)
    asked = asked_params(chosen, space, padded=padded, features=features)
    default = LstmParams()
    if "masking" in asked:
        chosen["masking"] = trial.suggest_categorical("masking", list(space.masking))
    chosen.update(
        units=trial.suggest_int("units", space.units.low, space.units.high, log=space.units.log),
        layers=trial.suggest_int("layers", space.layers.low, space.layers.high),
        dropout=trial.suggest_float("dropout", space.dropout.low, space.dropout.high),
        learning_rate=trial.suggest_float(
            "learning_rate", space.learning_rate.low, space.learning_rate.high, log=space.learning_rate.log
        ),
        class_weight=trial.suggest_categorical("class_weight", list(space.class_weight)),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_size)),
        clipnorm=trial.suggest_categorical("clipnorm", list(space.clipnorm)),
        lr_schedule=trial.suggest_categorical("lr_schedule", list(space.lr_schedule)),
        bidirectional=trial.suggest_categorical("bidirectional", list(space.bidirectional)),
        pooling=(trial.suggest_categorical("pooling", list(space.pooling)) if "pooling" in asked
                 else default.pooling),
    )
    return LstmParams(**chosen)
