"""Real servers on loopback, shared by the benchmarks and the tests: fresh PostgreSQL databases and
an ``mlflow server`` process. Importing this module changes nothing (unlike ``_common``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_databases(count: int, *, base: str | None = None, prefix: str = "sweep_bench") -> Iterator[list[str]]:
    """``count`` new databases on the server of ``base`` (default: SWEEP_TEST_POSTGRES_URL, else the
    local server's database ``test``), dropped afterwards (connections and all); yields their URLs."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base or os.environ.get("SWEEP_TEST_POSTGRES_URL") or LOCAL_POSTGRES)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    names = [f"{prefix}_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [url.set(drivername="postgresql+psycopg", database=n).render_as_string(hide_password=False)
               for n in names]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_database(base: str | None = None, *, prefix: str = "sweep_bench") -> Iterator[str]:
    """One new database (:func:`postgres_databases`); yields its URL."""
    with postgres_databases(1, base=base, prefix=prefix) as (url,):
        yield url


def stop_session(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop a server started with ``start_new_session=True`` and its children: ``sig`` to its
    process group, SIGKILL if it has not exited after ``timeout`` seconds. A server that already
    exited (it failed to start) is only reaped: stopping it must not hide why it failed."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def mlflow_server(backend: str, folder: Path, *, start_timeout: float = 120.0) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with proxied artifacts (in ``folder``) over ``backend``;
    yields its URL once its REST API answers. Its log is ``folder/mlflow-server.log``."""
    port = free_port()
    log_path = folder / "mlflow-server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", str(folder / "server-artifacts"), "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + start_timeout
    try:
        while True:
            try:
                # Its first API answer (not /health): the REST API is up, tables and all.
                with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_session(proc)
        log.close()
