"""Many workers on one study, through the real CLI: exact N, kill -9, first start, storage errors.

Real parts only: SQLite files, the local PostgreSQL server (a fresh database per test, from
SWEEP_TEST_POSTGRES_URL), a real `mlflow server` process, real `sweep worker` processes. Heartbeats
are shortened through the environment so a killed worker's trial is reaped in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from helpers import SWEEP, TINY_MODELS, clean_env, run_sweep_cli

pytestmark = pytest.mark.slow

TINY = ["--epochs", "3", "--patience", "3", "--retrain-top", "0"]  # no re-training: its own tests
QUICK = [*TINY, *TINY_MODELS]  # the smallest models, where no trial is timed or killed mid-way
FAST_HEARTBEAT = {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_GRACE_PERIOD": "4"}


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _by_state(study: optuna.Study) -> dict[str, list[optuna.trial.FrozenTrial]]:
    out: dict[str, list] = {s.name: [] for s in TrialState}
    for t in study.get_trials():
        out[t.state.name].append(t)
    return out


def _runs(tracking_uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _assert_exact_and_closed(storage: str, tracking_uri: str, name: str, n: int) -> optuna.Study:
    """Exactly n finished trials, nothing RUNNING or WAITING, every MLflow run ended."""
    study = _study(storage, name)
    states = _by_state(study)
    finished = states["COMPLETE"] + states["PRUNED"]
    assert len(finished) == n, {k: [t.number for t in v] for k, v in states.items() if v}
    assert not states["RUNNING"] and not states["WAITING"]
    runs = _runs(tracking_uri, name)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    trial_runs = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    numbers = [int(r.data.tags["sweep.trial_number"]) for r in trial_runs]
    assert len(numbers) == len(set(numbers)), "one MLflow run per trial"
    assert {t.number for t in finished} <= set(numbers)
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "parent")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags.get("mlflow.parentRunId") for r in trial_runs} == {parent.info.run_id}
    return study


def _start_worker(name: str, storage: str, tracking_uri: str, cwd: Path, log: Path) -> subprocess.Popen:
    env = clean_env(SWEEP_STORAGE=storage, **FAST_HEARTBEAT)
    return subprocess.Popen([SWEEP, "worker", name, "--tracking-uri", tracking_uri, "--threads", "1", "--quiet"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the study or its tables may not exist yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _kill9_scenario(tmp_path: Path, data: Path, storage: str, tracking_uri: str) -> None:
    """Two workers; kill -9 one mid-trial; the other reaps it, retries its params, finishes exactly N."""
    n = 4
    created = run_sweep_cli("run", str(data), "--study", "k9", "--n-trials", str(n), *TINY, "--storage", storage,
                            "--tracking-uri", tracking_uri, "--create-only", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    a = _start_worker("k9", storage, tracking_uri, tmp_path, tmp_path / "a.log")
    b = _start_worker("k9", storage, tracking_uri, tmp_path, tmp_path / "b.log")
    try:
        # Kill A while it is inside a trial: each trial names its worker (host:pid).
        a_worker = f"{socket.gethostname()}:{a.pid}"
        def a_in_trial() -> bool:
            running = _by_state(_study(storage, "k9"))["RUNNING"]
            return any(t.user_attrs.get("worker") == a_worker for t in running) and a.poll() is None
        _wait_for(a_in_trial, 180, "worker A inside a trial")
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    study = _assert_exact_and_closed(storage, tracking_uri, "k9", n)
    failed = _by_state(study)["FAIL"]
    # Killed trials were reaped (failed) and each retried with its exact parameters.
    killed = [t for t in failed if "fail_reason" not in t.user_attrs]
    assert killed, [t.user_attrs for t in failed]
    retries = {t.system_attrs["failed_trial"]: t for t in study.get_trials() if "failed_trial" in t.system_attrs}
    assert {t.user_attrs["worker"] for t in killed} == {a_worker}
    for t in killed:
        retry = retries[t.number]
        assert retry.params == t.params
        assert retry.user_attrs["worker"] == f"{socket.gethostname()}:{b.pid}"  # B ran it again
    runs = {r.data.tags.get("sweep.trial_number"): r for r in _runs(tracking_uri, "k9")}
    for t in killed:
        if str(t.number) in runs:
            assert runs[str(t.number)].info.status == "FAILED"


def test_two_local_workers_on_sqlite_finish_exactly_n(tmp_path, tiny_signal):
    storage, tracking = f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db"
    result = run_sweep_cli("run", str(tiny_signal), "--study", "two", "--n-trials", "5", *QUICK, "--workers", "2",
                           "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 workers" in result.stdout and "5/5 trials finished" in result.stdout
    assert "database is locked" not in result.stderr
    study = _assert_exact_and_closed(storage, tracking, "two", 5)
    params = [tuple(sorted(t.params.items())) for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(params) == len(set(params)), "two workers proposed the same trial"


def test_kill9_worker_on_sqlite_loses_nothing(tmp_path, tiny_signal):
    _kill9_scenario(tmp_path, tiny_signal, f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db")


@pytest.mark.postgres
def test_kill9_worker_on_postgresql_loses_nothing(tmp_path, tiny_signal, pg_url):
    _kill9_scenario(tmp_path, tiny_signal, pg_url, f"sqlite:///{tmp_path}/mlflow.db")


@pytest.mark.postgres
def test_postgresql_mlflow_server_and_two_workers(tmp_path, tiny_signal, pg_url, mlflow_server):
    """The docker-compose topology with local processes: PostgreSQL + mlflow server + 2 workers."""
    n = 4
    created = run_sweep_cli("run", str(tiny_signal), "--study", "topo", "--n-trials", str(n), *QUICK, "--storage",
                            pg_url, "--tracking-uri", mlflow_server, "--create-only", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "sweep worker topo" in created.stdout
    parent = next(r for r in _runs(mlflow_server, "topo") if r.data.tags.get("sweep.role") == "parent")
    assert parent.info.status == "SCHEDULED"
    workers = [_start_worker("topo", pg_url, mlflow_server, tmp_path, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for i, w in enumerate(workers):
            assert w.wait(timeout=300) == 0, (tmp_path / f"w{i}.log").read_text()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    study = _assert_exact_and_closed(pg_url, mlflow_server, "topo", n)
    per_worker = [t.number for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(per_worker) >= 2
    # The best model went through the server's artifact proxy and loads back from it.
    best = json.loads(run_sweep_cli("best", "topo", "--json", "--storage", pg_url, cwd=tmp_path).stdout)
    assert best["model_uri"] and best["tracking_uri"] == mlflow_server
    assert list((tmp_path / "server-artifacts").rglob("*.keras")), "artifacts are stored by the server"
    assert not (tmp_path / "mlruns").exists(), "nothing was written next to the workers"
    # The server's registry holds the champion: the best trial's model, and predict uses it.
    champion = MlflowClient(mlflow_server).get_model_version_by_alias("topo", "champion")
    assert champion.tags["sweep.trial_number"] == str(best["number"])
    pred = run_sweep_cli("predict", "topo", str(tiny_signal), "--out", str(tmp_path / "p.csv"), "--storage", pg_url,
                         cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    assert f"balanced accuracy {best['test_balanced_accuracy']:.4f}" in pred.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_first_start_on_a_fresh_database(tmp_path, tiny_signal, backend, request):
    """Three `sweep run --create-only` at once on a brand-new database: one study, no crash."""
    if backend == "postgresql":
        storage = request.getfixturevalue("pg_url")
    else:
        storage = f"sqlite:///{tmp_path}/fresh.db"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [SWEEP, "run", str(tiny_signal), "--study", "race", "--n-trials", "3", *QUICK, "--storage", storage,
           "--tracking-uri", tracking, "--create-only"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["race"]
    assert summaries[0].user_attrs["n_trials"] == 3 and "data_fingerprint" in summaries[0].user_attrs
    parents = [r for r in _runs(tracking, "race") if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1


def test_worker_refuses_data_with_another_fingerprint(tmp_path, tiny_signal):
    from sweep.synthetic import make_dataset, write_dataset

    storage = f"sqlite:///{tmp_path}/sweep.db"
    created = run_sweep_cli("run", str(tiny_signal), "--study", "fp", "--n-trials", "2", *QUICK, "--storage", storage,
                            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--create-only", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    other = write_dataset(make_dataset("seed-signal", n_train=80, n_test=40, seed=2), tmp_path / "other.npz")
    result = run_sweep_cli("worker", "fp", "--storage", storage, "--data", str(other), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "is not the data study 'fp' was created on" in result.stderr
    tiny_signal.rename(tmp_path / "moved.npz")
    result = run_sweep_cli("worker", "fp", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 2 and "pass --data PATH" in result.stderr
    assert _by_state(_study(storage, "fp"))["RUNNING"] == []


@pytest.mark.parametrize("command", ["run", "worker", "status"])
def test_unreachable_storage_fails_fast_with_the_password_masked(tmp_path, tiny_signal, command):
    url = "postgresql+psycopg://sweeper:s3cr3t-pw@127.0.0.1:1/nowhere"
    args = {"run": ["run", str(tiny_signal)], "worker": ["worker", "some-study"], "status": ["status", "x"]}[command]
    t0 = time.monotonic()
    result = run_sweep_cli(*args, cwd=tmp_path, env=clean_env(SWEEP_STORAGE=url))
    elapsed = time.monotonic() - t0
    assert result.returncode == 2, result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "sweeper:***@127.0.0.1:1/nowhere" in result.stderr
    assert result.stderr.count("\n") == 1
    assert elapsed < 8, f"took {elapsed:.1f}s"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_mlflow_behind_basic_auth_as_compose_runs_it(tmp_path, tiny_signal):
    """docker-compose.yml's MLflow service with local processes: its own `mlflow server` command
    line and environment (basic-auth app, credentials only in the environment), a sweep that logs
    through it with MLFLOW_TRACKING_USERNAME/PASSWORD, and requests without them refused."""
    import base64
    import configparser
    import sys
    import urllib.error
    import urllib.request

    import test_compose as compose
    from _servers import stop_session
    from conftest import free_port
    from deploy_checks import option

    port = free_port()
    args = compose.argv("mlflow")
    args[args.index(option(args, "--host"))] = "127.0.0.1"
    args[args.index(option(args, "--port"))] = str(port)
    args[args.index(option(args, "--artifacts-destination"))] = str(tmp_path / "server-artifacts")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(compose.ROOT / "docker" / "mlflow-auth.ini")
    ini["mlflow"]["database_uri"] = f"sqlite:///{tmp_path}/basic_auth.db"
    with (tmp_path / "basic_auth.ini").open("w") as fh:
        ini.write(fh)
    server_env = compose.env("mlflow") | {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/server-mlflow.db",
                                          "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini")}
    server_env.pop("PGPASSWORD")
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", *args, "--workers", "1"], cwd=tmp_path,
                              env=clean_env(**server_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    secrets = set(compose.SECRETS.values())

    def get(path: str, user: str | None = None, password: str | None = None) -> int:
        request = urllib.request.Request(url + path)
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        _wait_for(lambda: get("/health") == 200, 120, "the mlflow server with basic auth")
        # No secret on the command line of the server or any of its processes (`ps`).
        session = []  # the server and its uvicorn workers: the processes of its session
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == server.pid:
                    session.append(stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, IndexError, ValueError):  # a process that ended meanwhile
                continue
        assert len(session) >= 2 and any("basic-auth" in cmdline for cmdline in session), session
        for cmdline in session:
            assert not any(s in cmdline for s in secrets), cmdline
        # Refused without credentials or with a wrong password; the workers' credentials work.
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        worker = compose.env("sweep")
        user, password = worker["MLFLOW_TRACKING_USERNAME"], worker["MLFLOW_TRACKING_PASSWORD"]
        assert get(search) == 401
        assert get(search, user, password + "x") == 401
        assert get(search, user, password) == 200

        env = clean_env(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        result = run_sweep_cli("run", str(tiny_signal), "--study", "auth", "--n-trials", "1", *QUICK, "--storage",
                               f"sqlite:///{tmp_path}/sweep.db", "--tracking-uri", url, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert not any(s in result.stdout + result.stderr for s in secrets)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
        try:
            _assert_exact_and_closed(f"sqlite:///{tmp_path}/sweep.db", url, "auth", 1)
            assert MlflowClient(url).get_model_version_by_alias("auth", "champion")
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    finally:
        stop_session(server)
        log.close()
