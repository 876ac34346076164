"""A private pgbouncer on a free loopback port, in front of one PostgreSQL database, for a benchmark
or a test: its config, auth file, log and pid file live in a temporary folder, and it is stopped
(and the folder removed) on exit.

Needs the ``pgbouncer`` binary (Debian: ``apt-get install -y pgbouncer``; found on PATH or in
/usr/sbin). Auth to pgbouncer is ``trust`` on 127.0.0.1 only; pgbouncer logs in to PostgreSQL as the
URL's user (with its password, if the URL has one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

MODES = ("session", "transaction")


def binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(*, folder: Path, port: int, host: str, upstream_port: int, dbname: str, user: str, password: str | None,
            mode: str, pool_size: int) -> str:
    secret = f" password={password}" if password else ""
    return f"""[databases]
{dbname} = host={host} port={upstream_port} dbname={dbname} user={user}{secret}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {folder}
auth_type = trust
auth_file = {folder}/userlist.txt
admin_users = {user}
stats_users = {user}
pool_mode = {mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
max_db_connections = {pool_size}
server_reset_query = DISCARD ALL
server_check_delay = 10
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""


@contextlib.contextmanager
def pgbouncer(url: str, *, mode: str = "transaction", pool_size: int = 20, start_timeout: float = 10.0) -> Iterator[str]:
    """Run pgbouncer in front of ``url``'s database; yield the same URL pointing at pgbouncer.

    Args:
        url: a SQLAlchemy URL of a PostgreSQL database on a loopback address.
        mode: pgbouncer's ``pool_mode``: ``transaction`` or ``session``.
        pool_size: server connections pgbouncer may open to the database (``default_pool_size`` and
            ``max_db_connections``): the most the database ever sees from it.

    Raises:
        RuntimeError: pgbouncer is not installed, or did not start (its log's last lines).
    """
    from sqlalchemy.engine import make_url

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    exe = binary()
    if exe is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
    parsed = make_url(url)
    host = parsed.host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"pgbouncer() fronts loopback databases only, not {host}")
    folder = Path(tempfile.mkdtemp(prefix="sweep-pgbouncer-"))
    proc = None
    try:
        port = free_port()
        user = parsed.username or "postgres"
        (folder / "userlist.txt").write_text(f'"{user}" ""\n')
        (folder / "pgbouncer.ini").write_text(_config(
            folder=folder, port=port, host=host, upstream_port=parsed.port or 5432, dbname=parsed.database, user=user,
            password=parsed.password, mode=mode, pool_size=pool_size))
        cmd = [exe, "-q", str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root: drop to nobody, who must own its folder
            os.chown(folder, 65534, 65534)
            for f in folder.iterdir():
                os.chown(f, 65534, 65534)
            cmd[1:1] = ["-u", "nobody"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + start_timeout
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = folder / "pgbouncer.log"
                tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
                raise RuntimeError(f"pgbouncer did not start (exit {proc.poll()}): {' | '.join(tail) or 'no log'}")
            time.sleep(0.05)
        yield parsed.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # SIGINT: safe shutdown (closes client and server connections)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def show(url: str, command: str) -> list[dict[str, object]]:
    """Run an admin-console command (``SHOW POOLS``, ``SHOW STATS``) on the pgbouncer at ``url``."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(host="127.0.0.1", port=parsed.port, dbname="pgbouncer", user=parsed.username or "postgres",
                         autocommit=True, prepare_threshold=None, connect_timeout=5) as conn:
        cur = conn.execute(command)
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row)) for row in cur.fetchall()]
