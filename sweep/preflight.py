"""The MLflow tracking store, resolved and checked before anything is written anywhere.

``sweep run`` must not create an Optuna study and then find that the tracking store is down,
read-only or refuses its credentials: :func:`check_tracking_store` asks the store a read-only
question first (an HTTP request to an MLflow server, ``SELECT 1`` on a database, file
permissions for SQLite). No MLflow import: a bad URI fails in about a second.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from sweep.errors import TrackingError
from sweep.redact import credential_free, mask_url, redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PROBE_TIMEOUT_S = 15.0  # a refused connection fails at once; a healthy server on a busy machine may take seconds
_FIX = "check --tracking-uri / MLFLOW_TRACKING_URI"


def mlflow_defaults() -> None:
    """MLflow settings for a sweep, unless the environment sets them: fewer and shorter HTTP retries
    (a dead server fails a command in seconds, not minutes), no download progress bars in the
    sweep's output. Read by MLflow when it makes a request, so set before the first one."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI MLflow is given: the flag, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    A relative SQLite path is made absolute (the study stores this URI, and ``sweep predict`` may
    run from another folder). HTTP basic-auth credentials in the URI (``http://user:pw@host``) move
    to ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` in this process's environment
    (MLflow reads them there; its REST errors quote the host URL, userinfo and all).
    """
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI).strip()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if path and not path.startswith(":"):
            uri = f"sqlite:///{Path(path).resolve()}{sep}{query}"
    if uri.lower().startswith(("http://", "https://")):
        user, password = _userinfo(uri)
        if user is not None:
            os.environ["MLFLOW_TRACKING_USERNAME"] = user
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password or ""
            uri = credential_free(uri)
    return uri


def _userinfo(uri: str) -> tuple[str | None, str | None]:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return None, None
    if parts.username is None:
        return None, None
    return unquote(parts.username), unquote(parts.password) if parts.password is not None else None


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]
    return None if not path or path.startswith(":") else Path(path)


def check_writable_sqlite(path: Path, *, what: str, shown: str, fix: str) -> None:
    """Raise (via ``TrackingError``-like messages) unless ``path`` can be created or written.

    SQLite writes beside the file too (journal / WAL files), so its folder must be writable.
    """
    folder = path.parent
    if not folder.exists():
        raise TrackingError(f"{what} {shown}: folder {folder} does not exist; create it first")
    if path.exists() and not path.is_file():
        raise TrackingError(f"{what} {shown}: {path} is not a file; {fix}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise TrackingError(f"{what} {shown}: {path} is read-only; make it writable (chmod u+w) or {fix}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"{what} {shown}: folder {folder} is read-only (SQLite writes its journal there); "
                            f"make it writable or {fix}")


def check_tracking_store(uri: str) -> None:
    """Ask the tracking store a read-only question; raise TrackingError (one line, no secret) if it fails.

    sqlite: the folder exists and the file (if any) and folder are writable; http(s): the MLflow
    REST API answers (401/403: the credentials are wrong); other databases: ``SELECT 1`` works.
    Other schemes (``databricks``, ``file``) are left to MLflow.
    """
    shown = mask_url(uri)
    path = sqlite_file(uri)
    if path is not None:
        check_writable_sqlite(path, what="MLflow store", shown=shown, fix="pass another --tracking-uri")
        return
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        _probe_http(uri, shown)
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _probe_database(uri, shown)


def _probe_http(uri: str, shown: str) -> None:
    url = credential_free(uri).rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    user, password = _userinfo(uri)
    user = user if user is not None else os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = password if password is not None else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user is not None:
        basic = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    context = None
    if uri.lower().startswith("https://"):
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
            context = ssl._create_unverified_context()
        else:
            context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S, context=context) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(
                f"MLflow tracking server {shown} refused the credentials (HTTP {exc.code}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)") from None
        raise TrackingError(f"{shown} does not answer as an MLflow tracking server (HTTP {exc.code} on "
                            f"/api/2.0/mlflow/experiments/search); {_FIX}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TrackingError(f"cannot reach the MLflow tracking server {shown}: {redact(reason, uri)}; start it or "
                            f"{_FIX}") from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise TrackingError(f"{shown} answered, but not as an MLflow tracking server (no JSON from its REST API); "
                            f"{_FIX}") from None


def _probe_database(uri: str, shown: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(uri)
        backend = url.get_backend_name()
        connect_args = {"connect_timeout": int(PROBE_TIMEOUT_S)} if backend in ("postgresql", "mysql") else {}
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise TrackingError(f"MLflow store {shown}: needs the Python module {exc.name!r}, which is not installed; "
                            "install it or name an installed driver (postgresql+psycopg://...)") from None
    except Exception as exc:  # noqa: BLE001 - malformed URL
        raise TrackingError(f"MLflow store {shown}: {redact(_first_line(exc), uri)}; {_FIX}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - driver errors vary
        reason = redact(_first_line(getattr(exc, "orig", None) or exc), uri)
        raise TrackingError(f"cannot open MLflow store {shown}: {reason}; {_FIX}") from None
    finally:
        engine.dispose()


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
