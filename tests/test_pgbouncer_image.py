"""The pgbouncer of docker-compose.yml and deploy/k8s, run for real: docker/pgbouncer-entrypoint.sh
with docker/pgbouncer.ini (only the addresses and the auth file's folder changed), as a non-root user
as in its image, in front of the local PostgreSQL.

It must write an auth file only its user can read from POSTGRES_USER / POSTGRES_PASSWORD (a password
with quotes and spaces included), drop the password from pgbouncer's environment, check clients'
passwords (SCRAM), and carry lstm-sweep's Optuna storage in its transaction pooling mode.

Seconds; needs the `pgbouncer` binary (Debian package; .ci/run installs it) and the PostgreSQL server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from _servers import stop_session
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
NOBODY = 65534

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")]


def _rewrite(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"docker/pgbouncer.ini: expected one line matching {pattern!r}"
    return new


@pytest.fixture
def deployed_pgbouncer(pg_url):
    """Yields (port, user, password, pid, auth file) of the image's pgbouncer in front of pg_url's server."""
    upstream = make_url(pg_url)
    folder = Path(tempfile.mkdtemp(prefix="sweep-deploy-pgbouncer-"))
    port, user, password = free_port(), upstream.username or "postgres", 'p"w $x \\ y'
    ini = (ROOT / "docker" / "pgbouncer.ini").read_text()
    ini = _rewrite(ini, r"^\* = host=postgres port=5432$", f"* = host={upstream.host} port={upstream.port or 5432}")
    ini = _rewrite(ini, r"^listen_addr = .*$", "listen_addr = 127.0.0.1")
    ini = _rewrite(ini, r"^listen_port = 6432$", f"listen_port = {port}")
    ini = _rewrite(ini, r"^auth_file = /tmp/pgbouncer/userlist.txt$", f"auth_file = {folder}/auth/userlist.txt")
    (folder / "pgbouncer.ini").write_text(ini)
    # The image's script, copied beside the config: the unprivileged user below may not be able to
    # reach the checkout (a clone under a private `mktemp -d` folder, mode 700).
    entrypoint = folder / "pgbouncer-entrypoint.sh"
    shutil.copy2(ROOT / "docker" / "pgbouncer-entrypoint.sh", entrypoint)
    cmd = [str(entrypoint)]
    if os.geteuid() == 0:  # as in the image: never root (pgbouncer refuses it)
        os.chown(folder, NOBODY, NOBODY)
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    env = {"PATH": f"{os.environ['PATH']}:{Path(PGBOUNCER).parent}", "POSTGRES_USER": user,
           "POSTGRES_PASSWORD": password, "PGBOUNCER_AUTH_DIR": f"{folder}/auth",
           "PGBOUNCER_CONFIG": str(folder / "pgbouncer.ini")}
    log = (folder / "out.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer did not start: {(folder / 'out.log').read_text()[-1500:]}")
            time.sleep(0.1)
        yield port, user, password, proc.pid, folder / "auth" / "userlist.txt"
    finally:
        stop_session(proc, sig=signal.SIGINT, timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_entrypoint_writes_a_private_auth_file_and_keeps_the_password_out_of_pgbouncer(deployed_pgbouncer):
    _, user, password, pid, auth_file = deployed_pgbouncer
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth_file.parent.stat().st_mode) == 0o700
    assert auth_file.read_text() == f'"{user}" "{password.replace(chr(34), chr(34) * 2)}"\n'
    # The entrypoint exec'd pgbouncer (same pid) without the password in its command line or environment.
    assert Path(f"/proc/{pid}/exe").resolve().name == "pgbouncer"
    for part in ("cmdline", "environ"):
        assert password.encode() not in Path(f"/proc/{pid}/{part}").read_bytes(), part


def test_clients_need_the_password(deployed_pgbouncer, pg_url):
    port, user, password, _, _ = deployed_pgbouncer
    database = make_url(pg_url).database
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(host="127.0.0.1", port=port, user=user, password=password + "x", dbname=database,
                        connect_timeout=5)
    with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=database,
                         connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database,)


def test_sweep_storage_works_through_its_transaction_pooling(deployed_pgbouncer, pg_url, monkeypatch):
    import optuna

    from sweep.storage import open_storage

    port, user, password, _, _ = deployed_pgbouncer
    # As the workers connect: no password in the URL, PGPASSWORD in the environment.
    monkeypatch.setenv("PGPASSWORD", password)
    url = make_url(pg_url).set(host="127.0.0.1", port=port, username=user, password=None)
    storage = open_storage(url.render_as_string(hide_password=False), heartbeat=False)
    study = optuna.create_study(study_name="pooled", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12)  # > 5 runs of each statement
    assert len(optuna.load_study(study_name="pooled", storage=storage).trials) == 12
