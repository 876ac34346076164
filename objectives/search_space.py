"""The search space: what Optuna may try, and the typed parameters a trial gets.

Trial parameter names equal the fields of :class:`LstmParams`, so
``LstmParams(**study.best_params)`` rebuilds the best model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from objectives.errors import ConfigError

CLASS_WEIGHT_STRATEGIES = ("none", "balanced", "sqrt", "oversample")
POOLINGS = ("last", "mean", "attention")
ARCHITECTURES = ("stacked", "lstm_fcn")
LR_SCHEDULES = ("plateau", "cosine")
CONV_FILTERS_LIMITS = (0, 512)
FCN_FILTERS_LIMITS = (8, 512)
DOWNSAMPLE_LIMITS = (1, 16)

# Choices added after the first release, with the value every older study trained with: a study
# whose stored space lacks them resumes with them fixed at that value (SearchSpace.from_dict).
LEGACY_CHOICES: dict[str, tuple[Any, ...]] = {
    "bidirectional": (False,), "conv_filters": (0,), "pooling": ("last",), "masking": (False,),
    "architecture": ("stacked",), "lr_schedule": ("plateau",), "fcn_filters": (128,), "downsample": (1,),
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
    # LSTM-FCN's convolution widths: fcn_filters, 2 x fcn_filters, fcn_filters (Karim et al.: 128).
    # Half the width trains Strawberry's 235-step series 2.2x faster per epoch (benchmarks/retrained.py).
    fcn_filters: int = 128
    # > 1: the standardized series is averaged over windows of this many steps before the model
    # reads it (AveragePooling1D). Asked only of long, unpadded series (asked_params): Strawberry's
    # 235 steps averaged in fours lost no accuracy for LSTM-FCN and trained at a third of the epoch time.
    downsample: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# With a Conv1D front-end, max pooling after it shortens long series to at most this many steps for
# the LSTM (Earthquakes, 512 steps: pool 4; Strawberry, 235: pool 2; shorter series: no pooling).
# Series longer than this are "long": only there is downsampling searched.
MAX_RECURRENT_STEPS = 128


def conv_pool_size(timesteps: int) -> int:
    """The max-pooling size after a Conv1D front-end: the smallest that leaves <= 128 steps."""
    return max(1, -(-timesteps // MAX_RECURRENT_STEPS))


def downsampled_steps(timesteps: int, downsample: int) -> int:
    """How many steps the model's layers see after averaging over windows of ``downsample`` (the
    last window may be short)."""
    return -(-timesteps // max(1, downsample))


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
    fcn_filters: tuple[int, ...] = (32, 64, 128)  # asked of LSTM-FCN trials only
    downsample: tuple[int, ...] = (1, 2, 4)  # asked of long, unpadded series only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if isinstance(value, (IntRange, FloatRange)) else list(value)
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
            values[f.name] = type(current)(**value) if isinstance(current, (IntRange, FloatRange)) else tuple(value)
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


# Knobs whose choices are names from a fixed list: (what the error calls one, the allowed names).
_NAMED_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "class_weight": ("strategy", CLASS_WEIGHT_STRATEGIES),
    "pooling": ("pooling", POOLINGS),
    "architecture": ("architecture", ARCHITECTURES),
    "lr_schedule": ("schedule", LR_SCHEDULES),
}


# Knobs whose choices are filter counts: (what the error calls them, inclusive limits, a note on 0).
_FILTER_COUNTS: dict[str, tuple[str, tuple[int, int], str]] = {
    "conv_filters": ("filter counts", CONV_FILTERS_LIMITS, " (0 = no Conv1D front-end)"),
    "fcn_filters": ("LSTM-FCN filter counts", FCN_FILTERS_LIMITS, ""),
    "downsample": ("downsampling factors", DOWNSAMPLE_LIMITS, " (1 = the series as given)"),
}


def _choices(name: str, key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{name}: expected a non-empty list of choices, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{name}: {value} lists a choice twice; remove the duplicate")
    named = _NAMED_CHOICES.get(key)
    if named is not None:
        what, allowed = named
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ConfigError(f"{name}: unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
        return tuple(value)
    if key in ("bidirectional", "masking"):
        if any(not isinstance(v, bool) for v in value):
            raise ConfigError(f"{name}: expected a list of true/false, got {value}")
        return tuple(value)
    counts = _FILTER_COUNTS.get(key)
    if counts is not None:
        what, (low, high), note = counts
        if any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in value):
            raise ConfigError(f"{name}: {what} must be integers in [{low}, {high}]{note}, got {value}")
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
# On long series (where downsampling is asked) it reads them averaged in fours: Strawberry's 235
# steps, averaged to 59, scored 0.976 test balanced accuracy against 0.955 as given, at a third of
# the epoch time (one seed each, the whole training part, 200 and 60 epochs).
LSTM_FCN_RECIPE = LstmParams(architecture="lstm_fcn", units=8, layers=1, dropout=0.8, batch_size=16,
                             lr_schedule="cosine", downsample=4)


def baseline_params(space: SearchSpace, *, padded: bool = False, features: int = 1, timesteps: int = 0,
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
    asked = asked_params(params, space, padded=padded, features=features, timesteps=timesteps)
    return {k: v for k, v in params.items() if k in asked}


def recipe_trials(space: SearchSpace, *, padded: bool = False, features: int = 1,
                  timesteps: int = 0) -> list[dict[str, Any]]:
    """The trials a new study starts with, in order: the classic stacked LSTM
    (:func:`baseline_params`), then :data:`LSTM_FCN_RECIPE` where the space has ``lstm_fcn``."""
    trials = [baseline_params(space, padded=padded, features=features, timesteps=timesteps)]
    if "lstm_fcn" in space.architecture:
        fcn = baseline_params(space, padded=padded, features=features, timesteps=timesteps, recipe=LSTM_FCN_RECIPE)
        if fcn not in trials:
            trials.append(fcn)
    return trials


# The parameters asked only of some configurations (asked_params says which); ``conv_filters`` is
# asked of every stacked LSTM and fixed at 0 for LSTM-FCN.
CONDITIONAL_PARAMS = frozenset({"masking", "pooling", "fcn_filters", "downsample"})


def asked_params(chosen: Mapping[str, Any], space: SearchSpace, *, padded: bool, features: int,
                 timesteps: int = 0) -> set[str]:
    """The trial parameters :func:`suggest_params` asks for, given the ``architecture`` and
    ``conv_filters`` in ``chosen``; the other fields keep their :class:`LstmParams` default.
    ``downsample`` is asked only of long series (more than :data:`MAX_RECURRENT_STEPS` steps;
    ``timesteps`` 0: unknown, not asked) that are not padded (averaging would mix the padding in)."""
    names = {f.name for f in dataclasses.fields(LstmParams)}
    if padded or timesteps <= MAX_RECURRENT_STEPS:
        names.discard("downsample")
    if chosen["architecture"] == "lstm_fcn":
        # The FCN branch replaces the Conv1D front-end; on univariate data the LSTM branch reads one
        # step, where the last state, the mean and attention over steps are the same thing.
        names -= {"conv_filters", "masking"} | ({"pooling"} if features == 1 else set())
        return names
    names.discard("fcn_filters")  # the stacked LSTM has no FCN branch
    if not (padded and chosen["conv_filters"] == 0 and True in space.masking):
        names.discard("masking")
    return names


# -- the description: what every reader of a trial's parameters needs to know ------------------------
# Adding a hyperparameter: a field in LstmParams (its default is what older studies trained with),
# its range or choices in SearchSpace, its config check in _choices (choices only), one Knob here,
# and its use in objectives/model.py. The sampler, the trial lines, the run titles, the `best` and
# `status` views, the diagnosis groups, the plots and the benchmarks read this description.

def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Knob:
    """One hyperparameter as the readers of trials show it."""

    name: str  # the LstmParams field and the Optuna parameter name
    label: str  # short name in a trial line: ``lr=1.0e-03``
    text: Callable[[Any], str] = _plain  # a value as shown
    # Architecture switches are shown only where they differ from the plain stacked LSTM
    # (LstmParams' default): ``conv=64``, ``bi``, ``pool=mean``, ``mask``.
    switch: bool = False


KNOBS: tuple[Knob, ...] = (
    Knob("units", "units"),
    Knob("layers", "layers"),
    Knob("dropout", "drop", lambda v: f"{v:.2f}"),
    Knob("learning_rate", "lr", lambda v: f"{v:.1e}"),
    Knob("class_weight", "cw"),
    Knob("batch_size", "bs"),
    Knob("clipnorm", "clip"),
    Knob("architecture", "", lambda v: str(v).replace("_", "-"), switch=True),  # shown as "lstm-fcn"
    Knob("conv_filters", "conv", switch=True),
    Knob("bidirectional", "bi", switch=True),
    Knob("pooling", "pool", switch=True),
    Knob("masking", "mask", switch=True),
    Knob("lr_schedule", "", switch=True),  # shown as "cosine" where it is not the recipe's "plateau"
    Knob("fcn_filters", "fcn", switch=True),  # shown where it is not the published 128
    Knob("downsample", "down", switch=True),  # shown where the series is averaged: ``down=4``
)
# The order Optuna is asked in (it decides which random draw goes to which parameter: keep it, or
# seeded studies propose other trials). Some are asked only where they can matter (asked_params).
SUGGEST_ORDER = ("architecture", "conv_filters", "masking", "units", "layers", "dropout", "learning_rate",
                 "class_weight", "batch_size", "clipnorm", "lr_schedule", "bidirectional", "pooling", "fcn_filters",
                 "downsample")


def short_params(params: Mapping[str, Any]) -> str:
    """A trial's parameters in one short line: ``units=64 layers=2 drop=0.20 lr=1.0e-03 ... conv=64 bi``."""
    default = LstmParams().to_dict()
    parts = []
    for knob in KNOBS:
        if knob.name not in params:
            continue
        value = params[knob.name]
        if not knob.switch:
            parts.append(f"{knob.label}={knob.text(value)}")
        elif value != default[knob.name]:
            parts.append(knob.label if isinstance(value, bool) else
                         f"{knob.label}={knob.text(value)}" if knob.label else knob.text(value))
    return " ".join(parts)


def architecture_name(params: Mapping[str, Any]) -> str:
    """``"LSTM"``, ``"BiLSTM"``, ``"conv+LSTM"`` or ``"conv+BiLSTM"`` (+ ``" masked"``), or
    ``"LSTM-FCN"`` / ``"BiLSTM-FCN"``; trials of studies made before these choices existed are
    plain ``"LSTM"``."""
    rnn = "BiLSTM" if params.get("bidirectional") else "LSTM"
    if params.get("architecture") == "lstm_fcn":
        return f"{rnn}-FCN"
    name = ("conv+" if params.get("conv_filters") else "") + rnn
    return name + (" masked" if params.get("masking") else "")


def describe(params: LstmParams | Mapping[str, Any]) -> str:
    """A configuration in words, for figure and run titles: ``2x conv+BiLSTM(64), attention pooling,
    dropout 0.20, lr 1.0e-03, class weight balanced, batch 32, clipnorm 0``; LSTM-FCN says so first."""
    p = params.to_dict() if isinstance(params, LstmParams) else {**LstmParams().to_dict(), **params}
    if p["architecture"] == "lstm_fcn":
        prefix, net = "LSTM-FCN (FCN 128/256/128 beside, on the dimension-shuffled series) ", architecture_name(
            {"bidirectional": p["bidirectional"]})
    else:
        prefix, net = "", architecture_name(p)
    return (f"{prefix}{p['layers']}x {net}({p['units']}), {p['pooling']} pooling, dropout {p['dropout']:.2f}, "
            f"lr {p['learning_rate']:.1e}, class weight {p['class_weight']}, batch {p['batch_size']}, "
            f"clipnorm {p['clipnorm']:g}, {p['lr_schedule']} schedule"
            + (f", series averaged in {p['downsample']}s" if p["downsample"] > 1 else ""))


def lr_decade(learning_rate: float) -> str:
    """``"1e-3"`` for 1e-3 <= lr < 1e-2."""
    return f"1e{math.floor(math.log10(learning_rate) + 1e-9)}"


def units_bucket(units: int) -> str:
    """Power-of-two bins: ``"<=2"``, ``"3-4"``, ``"5-8"``, ..., ``"65-128"``."""
    if units <= 2:
        return "<=2"
    high = 1 << math.ceil(math.log2(units))
    return f"{high // 2 + 1}-{high}"


@dataclass(frozen=True)
class Grouping:
    """A way to group trials by their parameters (the collapse summary, its plot, the diagnosis)."""

    name: str
    title: str  # the plot's axis label
    key: Callable[[Mapping[str, Any]], str | None]  # a trial's group; None: not in this grouping
    order: Callable[[str], Any] = str  # sorts the groups


GROUPINGS: tuple[Grouping, ...] = (
    Grouping("class_weight", "class weight", lambda p: p.get("class_weight")),
    Grouping("learning_rate", "learning-rate decade",
             lambda p: lr_decade(p["learning_rate"]) if p.get("learning_rate") else None, lambda v: int(v[2:])),
    Grouping("units", "units per layer", lambda p: units_bucket(p["units"]) if p.get("units") else None,
             lambda v: int(v.lstrip("<=").split("-")[-1])),
    Grouping("layers", "LSTM layers", lambda p: str(p["layers"]) if p.get("layers") else None, int),
    Grouping("architecture", "architecture", lambda p: architecture_name(p) if p.get("units") else None),
    Grouping("pooling", "pooling over time", lambda p: p.get("pooling", "last") if p.get("units") else None),
)


def sample_params(
    get: Callable[[str, str, Any], Any], space: SearchSpace, *, padded: bool = False, features: int = 1,
    timesteps: int = 0,
) -> LstmParams:
    """One configuration from ``space`` through any sampler's ``get(name, kind, spec)``: kind
    ``"int"`` or ``"float"`` with spec ``(low, high, log)``, or ``"choice"`` with a list.

    ``masking`` is asked only where it can matter: the data is ``padded`` (see
    :func:`objectives.preprocessing.is_padded`), the architecture is ``"stacked"`` and there is no
    Conv1D front-end (a convolution mixes the padding into its neighbours, so no mask survives it).
    ``"lstm_fcn"`` asks no ``conv_filters`` (its convolutional branch is fixed) and, on univariate
    data (``features == 1``), no ``pooling``. ``downsample`` is asked only of long, unpadded series
    (``timesteps``). A field not asked keeps its :class:`LstmParams` default.
    """
    default = LstmParams().to_dict()
    chosen: dict[str, Any] = {}
    for name in SUGGEST_ORDER:
        if name == "conv_filters" and chosen["architecture"] != "stacked":
            chosen[name] = 0
            continue
        if name in CONDITIONAL_PARAMS and name not in asked_params(
                chosen, space, padded=padded, features=features, timesteps=timesteps):
            continue
        allowed = getattr(space, name)
        if isinstance(allowed, IntRange):
            chosen[name] = get(name, "int", (allowed.low, allowed.high, allowed.log))
        elif isinstance(allowed, FloatRange):
            chosen[name] = get(name, "float", (allowed.low, allowed.high, allowed.log))
        else:
            chosen[name] = get(name, "choice", list(allowed))
    return LstmParams(**{**default, **chosen})


def suggest_params(trial: Any, space: SearchSpace, *, padded: bool = False, features: int = 1,
                   timesteps: int = 0) -> LstmParams:
    """Ask an Optuna trial (or ``FixedTrial``) for one configuration from ``space`` (:func:`sample_params`)."""

    def get(name: str, kind: str, spec: Any) -> Any:
        if kind == "int":
            return trial.suggest_int(name, spec[0], spec[1], log=spec[2])
        if kind == "float":
            return trial.suggest_float(name, spec[0], spec[1], log=spec[2])
        return trial.suggest_categorical(name, spec)

    return sample_params(get, space, padded=padded, features=features, timesteps=timesteps)
