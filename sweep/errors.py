"""Errors a user can act on. The CLI prints their message on one line and exits 2."""

from __future__ import annotations


class SweepError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(SweepError):
    """A config file, flag or search-space range is invalid."""


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
