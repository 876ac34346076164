"""What the `sweep` commands share: options, the study a command reads, the seed check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sweep.config import DEFAULT_STORAGE
from sweep.errors import SweepError
from sweep.redact import mask_url

StorageOpt = typer.Option(
    DEFAULT_STORAGE, "--storage", envvar="SWEEP_STORAGE", show_envvar=True,
    help="Optuna storage: any SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg://user:pw@host/db).",
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout instead of a table.")
StudyTrackingOpt = typer.Option(
    None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
    help="MLflow tracking URI (default: the store the study logged to).",
)


def open_study(name: str, storage: str) -> Any:
    from sweep.storage import open_storage
    from sweep.study import load_study

    return load_study(name, open_storage(storage, must_exist=True, heartbeat=False))


def study_tracking_uri(study: Any, tracking_uri: str | None) -> str:
    """The flag / MLFLOW_TRACKING_URI, else the store the study logged to (stored credential-free:
    credentials come from this environment); an SQLite store must exist."""
    uri = tracking_uri or study.user_attrs.get("tracking_uri") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///").partition("?")[0]).exists():
        raise SweepError(f"no MLflow store at {mask_url(uri)}; pass the --tracking-uri the study logged to")
    return uri


def check_seed(seed: int) -> None:
    from sweep.config import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise SweepError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
