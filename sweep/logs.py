"""Logging for the `sweep` command, configured once by the CLI (:func:`configure`); importing any
module of lstm-sweep changes no logger, warning filter or environment variable.

Library users (``import sweep``) keep their own logging set-up: the modules only log through
``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import sys
import warnings

from rich.console import Console
from rich.logging import RichHandler

# Third-party loggers that talk too much for a terminal (their warnings reach --verbose only).
NOISY = ("mlflow", "alembic", "urllib3")
_HANDLER_NAME = "lstm-sweep"


def configure(*, verbose: bool = False) -> None:
    """Send log records to stderr: through Rich on a terminal (they print above a live progress bar
    instead of through it), as plain lines when stderr is piped. Default: warnings from lstm-sweep;
    ``verbose``: also each trial's info lines
    and the libraries' warnings. Idempotent."""
    root = logging.getLogger()
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler: logging.Handler
        if sys.stderr.isatty():
            handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False,
                                  rich_tracebacks=False, keywords=[])
        else:  # piped or captured: one plain line per record (Rich would wrap and pad them)
            handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = logging.INFO if verbose else logging.WARNING
    for name in ("sweep", "objectives"):
        logging.getLogger(name).setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)
    # MLflow logs a lost database connection with its traceback before raising it; the sweep catches
    # the error, says so in one line and logs the trial later.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    quiet_warnings()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING if verbose else optuna.logging.ERROR)


def quiet_warnings() -> None:
    """Warning filters for the command line: Optuna marks the heartbeats and stale-trial retries we
    rely on as experimental, and MLflow warns about its own deprecations on every run."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", module="mlflow")
