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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        """The exact inverse of :meth:`to_dict` (the space a study stored), no narrowing rules."""
        default = cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
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
    if key == "batch_size":
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise ConfigError(f"{name}: batch sizes must be positive integers, got {value}")
        return tuple(value)
    # clipnorm: 0 means no clipping.
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value):
        raise ConfigError(f"{name}: clip norms must be numbers >= 0 (0 = no clipping), got {value}")
    return tuple(float(v) for v in value)


def suggest_params(trial: Any, space: SearchSpace) -> LstmParams:
    """Ask an Optuna trial (or ``FixedTrial``) for one configuration from ``space``."""
    return LstmParams(
        units=trial.suggest_int("units", space.units.low, space.units.high, log=space.units.log),
        layers=trial.suggest_int("layers", space.layers.low, space.layers.high),
        dropout=trial.suggest_float("dropout", space.dropout.low, space.dropout.high),
        learning_rate=trial.suggest_float(
            "learning_rate", space.learning_rate.low, space.learning_rate.high, log=space.learning_rate.log
        ),
        class_weight=trial.suggest_categorical("class_weight", list(space.class_weight)),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_size)),
        clipnorm=trial.suggest_categorical("clipnorm", list(space.clipnorm)),
    )
