"""Faults injected for real: a cut network link (a TCP proxy on loopback between the sweep and
PostgreSQL or the `mlflow server`), a full disk and a read-only one (a small tmpfs), a server down
at start. kill -9 is in test_scale.py.

What must hold: the sweep rides out short outages (exit 0, no traceback, exactly N finished
trials, nothing left RUNNING in Optuna or MLflow, every trial in MLflow); a fault it cannot ride
out ends in one line on stderr and loses nothing already finished.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from faults import TcpProxy, can_mount, fill, remount_read_only, small_tmpfs
from helpers import SWEEP, TINY_MODELS, clean_env, run_sweep_cli

TINY = ["--epochs", "2", "--patience", "2", "--threads", "1", "--log-models", "best", "--retrain-top", "0"]  # no re-training: its own tests


# -- the tools themselves (fast) -------------------------------------------------------------
def _echo_server() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(1024):
                        c.sendall(data)
            threading.Thread(target=echo, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_proxy_forwards_cuts_every_connection_refuses_new_ones_and_restores():
    srv = _echo_server()
    with TcpProxy("127.0.0.1", srv.getsockname()[1]) as proxy:
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        conn.sendall(b"ping")
        assert conn.recv(16) == b"ping"
        proxy.cut()
        assert conn.recv(16) == b"", "an open connection is closed by the cut"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.restore()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        again.sendall(b"pong")
        assert again.recv(16) == b"pong"
        again.close()
    srv.close()


def test_lost_connections_are_retried_but_a_full_or_read_only_disk_is_not():
    import psycopg
    from optuna.exceptions import StorageInternalError
    from sqlalchemy import exc as sa_exc

    from sweep.storage_retry import is_transient

    def wrapped(orig: Exception) -> Exception:
        try:
            try:
                raise sa_exc.OperationalError("UPDATE trials ...", {}, orig)
            except sa_exc.OperationalError as e:
                raise StorageInternalError("An exception is raised during the commit.") from e
        except StorageInternalError as outer:
            return outer

    assert is_transient(wrapped(psycopg.OperationalError("connection failed: Connection refused")))
    assert is_transient(wrapped(psycopg.OperationalError("server closed the connection unexpectedly")))
    assert is_transient(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_transient(wrapped(sqlite3.OperationalError("database or disk is full")))
    assert not is_transient(wrapped(sqlite3.OperationalError("attempt to write a readonly database")))
    assert not is_transient(wrapped(psycopg.OperationalError('could not extend file "base/1/2": No space left on device')))
    assert not is_transient(ValueError("connection refused"))  # not a database error


def test_faults_are_named_in_one_line_with_the_fix():
    from sweep.faults import describe_fault

    def cause(outer: Exception, inner: BaseException) -> Exception:
        outer.__cause__ = inner
        return outer

    disk = describe_fault(cause(RuntimeError("commit failed"), OSError(errno.ENOSPC, "No space left on device", "/d/x")))
    assert disk.startswith("disk full (/d/x)") and "resume" in disk
    assert describe_fault(sqlite3.OperationalError("attempt to write a readonly database")).startswith("read-only")
    assert describe_fault(MemoryError()).startswith("out of memory")
    assert describe_fault(RuntimeError("ResourceExhaustedError: OOM when allocating tensor")).startswith("out of memory")
    down = describe_fault(RuntimeError("connection to postgresql://u:s3cret@db:5432/x refused: connection refused"))
    assert "stopped answering" in down and "s3cret" not in down
    assert describe_fault(ValueError("something else")) is None
    for message in (disk, down):
        assert "\n" not in message


# -- PostgreSQL through the proxy: the storage retries ---------------------------------------
def _database(pg_url: str) -> tuple[str, callable]:
    """A second database on the same server (MLflow's own); returns its URL and a dropper."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(pg_url)
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"sweep_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return base.set(database=name).render_as_string(hide_password=False), drop


def _via(url: str, proxy: TcpProxy) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_storage_calls_ride_out_a_cut_link_and_give_up_when_told_to(pg_url, monkeypatch):
    import optuna
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.engine import make_url

    from sweep.storage import open_storage

    target = make_url(pg_url)
    with TcpProxy(target.host, target.port or 5432) as proxy:
        storage = open_storage(_via(pg_url, proxy))
        study = optuna.create_study(study_name="cut", storage=storage, direction="maximize")
        trial = study.ask()
        trial.report(0.1, 0)
        proxy.cut()
        threading.Timer(3, proxy.restore).start()
        t0 = time.monotonic()
        trial.report(0.2, 1)  # the link is down for 3 s: retried
        study.tell(trial, 0.5)
        assert time.monotonic() - t0 >= 2.5
        assert storage.outages >= 1
        [done] = optuna.load_study(study_name="cut", storage=pg_url).get_trials()
        assert done.state.name == "COMPLETE" and done.intermediate_values == {0: 0.1, 1: 0.2}

        # Without retries (the old behaviour) the same cut fails the call.
        monkeypatch.setenv("SWEEP_STORAGE_RETRY_SECONDS", "0")
        plain = open_storage(_via(pg_url, proxy))
        other = optuna.load_study(study_name="cut", storage=plain).ask()
        proxy.cut()
        try:
            with pytest.raises(StorageInternalError):
                other.report(0.3, 0)
        finally:
            proxy.restore()


# -- real sweeps with a link cut mid-sweep -----------------------------------------------------
def _optuna_trials(storage: str, name: str) -> list:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except Exception:  # noqa: BLE001 - the study or its tables may not exist yet
        return []


def _sweep_with_cut(tmp_path: Path, data: Path, *, name: str, n: int, storage: str, tracking: str, watch: str,
                    proxy: TcpProxy, when: str, seconds: float, timeout: float = 400) -> tuple[subprocess.CompletedProcess, float]:
    """Run `sweep run`; when ``when`` holds ("finished": a trial finished; "mid-trial": a running
    trial reported an epoch), cut the proxy for ``seconds``. ``watch``: the storage URL to poll
    (not through the proxy). Returns the finished process and when the cut began.

    After a finished trial the smallest models will do (the next trial still takes seconds); a cut
    mid-trial needs the default space's longer epochs to land inside one."""
    models = TINY_MODELS if when == "finished" else []
    cmd = [SWEEP, "run", str(data), "--study", name, "--n-trials", str(n), *TINY, *models, "--storage", storage,
           "--tracking-uri", tracking]
    env = clean_env(SWEEP_HEARTBEAT_INTERVAL="2", SWEEP_GRACE_PERIOD="60", SWEEP_MLFLOW_CATCHUP_SECONDS="60")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[str, str] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(timeout=timeout))))
    reader.start()
    cut_at = 0.0
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        trials = _optuna_trials(watch, name)
        if when == "finished":
            hit = any(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        else:
            hit = any(t.state.name == "RUNNING" and t.intermediate_values for t in trials)
        if hit:
            proxy.cut()
            cut_at = time.time()
            time.sleep(seconds)
            proxy.restore()
            break
        time.sleep(0.2)
    reader.join(timeout=timeout)
    assert cut_at, f"the sweep ended before the fault could be injected: {out.get('stderr', '')[-2000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out.get("stdout", ""), out.get("stderr", "")), cut_at


def _assert_nothing_lost(result: subprocess.CompletedProcess, *, storage: str, tracking: str, name: str, n: int) -> None:
    """Exit 0, no traceback; exactly n finished trials, nothing RUNNING in Optuna or MLflow; every
    finished trial in MLflow as an ended run with its results, once."""
    from mlflow.tracking import MlflowClient

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    trials = _optuna_trials(storage, name)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    by_number: dict[int, list] = {}
    for r in runs:
        if r.data.tags.get("sweep.role") == "trial":
            by_number.setdefault(int(r.data.tags["sweep.trial_number"]), []).append(r)
    assert all(len(v) == 1 for v in by_number.values()), "one MLflow run per trial"
    for t in finished:
        [run] = by_number.get(t.number, [None])
        assert run is not None, f"trial {t.number} is not in MLflow"
        assert run.data.tags["sweep.trial_state"] == t.state.name
        assert "result/val_balanced_accuracy" in run.data.metrics


@pytest.mark.slow
@pytest.mark.postgres
def test_tracking_store_on_postgresql_cut_after_a_trial_loses_nothing(tmp_path, tiny_signal, pg_url):
    """MLflow's store is a PostgreSQL database (no tracking server): its link is cut for 8 s
    right after the first trial finished. Before: trials failed and the sweep stopped."""
    from sqlalchemy.engine import make_url

    mlflow_db, drop = _database(pg_url)
    target = make_url(pg_url)
    try:
        with TcpProxy(target.host, target.port or 5432) as proxy:
            result, _ = _sweep_with_cut(tmp_path, tiny_signal, name="mlcut", n=2, storage=pg_url,
                                        tracking=_via(mlflow_db, proxy), watch=pg_url, proxy=proxy,
                                        when="finished", seconds=8)
        _assert_nothing_lost(result, storage=pg_url, tracking=mlflow_db, name="mlcut", n=2)
    finally:
        drop()


@pytest.mark.slow
@pytest.mark.postgres
def test_optuna_storage_on_postgresql_cut_mid_trial_loses_nothing(tmp_path, tiny_signal, pg_url):
    """The Optuna storage's link is cut for 8 s while a trial trains: its epoch reports wait and
    retry; the trial completes, exactly N, nothing left RUNNING."""
    from sqlalchemy.engine import make_url

    target = make_url(pg_url)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    with TcpProxy(target.host, target.port or 5432) as proxy:
        result, _ = _sweep_with_cut(tmp_path, tiny_signal, name="optcut", n=2, storage=_via(pg_url, proxy),
                                    tracking=tracking, watch=pg_url, proxy=proxy, when="mid-trial", seconds=8)
    _assert_nothing_lost(result, storage=pg_url, tracking=tracking, name="optcut", n=2)
    assert "storage is back" in result.stderr
    assert not [t for t in _optuna_trials(pg_url, "optcut") if t.state.name == "FAIL"], "no trial was lost to the cut"


@pytest.mark.slow
def test_mlflow_server_cut_mid_trial_loses_nothing(tmp_path, tiny_signal, mlflow_server):
    """The `mlflow server`'s link is cut for 8 s while a trial trains."""
    storage = f"sqlite:///{tmp_path}/sweep.db"
    port = int(mlflow_server.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        result, _ = _sweep_with_cut(tmp_path, tiny_signal, name="srvcut", n=2, storage=storage,
                                    tracking=f"http://127.0.0.1:{proxy.port}", watch=storage, proxy=proxy,
                                    when="mid-trial", seconds=8)
    _assert_nothing_lost(result, storage=storage, tracking=mlflow_server, name="srvcut", n=2)


# -- a full disk, a read-only disk --------------------------------------------------------------
def _needs_mount() -> None:
    reason = can_mount()
    if reason is not None:
        pytest.skip(reason)


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_a_full_disk_at_start_is_one_line_and_writes_nothing_elsewhere(tmp_path, tiny_signal):
    _needs_mount()
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk)
        result = run_sweep_cli("run", str(tiny_signal), "--storage", f"sqlite:///{disk}/sweep.db", *TINY,
                               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    line = _one_line_error(result)
    assert "disk full" in line, line
    assert not (tmp_path / "mlflow.db").exists()


def test_a_read_only_storage_is_one_line_and_its_study_is_untouched(tmp_path, tiny_signal):
    _needs_mount()
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        storage = f"sqlite:///{disk}/sweep.db"
        created = run_sweep_cli("run", str(tiny_signal), "--study", "ro", "--n-trials", "2", *TINY, "--storage", storage,
                                "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--create-only", cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        before = (disk / "sweep.db").read_bytes()
        remount_read_only(disk)
        result = run_sweep_cli("run", str(tiny_signal), "--study", "ro", "--n-trials", "2", *TINY, "--storage", storage,
                               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
        line = _one_line_error(result)
        assert "read-only" in line, line
        assert (disk / "sweep.db").read_bytes() == before


@pytest.mark.slow
def test_a_disk_that_fills_mid_sweep_is_one_line_keeps_the_finished_trials_and_resumes(tmp_path, tiny_signal):
    """The Optuna storage's disk fills after the first trial finished: one line, exit 2; the
    finished trial is intact; with space freed the same command finishes exactly N."""
    _needs_mount()
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        storage = f"sqlite:///{disk}/sweep.db"
        args = ["run", str(tiny_signal), "--study", "full", "--n-trials", "3", *TINY, *TINY_MODELS, "--storage", storage,
                "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
        proc = subprocess.Popen([SWEEP, *args], cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if any(t.state.name == "COMPLETE" for t in _optuna_trials(storage, "full")):
                fill(disk)
                break
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=300)
        result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
        line = _one_line_error(result)
        assert "disk full" in line, line
        (disk / "ballast").unlink()
        kept = [t for t in _optuna_trials(storage, "full") if t.state.name == "COMPLETE"]
        assert kept and all("result" in t.user_attrs for t in kept)
        again = run_sweep_cli(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        trials = _optuna_trials(storage, "full")
        assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 3
        assert not [t for t in trials if t.state.name == "RUNNING"]


# -- servers down at start ------------------------------------------------------------------
@pytest.mark.postgres
def test_storage_server_down_at_start_is_one_line_fast(tmp_path, tiny_signal, pg_url):
    from sqlalchemy.engine import make_url

    target = make_url(pg_url)
    with TcpProxy(target.host, target.port or 5432) as proxy:
        proxy.cut()
        t0 = time.monotonic()
        result = run_sweep_cli("run", str(tiny_signal), "--storage", _via(pg_url, proxy), *TINY,
                               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
        elapsed = time.monotonic() - t0
    line = _one_line_error(result)
    # Not the 60 s a lost connection is retried for: a server down at start is not waited for.
    # (test_scale.py times this path closely; this machine's imports alone took 26 s at load 20.)
    assert "cannot open storage" in line and elapsed < 55, (line, elapsed)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_mlflow_down_until_the_end_exits_0_and_sweep_sync_logs_the_rest(tmp_path, tiny_signal, mlflow_server):
    """MLflow stays away from the first finished trial to the sweep's end: the sweep still exits 0
    (the results are in Optuna) and says how to catch up; `sweep sync` then logs every trial from
    the study and ends the study's run."""
    storage = f"sqlite:///{tmp_path}/sweep.db"
    port = int(mlflow_server.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        tracking = f"http://127.0.0.1:{proxy.port}"
        cmd = [SWEEP, "run", str(tiny_signal), "--study", "away", "--n-trials", "2", *TINY, *TINY_MODELS, "--storage", storage,
               "--tracking-uri", tracking]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(SWEEP_MLFLOW_CATCHUP_SECONDS="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out: dict[str, str] = {}
        reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(timeout=400))))
        reader.start()
        while proc.poll() is None and not any(t.state.name == "COMPLETE" for t in _optuna_trials(storage, "away")):
            time.sleep(0.2)
        proxy.cut()
        reader.join(timeout=400)
        assert proc.returncode == 0, out.get("stderr", "")[-3000:]
        assert "Traceback" not in out["stderr"]
        assert "sweep sync away" in out["stderr"]
        proxy.restore()
        synced = run_sweep_cli("sync", "away", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert "ended the study's run" in synced.stdout
    result = subprocess.CompletedProcess(cmd, 0, out["stdout"], out["stderr"])
    _assert_nothing_lost(result, storage=storage, tracking=mlflow_server, name="away", n=2)
    again = run_sweep_cli("sync", "away", "--storage", storage, "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to log" in again.stdout
