"""Errors a user can act on. The CLI prints their message on one line and exits 2."""

from __future__ import annotations

from objectives.errors import ConfigError as ConfigError
from objectives.errors import SweepError as SweepError


class DataError(SweepError):
    """A data file cannot be read or does not hold a usable classification set."""


class StorageError(SweepError):
    """The Optuna storage URL is malformed or the database cannot be reached."""


class StudyError(SweepError):
    """A study is unknown, or cannot be resumed as asked."""


class TrackingError(SweepError):
    """The MLflow tracking store is malformed, unreachable, read-only or refuses our credentials."""


class ModelIntegrityError(SweepError):
    """A registered model is not the one the sweep recorded (files changed, alias moved)."""


def first_line(exc: BaseException | str) -> str:
    """An error's first non-empty message line (MLflow's and SQLAlchemy's errors run to pages), or
    its type's name when the message is empty."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0].strip()
