"""The two error types the trial layer raises; :mod:`sweep.errors` adds the rest of the family.

They live here, at the bottom of the import graph, so that ``objectives/`` needs nothing from
``sweep/`` (``sweep.errors`` re-exports both: import them from there).
"""

from __future__ import annotations


class SweepError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(SweepError):
    """A config file, flag or search-space range is invalid."""
